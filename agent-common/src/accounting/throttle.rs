//! The part of a run-queue wait due to CFS bandwidth throttling; the rest is contention.

use crate::thread::ThreadState;

/// CFS bandwidth state of the cfs_rq a task is queued on, as read from the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Throttling {
    /// The cfs_rq's address: only compared, never dereferenced here.
    pub cfs_rq: u64,
    /// Non-zero while the cfs_rq or one of its ancestors is throttled.
    pub throttle_count: u32,
    /// Cumulative ns the cfs_rq spent throttled; 0 where the kernel does not keep it.
    pub throttled_self_ns: u64,
}

/// Remembers, as a wait begins, the throttling state the wait's end is compared against.
/// Without CONFIG_FAIR_GROUP_SCHED (`None`) the clock at enqueue is left as it was: with
/// `cfs_rq` 0 no later cfs_rq matches, so it is never read.
#[inline(always)]
pub fn note_enqueue(st: &mut ThreadState, at_enqueue: Option<Throttling>) {
    match at_enqueue {
        Some(t) => {
            st.cfs_rq = t.cfs_rq;
            st.throttled_self_ns_at_enqueue = t.throttled_self_ns;
            st.throttled_at_enqueue = t.throttle_count;
        }
        None => {
            st.cfs_rq = 0;
            st.throttled_at_enqueue = 0;
        }
    }
}

/// The throttled part of a wait of `wait_ns` that began with `st`'s enqueue state, of which a
/// neighbour demonstrably held the CPU `neighbour_ns`. `now` reads the task's throttling state
/// at the end of the wait; it is only called for a wait that did not begin throttled.
///
/// A wait that began throttled is throttled as a whole: the thread would not have waited at all
/// without the quota, and getting back on a CPU after the unthrottle is part of that cost. A
/// wait during which the cfs_rq was throttled (its throttled clock moved, >= 6.5) is throttled
/// except for the time a neighbour demonstrably held the CPU: the kernel's clock alone misses
/// time (with 6.18's task-based throttling it only runs once no task of the cfs_rq is left
/// runnable). A task that moved to another cfs_rq meanwhile has no comparable clock: not
/// throttled.
#[inline(always)]
pub fn throttled_part_ns(
    st: &ThreadState,
    wait_ns: u64,
    neighbour_ns: u64,
    now: impl FnOnce() -> Option<Throttling>,
) -> u64 {
    if st.throttled_at_enqueue != 0 {
        return wait_ns;
    }
    let Some(now) = now() else {
        return 0;
    };
    if now.cfs_rq != st.cfs_rq || now.throttled_self_ns == 0 {
        return 0;
    }
    let clock_ns = now
        .throttled_self_ns
        .saturating_sub(st.throttled_self_ns_at_enqueue);
    if clock_ns == 0 {
        return 0;
    }
    throttled_of_wait(clock_ns, wait_ns, neighbour_ns)
}

