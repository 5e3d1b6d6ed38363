//! Delay passed along wakeups: a thread asleep waiting for another is as late as its waker, and
//! the waker may have been late because it sat in a run queue behind a neighbour. A downstream
//! server on a busy CPU, the request's packet deferred to `ksoftirqd` behind CPU hogs, a lock
//! holder preempted before it releases the lock: the sleeper's time is contention, through
//! another thread.
//!
//! Every task carries the run-queue delay it met since it was last woken
//! ([`TaskSched::carried`]): its waker's, passed on at the wakeup, plus its own long waits since.
//! Each CPU keeps a copy of what the task running on it carries ([`CpuSlices::running_delay`]),
//! so that a wakeup finds the waker's delay in a per-CPU slot the switch already wrote. A woken
//! task inherits it a hop further, up to [`MAX_HOPS`]; a watched thread's time asleep that
//! overlaps its waker's delay is charged to the neighbour behind it. Every step is O(1): no walk
//! of the chain, one delay carried per task.
//!
//! A long wait of a task in a CFS-throttled cgroup is throttled, not contended: the delay keeps
//! that part apart ([`Delay::throttled_ns`]) and the sleeper's share of it is throttling through
//! another thread. Whether the wait was throttled is read from the cumulative throttled clock
//! of the task's cfs_rq, only at long waits ([`throttled_wait_ns`]): no read on the hot path.
//!
//! The waker is the task running when the wakeup happens. A softirq that wakes a thread on a
//! packet's arrival runs on top of whatever task it interrupted, which is then taken for the
//! waker: its delay is passed on only if it carries one that is recent.
//!
//! [`TaskSched::carried`]: crate::thread::TaskSched
//! [`CpuSlices::running_delay`]: crate::thread::CpuSlices

use super::throttle::throttled_of_wait;
use crate::thread::{Delay, RunningDelay};

/// A run-queue wait shorter than this is nobody's news: the scheduler's own latency.
pub const MIN_WAIT_NS: u64 = 250_000;
/// A delay that ended longer ago than this when it is passed on caused nothing the waker does
/// now.
pub const MAX_AGE_NS: u64 = 100_000_000;
/// Wakeups a delay is passed through: the delayed task's wakee, the wakee's wakee, and one
/// more (loopback's softirq work handed to `ksoftirqd` is a hop of its own).
pub const MAX_HOPS: u32 = 3;

/// How long before a sleep began a delay of its waker can still have postponed its wakeup:
/// the work the waker does between being delayed and the wakeup (a lock held a few ms).
pub const LOOK_BACK_NS: u64 = 10_000_000;

/// How much of `delay` postponed the release of a lock at `wake_ns` that a thread waited for
/// since `sleep_start_ns`: the waiting within the sleep or up to [`LOOK_BACK_NS`] before it,
/// at most the sleep. A delay the releaser met before the sleeper began to wait still pushed
/// back the work it then waited for: a request that asks for a lock while its preempted holder
/// keeps it would have found it free had the holder run on. The sleeper's wait less the
/// holder's delay is what it would have waited anyway, and the part after it began is not all
/// of that delay. Only for a lock: its releaser is a task that did the work (a `futex` wake),
/// where another wakeup may come from a softirq on top of a task that did nothing for it.
#[inline(always)]
pub fn postponed_ns(delay: &Delay, sleep_start_ns: u64, wake_ns: u64) -> u64 {
    let sleep_ns = wake_ns.saturating_sub(sleep_start_ns);
    let ns = delay.overlap_ns(sleep_start_ns.saturating_sub(LOOK_BACK_NS), wake_ns);
    if ns < sleep_ns { ns } else { sleep_ns }
}

