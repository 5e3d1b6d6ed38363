//! Node-wide run-queue delay of every task, kept in its [`TaskSched`]: from becoming runnable
//! (woken, or preempted while still runnable) to getting a CPU.

use crate::thread::TaskSched;

/// The cgroup id is re-read every 16th switch-out of a task.
const CGROUP_REFRESH_MASK: u32 = 15;

/// The task became runnable at `now_ns`.
#[inline(always)]
pub fn note_enqueue(ts: &mut TaskSched, now_ns: u64) {
    ts.enqueued_ns = now_ns;
}

/// The task leaves its CPU at `now_ns`, still runnable if `preempted`. Returns whether its
/// cached cgroup id is to be re-read (it is the current task: that is cheap now).
///
/// Tasks rarely change cgroups: re-reading the id every few switches bounds how long a moved
/// task is charged to its old cgroup, at a fraction of the cost.
#[inline(always)]
pub fn note_switch_out(ts: &mut TaskSched, preempted: bool, now_ns: u64) -> bool {
    ts.switches_out = ts.switches_out.wrapping_add(1);
    if preempted {
        ts.enqueued_ns = now_ns;
    }
    ts.cgroup_id == 0 || ts.switches_out & CGROUP_REFRESH_MASK == 0
}

/// The task gets a CPU at `now_ns`: the delay since it became runnable, if it is known to have,
/// and the task is no longer waiting. A clock that went backwards counts as a zero delay.
#[inline(always)]
pub fn take_delay_ns(ts: &mut TaskSched, now_ns: u64) -> Option<u64> {
    let enqueued_ns = ts.enqueued_ns;
    if enqueued_ns == 0 {
        return None;
    }
    ts.enqueued_ns = 0;
    Some(now_ns.saturating_sub(enqueued_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_taken_once() {
        let mut ts = TaskSched::default();
        note_enqueue(&mut ts, 1_000);
        assert_eq!(take_delay_ns(&mut ts, 1_250), Some(250));
        assert_eq!(take_delay_ns(&mut ts, 1_300), None);
    }

    #[test]
    fn a_task_never_seen_runnable_has_no_delay() {
        // Woken before the programs were attached, or a zero clock.
        let mut ts = TaskSched::default();
        assert_eq!(take_delay_ns(&mut ts, 5_000), None);
        note_enqueue(&mut ts, 0);
        assert_eq!(take_delay_ns(&mut ts, 5_000), None);
    }

    #[test]
    fn a_clock_going_backwards_is_a_zero_delay() {
        let mut ts = TaskSched::default();
        note_enqueue(&mut ts, 2_000);
        assert_eq!(take_delay_ns(&mut ts, 1_000), Some(0));
        assert_eq!(ts.enqueued_ns, 0);
    }

    #[test]
    fn a_preempted_task_waits_from_its_switch_out_a_blocking_one_not_at_all() {
        let mut ts = TaskSched {
            cgroup_id: 9,
            ..TaskSched::default()
        };
        note_switch_out(&mut ts, false, 1_000);
        assert_eq!(take_delay_ns(&mut ts, 2_000), None);
        note_switch_out(&mut ts, true, 3_000);
        assert_eq!(take_delay_ns(&mut ts, 3_400), Some(400));
        // Blocking leaves an enqueue time already set as it is.
        note_enqueue(&mut ts, 5_000);
        note_switch_out(&mut ts, false, 5_100);
        assert_eq!(take_delay_ns(&mut ts, 5_300), Some(300));
    }

    #[test]
    fn the_cgroup_is_read_when_unknown_then_every_16th_switch_out() {
        let mut ts = TaskSched::default();
        assert!(note_switch_out(&mut ts, false, 1));
        ts.cgroup_id = 42;
        let refreshed: [bool; 40] = core::array::from_fn(|_| note_switch_out(&mut ts, false, 1));
        for (k, &r) in refreshed.iter().enumerate() {
            // Switch-outs 2, 3, ...: the 16th and 32nd refresh.
            assert_eq!(r, (k + 2).is_multiple_of(16), "switch-out {}", k + 2);
        }
    }

    #[test]
    fn the_switch_out_count_wraps() {
        let mut ts = TaskSched {
            cgroup_id: 42,
            switches_out: u32::MAX,
            ..TaskSched::default()
        };
        assert!(note_switch_out(&mut ts, false, 1));
        assert_eq!(ts.switches_out, 0);
        assert!(!note_switch_out(&mut ts, false, 1));
    }
}