/// The throttled part of a wait of `wait_ns` during which the throttled clock moved `clock_ns`
/// (> 0) and a neighbour demonstrably held the CPU `neighbour_ns`: all but the neighbour's
/// time, at least the clock's movement, at most the wait.
#[inline(always)]
pub fn throttled_of_wait(clock_ns: u64, wait_ns: u64, neighbour_ns: u64) -> u64 {
    let not_neighbour_ns = wait_ns.saturating_sub(neighbour_ns);
    let throttled_ns = if clock_ns > not_neighbour_ns {
        clock_ns
    } else {
        not_neighbour_ns
    };
    if throttled_ns < wait_ns {
        throttled_ns
    } else {
        wait_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFS_RQ: u64 = 0xffff_8880_0000_1000;

    fn enqueued(at: Option<Throttling>) -> ThreadState {
        let mut st = ThreadState::default();
        note_enqueue(&mut st, at);
        st
    }

    fn clock(throttled_self_ns: u64) -> Option<Throttling> {
        Some(Throttling {
            cfs_rq: CFS_RQ,
            throttle_count: 0,
            throttled_self_ns,
        })
    }

    #[test]
    fn enqueue_remembers_the_cfs_rq_and_its_clock() {
        let st = enqueued(Some(Throttling {
            cfs_rq: CFS_RQ,
            throttle_count: 2,
            throttled_self_ns: 500,
        }));
        assert_eq!(
            (
                st.cfs_rq,
                st.throttled_self_ns_at_enqueue,
                st.throttled_at_enqueue
            ),
            (CFS_RQ, 500, 2)
        );
    }

    #[test]
    fn enqueue_without_group_scheduling_forgets_the_cfs_rq_only() {
        let mut st = enqueued(clock(500));
        st.throttled_at_enqueue = 1;
        note_enqueue(&mut st, None);
        assert_eq!(
            (
                st.cfs_rq,
                st.throttled_self_ns_at_enqueue,
                st.throttled_at_enqueue
            ),
            (0, 500, 0)
        );
        // The stale clock is never compared: no cfs_rq is at address 0.
        assert_eq!(throttled_part_ns(&st, 1_000, 0, || clock(10_000)), 0);
    }

    #[test]
    fn a_wait_that_began_throttled_is_throttled_whole_without_reading_the_kernel() {
        let st = enqueued(Some(Throttling {
            cfs_rq: CFS_RQ,
            throttle_count: 1,
            throttled_self_ns: 0,
        }));
        for (wait_ns, neighbour_ns) in [(0, 0), (1_000, 0), (1_000, 1_000), (1_000, 5_000)] {
            let ns = throttled_part_ns(&st, wait_ns, neighbour_ns, || unreachable!());
            assert_eq!(ns, wait_ns);
        }
    }

    #[test]
    fn without_group_scheduling_nothing_is_throttled() {
        let st = enqueued(None);
        assert_eq!(throttled_part_ns(&st, 1_000, 0, || None), 0);
    }

    #[test]
    fn a_clock_that_did_not_move_means_contention() {
        let st = enqueued(clock(700));
        assert_eq!(throttled_part_ns(&st, 1_000, 0, || clock(700)), 0);
        // A clock going backwards (a new cfs_rq at the same address) is no throttling either.
        assert_eq!(throttled_part_ns(&st, 1_000, 0, || clock(600)), 0);
    }

    #[test]
    fn a_kernel_without_the_clock_gives_no_throttling_after_enqueue() {
        // Before 6.5 `throttled_self_ns` reads as 0 throughout.
        let st = enqueued(clock(0));
        assert_eq!(throttled_part_ns(&st, 1_000, 0, || clock(0)), 0);
    }

    #[test]
    fn a_task_that_moved_cfs_rq_has_no_comparable_clock() {
        let st = enqueued(clock(100));
        let moved = Some(Throttling {
            cfs_rq: CFS_RQ + 0x200,
            throttle_count: 0,
            throttled_self_ns: 10_000,
        });
        assert_eq!(throttled_part_ns(&st, 1_000, 0, || moved), 0);
    }

    #[test]
    fn a_wait_throttled_after_it_began_is_throttled_but_for_the_neighbour() {
        // The throttle came 300 ns into the wait and the clock saw 200 ns of it; a neighbour
        // held the CPU 300 ns: the other 700 ns were the quota's.
        let st = enqueued(clock(5_000));
        assert_eq!(throttled_part_ns(&st, 1_000, 300, || clock(5_200)), 700);
        // The clock's own figure wins when it says more than the neighbour leaves.
        assert_eq!(throttled_part_ns(&st, 1_000, 900, || clock(5_400)), 400);
        // A clock from 0 at enqueue (first throttle ever) counts from 0.
        let st = enqueued(clock(0));
        assert_eq!(throttled_part_ns(&st, 1_000, 1_000, || clock(250)), 250);
    }

    #[test]
    fn the_throttled_part_never_exceeds_the_wait() {
        let st = enqueued(clock(1));
        // The clock moved more than the wait lasted (it also ran before the wait).
        assert_eq!(throttled_part_ns(&st, 1_000, 0, || clock(1 + 5_000)), 1_000);
        assert_eq!(
            throttled_part_ns(&st, 1_000, 999, || clock(1 + 1_000)),
            1_000
        );
        assert_eq!(throttled_part_ns(&st, 0, 0, || clock(u64::MAX)), 0);
        assert_eq!(
            throttled_part_ns(&st, u64::MAX, u64::MAX, || clock(u64::MAX)),
            u64::MAX - 1
        );
    }

    #[test]
    fn exhaustively_the_split_is_the_larger_of_clock_and_non_neighbour_time_capped_by_the_wait() {
        let at_ns = 1_000;
        let st = enqueued(clock(at_ns));
        for wait_ns in 0..=24u64 {
            for neighbour_ns in 0..=30u64 {
                for clock_ns in 0..=30u64 {
                    let got =
                        throttled_part_ns(&st, wait_ns, neighbour_ns, || clock(at_ns + clock_ns));
                    let want = if clock_ns == 0 {
                        0
                    } else {
                        clock_ns
                            .max(wait_ns.saturating_sub(neighbour_ns))
                            .min(wait_ns)
                    };
                    assert_eq!(
                        got, want,
                        "wait {wait_ns} neighbour {neighbour_ns} clock {clock_ns}"
                    );
                    assert!(got <= wait_ns);
                }
            }
        }
    }
}