/// When a run-queue wait of `wait_ns` (`None`: not known to have waited) ending at `now_ns`
/// began, if it is long enough to be a delay: only then is its neighbour looked up.
#[inline(always)]
pub fn long_wait_start_ns(wait_ns: Option<u64>, now_ns: u64) -> Option<u64> {
    match wait_ns {
        Some(wait_ns) if wait_ns >= MIN_WAIT_NS => Some(now_ns.saturating_sub(wait_ns)),
        _ => None,
    }
}

/// A task's own long run-queue wait, as its switch-in found it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LongWait {
    pub start_ns: u64,
    /// The process that held the CPU longest meanwhile; 0: the CPU idled.
    pub neighbour_tgid: u32,
    /// The part of the wait its cgroup was throttled.
    pub throttled_ns: u64,
}

/// The throttled part of a long wait of `wait_ns`, from the task's cfs_rq's cumulative throttled
/// clock now (`clock_ns`, 0 where the kernel keeps none) and as read at its previous long wait
/// (`seen_ns`, updated here). A wait during which the clock moved is throttled except for the
/// time the longest neighbour demonstrably held the CPU (`holder_ns`), as for a watched thread
/// ([`throttled_of_wait`]); the clock's movement since the last reading bounds it from
/// below. The first reading is only a baseline.
#[inline(always)]
pub fn throttled_wait_ns(seen_ns: &mut u64, clock_ns: u64, wait_ns: u64, holder_ns: u64) -> u64 {
    let before_ns = *seen_ns;
    *seen_ns = clock_ns;
    if clock_ns == 0 || before_ns == 0 || clock_ns <= before_ns {
        return 0;
    }
    throttled_of_wait(clock_ns - before_ns, wait_ns, holder_ns)
}

/// Adds the task's own wait `[start_ns, end_ns)` behind `neighbour_tgid` (`throttled_ns` of it
/// throttled) to what it carries.
#[inline(always)]
pub fn add_wait(
    carried: &mut Delay,
    start_ns: u64,
    end_ns: u64,
    neighbour_tgid: u32,
    throttled_ns: u64,
) {
    let wait_ns = end_ns.saturating_sub(start_ns);
    if carried.is_none() {
        *carried = Delay {
            start_ns,
            end_ns,
            delayed_ns: wait_ns,
            throttled_ns,
            neighbour_tgid,
            hops: 0,
        };
        return;
    }
    // The neighbour of the longer contended part names the whole: one name per delay.
    let contended_ns = wait_ns.saturating_sub(throttled_ns);
    if neighbour_tgid != 0
        && (carried.neighbour_tgid == 0
            || contended_ns > carried.delayed_ns.saturating_sub(carried.throttled_ns))
    {
        carried.neighbour_tgid = neighbour_tgid;
    }
    if start_ns < carried.start_ns {
        carried.start_ns = start_ns;
    }
    carried.end_ns = end_ns;
    carried.delayed_ns = carried.delayed_ns.saturating_add(wait_ns);
    carried.throttled_ns = carried.throttled_ns.saturating_add(throttled_ns);
    carried.hops = 0;
}

/// Task `next` (carrying `carried`) gets this CPU at `now_ns`, after a long wait or none. A
/// wait on an idle CPU delays nobody unless it was throttled. The CPU's running delay becomes
/// what `next` carries.
#[inline(always)]
pub fn switch_in(
    running: &mut RunningDelay,
    carried: &mut Delay,
    next: u64,
    long_wait: Option<LongWait>,
    now_ns: u64,
) {
    if let Some(w) = long_wait
        && (w.neighbour_tgid != 0 || w.throttled_ns != 0)
    {
        add_wait(
            carried,
            w.start_ns,
            now_ns,
            w.neighbour_tgid,
            w.throttled_ns,
        );
    }
    if !carried.is_none() {
        running.task = next;
        running.delay = *carried;
    } else if running.task == next {
        // What it carried before its last wakeup is not this run's.
        running.task = 0;
    }
}

/// What a task woken at `now_ns` by `current` (the task running on this CPU, or the one a
/// softirq interrupted) inherits: the running task's delay, a hop further, if it is its own,
/// recent and not too many hops away.
#[inline(always)]
pub fn passed_on(running: &RunningDelay, current: u64, now_ns: u64) -> Delay {
    if running.task == 0
        || running.task != current
        || running.delay.is_none()
        || running.delay.hops >= MAX_HOPS
        || now_ns.saturating_sub(running.delay.end_ns) > MAX_AGE_NS
    {
        return Delay::NONE;
    }
    Delay {
        hops: running.delay.hops + 1,
        ..running.delay
    }
}

/// A woken task carries what its waker passed on, and nothing from before: a wakeup by an
/// undelayed waker clears it. Written only when something changes.
#[inline(always)]
pub fn keep(carried: &mut Delay, passed: Delay) {
    if !passed.is_none() || !carried.is_none() {
        *carried = passed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const HOG: u32 = 77;

    fn contended(start_ns: u64, neighbour_tgid: u32) -> LongWait {
        LongWait {
            start_ns,
            neighbour_tgid,
            throttled_ns: 0,
        }
    }

    #[test]
    fn a_long_wait_behind_a_neighbour_is_carried_and_runs_with_the_task() {
        let (mut running, mut carried) = (RunningDelay::default(), Delay::NONE);
        let start = long_wait_start_ns(Some(8 * MS), 100 * MS);
        assert_eq!(start, Some(92 * MS));
        switch_in(
            &mut running,
            &mut carried,
            0xa,
            start.map(|s| contended(s, HOG)),
            100 * MS,
        );
        let want = Delay {
            start_ns: 92 * MS,
            end_ns: 100 * MS,
            delayed_ns: 8 * MS,
            throttled_ns: 0,
            neighbour_tgid: HOG,
            hops: 0,
        };
        assert_eq!((running.task, running.delay, carried), (0xa, want, want));
    }

    #[test]
    fn short_waits_and_waits_on_an_idle_cpu_delay_nobody() {
        let (mut running, mut carried) = (RunningDelay::default(), Delay::NONE);
        // No neighbour is looked up for a short wait.
        assert_eq!(long_wait_start_ns(Some(MIN_WAIT_NS - 1), MS), None);
        assert_eq!(long_wait_start_ns(None, MS), None);
        switch_in(&mut running, &mut carried, 0xa, None, MS);
        switch_in(
            &mut running,
            &mut carried,
            0xa,
            Some(contended(5 * MS, 0)),
            10 * MS,
        );
        assert_eq!((running.task, carried), (0, Delay::NONE));
    }

    #[test]
    fn the_waits_of_one_run_add_up_named_by_the_longest() {
        // A server computing a request is preempted twice behind hogs before it answers.
        let mut carried = Delay::NONE;
        add_wait(&mut carried, 10 * MS, 12 * MS, HOG, 0);
        add_wait(&mut carried, 13 * MS, 14 * MS, 88, 0);
        assert_eq!(
            carried,
            Delay {
                start_ns: 10 * MS,
                end_ns: 14 * MS,
                delayed_ns: 3 * MS,
                throttled_ns: 0,
                neighbour_tgid: HOG,
                hops: 0
            }
        );
        add_wait(&mut carried, 15 * MS, 19 * MS, 88, 0);
        assert_eq!((carried.delayed_ns, carried.neighbour_tgid), (7 * MS, 88));
        // A client asleep from 10 ms to 20 ms met the 7 ms of waiting; one asleep from 11 ms
        // shares 8 of the window's 9 ms and is charged 8/9 of the waiting (6 of the 7 ms really
        // fell after 11 ms: where inside the window is not kept); one from 18 ms, 1/9 of it.
        assert_eq!(carried.overlap_ns(10 * MS, 20 * MS), 7 * MS);
        assert_eq!(carried.overlap_ns(11 * MS, 20 * MS), 7 * MS / 1000 * 888);
        assert_eq!(carried.overlap_ns(18 * MS, 20 * MS), 7 * MS / 1000 * 111);
    }

    #[test]
    fn the_running_slot_follows_the_task_on_the_cpu() {
        let mut running = RunningDelay::default();
        let mut a = Delay::NONE;
        switch_in(
            &mut running,
            &mut a,
            0xa,
            Some(contended(8 * MS, HOG)),
            10 * MS,
        );
        // Another task without a delay runs: the slot stays a's, but a is not running, so it
        // passes nothing on.
        let mut b = Delay::NONE;
        switch_in(&mut running, &mut b, 0xb, None, 11 * MS);
        assert_eq!(running.task, 0xa);
        assert!(passed_on(&running, 0xb, 11 * MS).is_none());
        // a is woken by an undelayed waker and runs again: it carries nothing any more.
        keep(&mut a, Delay::NONE);
        switch_in(&mut running, &mut a, 0xa, None, 12 * MS);
        assert_eq!(running.task, 0);
    }

    #[test]
    fn the_delay_travels_through_wakeups_up_to_the_hop_limit() {
        // ksoftirqd waited 8 ms behind the hog, then handed the packet to the server.
        let mut cpu1 = RunningDelay::default();
        let mut ksoftirqd = Delay::NONE;
        switch_in(
            &mut cpu1,
            &mut ksoftirqd,
            0x50f7,
            Some(contended(12 * MS, HOG)),
            20 * MS,
        );
        let mut server = Delay::NONE;
        keep(&mut server, passed_on(&cpu1, 0x50f7, 20 * MS + 10_000));
        assert_eq!(server.hops, 1);
        assert_eq!((server.start_ns, server.end_ns), (12 * MS, 20 * MS));
        // The server runs on the other CPU without waiting, carrying what it inherited, and
        // wakes the client thread: two hops.
        let mut cpu0 = RunningDelay::default();
        switch_in(&mut cpu0, &mut server, 0x5e, None, 20 * MS + 20_000);
        let client = passed_on(&cpu0, 0x5e, 20 * MS + 50_000);
        assert_eq!((client.hops, client.neighbour_tgid), (2, HOG));
        // The client slept from 10 ms: 8 ms of it were the hog's doing.
        assert_eq!(client.overlap_ns(10 * MS, 20 * MS + 50_000), 8 * MS);
        // One more hop, and no further.
        let mut cpu = RunningDelay {
            task: 0xc,
            delay: client,
        };
        let third = passed_on(&cpu, 0xc, 21 * MS);
        assert_eq!(third.hops, MAX_HOPS);
        cpu.delay = third;
        assert!(passed_on(&cpu, 0xc, 21 * MS).is_none());
    }

    #[test]
    fn only_the_running_task_passes_its_delay_on_and_only_while_recent() {
        let running = RunningDelay {
            task: 0xa,
            delay: Delay {
                start_ns: MS,
                end_ns: 2 * MS,
                delayed_ns: MS,
                throttled_ns: 0,
                neighbour_tgid: HOG,
                hops: 0,
            },
        };
        assert!(passed_on(&running, 0xb, 3 * MS).is_none());
        assert!(!passed_on(&running, 0xa, 2 * MS + MAX_AGE_NS).is_none());
        assert!(passed_on(&running, 0xa, 2 * MS + MAX_AGE_NS + 1).is_none());
        assert!(passed_on(&RunningDelay::default(), 0, 3 * MS).is_none());
    }

    #[test]
    fn a_wakeup_replaces_what_the_task_carried() {
        let old = Delay {
            start_ns: MS,
            end_ns: 2 * MS,
            delayed_ns: MS,
            throttled_ns: 0,
            neighbour_tgid: HOG,
            hops: 1,
        };
        let mut carried = old;
        keep(&mut carried, Delay::NONE);
        assert!(carried.is_none());
        let new = Delay {
            start_ns: 5 * MS,
            hops: 2,
            ..old
        };
        keep(&mut carried, new);
        assert_eq!(carried, new);
    }

    #[test]
    fn a_wait_is_throttled_when_the_cfs_rq_clock_moved_since_the_last_one() {
        let mut seen = 0;
        // The first reading is a baseline only; a kernel without the clock reads 0.
        assert_eq!(throttled_wait_ns(&mut seen, 40 * MS, 5 * MS, 0), 0);
        assert_eq!(seen, 40 * MS);
        assert_eq!(throttled_wait_ns(&mut 0, 0, 5 * MS, 0), 0);
        // The clock did not move: contention only.
        assert_eq!(throttled_wait_ns(&mut seen, 40 * MS, 5 * MS, MS), 0);
        // It moved 3 ms; a neighbour held the CPU 1 ms of the 5 ms wait: 4 ms throttled.
        assert_eq!(throttled_wait_ns(&mut seen, 43 * MS, 5 * MS, MS), 4 * MS);
        // It moved 9 ms (throttled also while the task slept): never more than the wait.
        assert_eq!(
            throttled_wait_ns(&mut seen, 52 * MS, 5 * MS, 5 * MS),
            5 * MS
        );
        // A clock read on another cfs_rq, lower: a new baseline.
        assert_eq!(throttled_wait_ns(&mut seen, 7 * MS, 5 * MS, 0), 0);
        assert_eq!(seen, 7 * MS);
    }

    #[test]
    fn a_throttled_wait_is_carried_even_on_an_idle_cpu_and_passed_on_in_proportion() {
        let (mut running, mut carried) = (RunningDelay::default(), Delay::NONE);
        let throttled = LongWait {
            start_ns: 2 * MS,
            neighbour_tgid: 0,
            throttled_ns: 6 * MS,
        };
        switch_in(&mut running, &mut carried, 0xa, Some(throttled), 8 * MS);
        assert_eq!((carried.delayed_ns, carried.throttled_ns), (6 * MS, 6 * MS));
        // Then 2 ms behind the hog: a quarter of the 8 ms is contention, named.
        add_wait(&mut carried, 9 * MS, 11 * MS, HOG, 0);
        assert_eq!((carried.delayed_ns, carried.throttled_ns), (8 * MS, 6 * MS));
        assert_eq!(carried.neighbour_tgid, HOG);
        let slept_ns = carried.overlap_ns(0, 20 * MS);
        assert_eq!(carried.throttled_part_ns(slept_ns), 6 * MS);
        assert_eq!(carried.throttled_part_ns(4 * MS), 3 * MS);
        assert_eq!(Delay::NONE.throttled_part_ns(4 * MS), 0);
    }

    #[test]
    fn overlap_is_the_waiting_within_the_shared_part_of_two_windows() {
        let d = Delay {
            start_ns: 10,
            end_ns: 20,
            delayed_ns: 10,
            throttled_ns: 0,
            neighbour_tgid: HOG,
            hops: 1,
        };
        assert_eq!(d.overlap_ns(0, 15), 5);
        assert_eq!(d.overlap_ns(12, 18), 6);
        assert_eq!(d.overlap_ns(20, 30), 0);
        assert_eq!(d.overlap_ns(0, 10), 0);
        assert_eq!(Delay { delayed_ns: 4, ..d }.overlap_ns(0, 100), 4);
        assert_eq!(Delay::NONE.overlap_ns(0, 100), 0);
        // Waits spread over a long window: a short sleep is charged its share, not the sum.
        // `ksoftirqd` waited 30 ms in all over a second; a 100 ms sleep in it met 3 ms.
        let spread = Delay {
            start_ns: 0,
            end_ns: 1000 * MS,
            delayed_ns: 30 * MS,
            ..d
        };
        assert_eq!(spread.overlap_ns(400 * MS, 500 * MS), 3 * MS);
        assert_eq!(spread.overlap_ns(0, 2000 * MS), 30 * MS);
    }
}
