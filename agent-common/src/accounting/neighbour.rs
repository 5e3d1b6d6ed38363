//! Who held a CPU while a thread waited for it: a ring of the last slices of CPU time on each
//! CPU ([`CpuSlices`]), and the neighbour a wait is charged to.

use crate::thread::{CPU_SLICE_SLOTS, CpuSlices, below_mask, overlap_ns};

const SLOT_MASK: u32 = CPU_SLICE_SLOTS as u32 - 1;
const _: () = assert!(CPU_SLICE_SLOTS.is_power_of_two());

/// Waits at least this long are charged to the process that held them longest; shorter ones to
/// `prev`'s.
pub const PAIRWISE_MIN_WAIT_NS: u64 = 100_000;

/// The neighbour charged for a wait: a thread of the process that held the CPU, and how long
/// that process's threads held it during the wait.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Neighbour {
    pub tgid: u32,
    pub tid: u32,
    pub ns: u64,
}

/// Closes the slice of the thread leaving the CPU at `now_ns` and starts the next one. The first
/// switch seen on a CPU only starts a slice (nobody knows when the one before began), and idle
/// time (tid 0) is nobody's slice.
#[inline(always)]
pub fn close_slice(s: &mut CpuSlices, prev_tid: u32, prev_tgid: u32, now_ns: u64) {
    if s.last_switch_ns != 0 && prev_tid != 0 {
        let i = (s.head & SLOT_MASK) as usize;
        s.tgid[i] = prev_tgid;
        s.tid[i] = prev_tid;
        s.start_ns[i] = s.last_switch_ns;
        s.end_ns[i] = now_ns;
        s.head = s.head.wrapping_add(1);
    }
    s.last_switch_ns = now_ns;
}

/// The neighbour a wait `[start_ns, end_ns)` on this CPU is charged to: the process whose
/// threads held the CPU longest during the wait, all its threads' time summed (`prev`'s process,
/// the one that held the CPU just before the waiter got it, on a tie). Not simply `prev`: a
/// thread that ran a moment and slept (the waiter's sibling worker finishing its request) is
/// often who hands the CPU over, while CPU hogs held most of the wait. Eight slots make the
/// pairwise pass 64 steps, all branch-free: a branch per step would multiply the verifier's
/// paths.
#[inline(always)]
pub fn neighbour_of_wait(
    s: &CpuSlices,
    prev_tgid: u32,
    prev_tid: u32,
    start_ns: u64,
    end_ns: u64,
) -> Neighbour {
    if prev_tid == 0 {
        // The CPU was idle just before: nobody took it from the waiter.
        return Neighbour::default();
    }
    // LLVM turns a shift by a constant 63 into a comparison, which BPF can only branch on: a
    // shift by an amount it cannot see keeps the masks below arithmetic.
    let top_bit = core::hint::black_box(63u32);
    let mut held_ns = [0u64; CPU_SLICE_SLOTS];
    for (i, held) in held_ns.iter_mut().enumerate() {
        *held = overlap_ns((s.start_ns[i], s.end_ns[i]), (start_ns, end_ns));
    }
    let process_ns = |tgid: u32| {
        let mut ns = 0u64;
        for (j, held) in held_ns.iter().enumerate() {
            ns = ns.wrapping_add(held & same_mask(s.tgid[j], tgid, top_bit));
        }
        ns
    };
    let mut best = Neighbour {
        tgid: prev_tgid,
        tid: prev_tid,
        ns: process_ns(prev_tgid),
    };
    // A short wait is `prev`'s: the pairwise pass costs the switch of a watched thread more
    // than the wait itself, and a wait that short held few slices (a storm's are microseconds).
    if end_ns.wrapping_sub(start_ns) < PAIRWISE_MIN_WAIT_NS {
        return best;
    }
    for i in 0..CPU_SLICE_SLOTS {
        let ns = process_ns(s.tgid[i]);
        // Only a strictly longer hold replaces: a tie stays with `prev`. An empty slot holds
        // nothing in any wait. Overlaps are far below 2^63, so the difference's sign decides.
        let longer = below_mask(best.ns, ns, top_bit);
        best.ns = (ns & longer) | (best.ns & !longer);
        best.tgid = ((u64::from(s.tgid[i]) & longer) | (u64::from(best.tgid) & !longer)) as u32;
        best.tid = ((u64::from(s.tid[i]) & longer) | (u64::from(best.tid) & !longer)) as u32;
    }
    best
}

/// All ones when `a == b`, else zero, without a branch (`top_bit` is 63).
#[inline(always)]
fn same_mask(a: u32, b: u32, top_bit: u32) -> u64 {
    // (a ^ b) is below 2^32: minus one wraps to the top bit only when it is zero.
    (u64::from(a ^ b).wrapping_sub(1) as i64 >> top_bit) as u64
}

/// The thread that held the CPU longest in one slice during `[start_ns, end_ns)`, with that
/// slice's overlap: who a waker's long wait is charged to. Unlike [`neighbour_of_wait`] it does
/// not start from the switch's `prev`, which for a waker is often a short-lived thread of its
/// own process let in just before it. `ns == 0`: nobody held the CPU in a recorded slice.
#[inline(always)]
pub fn longest_holder(s: &CpuSlices, start_ns: u64, end_ns: u64) -> Neighbour {
    let top_bit = core::hint::black_box(63u32);
    let mut best = Neighbour::default();
    for i in 0..CPU_SLICE_SLOTS {
        let ns = overlap_ns((s.start_ns[i], s.end_ns[i]), (start_ns, end_ns));
        // Branch-free as in `neighbour_of_wait`: only a strictly longer hold replaces.
        let longer = below_mask(best.ns, ns, top_bit);
        best.ns = (ns & longer) | (best.ns & !longer);
        best.tgid = ((u64::from(s.tgid[i]) & longer) | (u64::from(best.tgid) & !longer)) as u32;
        best.tid = ((u64::from(s.tid[i]) & longer) | (u64::from(best.tid) & !longer)) as u32;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> CpuSlices {
        CpuSlices {
            last_switch_ns: 0,
            head: 0,
            interrupt_depth: 0,
            tgid: [0; CPU_SLICE_SLOTS],
            tid: [0; CPU_SLICE_SLOTS],
            start_ns: [0; CPU_SLICE_SLOTS],
            end_ns: [0; CPU_SLICE_SLOTS],
            running_delay: Default::default(),
            running: Default::default(),
        }
    }

    /// A CPU that ran `(tid, tgid, until_ns)` one after the other from `first_switch_ns`.
    fn ran(first_switch_ns: u64, slices: &[(u32, u32, u64)]) -> CpuSlices {
        let mut s = empty();
        close_slice(&mut s, 1, 1, first_switch_ns);
        for &(tid, tgid, until_ns) in slices {
            close_slice(&mut s, tid, tgid, until_ns);
        }
        s
    }

    #[test]
    fn the_first_switch_on_a_cpu_only_starts_a_slice() {
        let mut s = empty();
        close_slice(&mut s, 7, 7, 100);
        assert_eq!((s.head, s.last_switch_ns), (0, 100));
        assert_eq!(s.tgid, [0; CPU_SLICE_SLOTS]);
    }

    #[test]
    fn a_slice_runs_from_the_previous_switch_to_this_one() {
        let s = ran(100, &[(7, 70, 250)]);
        assert_eq!(s.head, 1);
        assert_eq!(
            (s.tid[0], s.tgid[0], s.start_ns[0], s.end_ns[0]),
            (7, 70, 100, 250)
        );
        assert_eq!(s.last_switch_ns, 250);
    }

    #[test]
    fn idle_time_is_nobodys_slice_but_moves_the_clock() {
        let s = ran(100, &[(0, 0, 200), (7, 70, 300)]);
        assert_eq!(s.head, 1);
        assert_eq!((s.tid[0], s.start_ns[0], s.end_ns[0]), (7, 200, 300));
    }

    #[test]
    fn the_ring_overwrites_its_oldest_slot_and_its_head_wraps() {
        let mut s = ran(100, &[]);
        for k in 0..(CPU_SLICE_SLOTS as u64 + 3) {
            close_slice(&mut s, 10 + k as u32, 1, 200 + 100 * k);
        }
        assert_eq!(s.head, CPU_SLICE_SLOTS as u32 + 3);
        // Slot 0 holds the 9th slice (k = 8), slot 2 the 11th, slot 3 still the 4th.
        assert_eq!(s.tid[0], 18);
        assert_eq!(s.tid[2], 20);
        assert_eq!(s.tid[3], 13);

        s.head = u32::MAX;
        close_slice(&mut s, 99, 1, 5_000);
        assert_eq!(s.head, 0);
        assert_eq!(s.tid[CPU_SLICE_SLOTS - 1], 99);
    }

    #[test]
    fn an_idle_prev_means_no_neighbour() {
        let s = ran(0, &[(7, 70, 100)]);
        assert_eq!(neighbour_of_wait(&s, 0, 0, 0, 1_000), Neighbour::default());
    }

    #[test]
    fn the_neighbour_is_prevs_process_with_all_its_threads_time_in_the_wait() {
        // Wait [150, 650): process 70 ran [100, 200) and [300, 400) and [500, 700) (two threads),
        // process 80 ran [200, 300) and [400, 500).
        let s = ran(
            100,
            &[
                (7, 70, 200),
                (8, 80, 300),
                (7, 70, 400),
                (9, 80, 500),
                (71, 70, 700),
            ],
        );
        let n = neighbour_of_wait(&s, 70, 71, 150, 650);
        assert_eq!(
            n,
            Neighbour {
                tgid: 70,
                tid: 71,
                ns: 50 + 100 + 150
            }
        );
        // 80 handed the CPU over: a wait this short is its, though 70 held it longer.
        let n = neighbour_of_wait(&s, 80, 9, 150, 650);
        assert_eq!((n.tgid, n.ns), (80, 200));
    }

    #[test]
    fn the_neighbour_is_the_process_that_held_the_wait_longest_not_who_handed_over() {
        // A hog's two threads take turns for 4 ms; the waiter's sibling worker (process 50) runs
        // 1 ms and sleeps, handing the CPU to the waiter.
        let ms = 1_000_000;
        let s = ran(ms, &[(7, 70, 3 * ms), (8, 70, 5 * ms), (51, 50, 6 * ms)]);
        let n = neighbour_of_wait(&s, 50, 51, ms, 6 * ms);
        assert_eq!(
            n,
            Neighbour {
                tgid: 70,
                tid: 7,
                ns: 4 * ms
            }
        );
        // A tie goes to who handed the CPU over.
        let s = ran(ms, &[(7, 70, 2 * ms), (51, 50, 3 * ms)]);
        let n = neighbour_of_wait(&s, 50, 51, ms, 3 * ms);
        assert_eq!((n.tgid, n.tid, n.ns), (50, 51, ms));
        // prev's process held nothing in the wait (its slice is older): another one is named.
        let s = ran(ms, &[(51, 50, 2 * ms), (7, 70, 3 * ms)]);
        let n = neighbour_of_wait(&s, 50, 51, 2 * ms, 3 * ms);
        assert_eq!((n.tgid, n.ns), (70, ms));
        // Below the pairwise pass's bound, prev's process even so.
        let short = PAIRWISE_MIN_WAIT_NS - 1;
        let s = ran(ms, &[(7, 70, ms + short - 10), (51, 50, ms + short)]);
        let n = neighbour_of_wait(&s, 50, 51, ms, ms + short);
        assert_eq!((n.tgid, n.ns), (50, 10));
    }

    #[test]
    fn slices_outside_the_wait_count_nothing() {
        let s = ran(100, &[(7, 70, 200), (7, 70, 300)]);
        assert_eq!(neighbour_of_wait(&s, 70, 7, 300, 400).ns, 0);
        assert_eq!(neighbour_of_wait(&s, 80, 8, 300, 400).tgid, 80);
        assert_eq!(neighbour_of_wait(&s, 70, 7, 0, 100).ns, 0);
        // A wait that ends before it starts (clock going backwards) overlaps nothing.
        assert_eq!(neighbour_of_wait(&s, 70, 7, 250, 150).ns, 0);
        // Touching bounds: [200, 300) ends where the wait starts.
        assert_eq!(neighbour_of_wait(&s, 70, 7, 200, 200).ns, 0);
    }

    #[test]
    fn empty_slots_are_ignored_unless_prev_claims_tgid_0() {
        // An empty slot is [0, 0) with tgid 0: no overlap with any wait.
        let s = empty();
        assert_eq!(neighbour_of_wait(&s, 0, 5, 0, u64::MAX).ns, 0);
    }

    #[test]
    fn a_neighbour_never_holds_the_cpu_longer_than_the_wait() {
        // Back-to-back slices of one process, waits at every boundary combination.
        let bounds = [0u64, 50, 100, 150, 200, 250, 300, 350, 400, 450];
        let s = ran(100, &[(7, 70, 200), (7, 70, 300), (8, 70, 400)]);
        for &start in &bounds {
            for &end in &bounds {
                let ns = neighbour_of_wait(&s, 70, 7, start, end).ns;
                let overlap = end.min(400).saturating_sub(start.max(100));
                assert_eq!(ns, overlap, "wait [{start}, {end})");
            }
        }
    }

    #[test]
    fn exhaustively_the_neighbour_is_the_process_holding_the_wait_longest() {
        // Four slices of 100, 300, 200 and 400 us from t = 1 ms, every assignment of them to
        // processes 1..=3, every wait on a 50 us grid, prev either process 1 or 3.
        let us = 1_000u64;
        let ends = [1_100 * us, 1_400 * us, 1_600 * us, 2_000 * us];
        for code in 0..81u32 {
            let owners: [u32; 4] = core::array::from_fn(|k| code / 3u32.pow(k as u32) % 3 + 1);
            let slices: [(u32, u32, u64); 4] =
                core::array::from_fn(|k| (owners[k] * 10 + k as u32, owners[k], ends[k]));
            let s = ran(1_000 * us, &slices);
            for start in (900..=2_000).step_by(50).map(|t| t * us) {
                for end in (start..=2_100 * us).step_by(50 * us as usize) {
                    let held = |p: u32| -> u64 {
                        let mut begin = 1_000 * us;
                        let mut ns = 0;
                        for (&o, e) in owners.iter().zip(ends) {
                            if o == p {
                                ns += e.min(end).saturating_sub(begin.max(start));
                            }
                            begin = e;
                        }
                        ns
                    };
                    let most = (1..=3).map(held).max().unwrap();
                    for prev in [1u32, 3] {
                        let n = neighbour_of_wait(&s, prev, prev * 10, start, end);
                        let case = (owners, start, end, prev);
                        if end - start < PAIRWISE_MIN_WAIT_NS || held(prev) == most {
                            // A short wait, or a tie: who handed the CPU over.
                            assert_eq!(
                                n,
                                Neighbour {
                                    tgid: prev,
                                    tid: prev * 10,
                                    ns: held(prev)
                                }
                            );
                            continue;
                        }
                        assert_eq!(n.ns, most, "{case:?}");
                        assert_eq!(held(n.tgid), most, "{case:?}");
                        // The tid is one of the named process's threads.
                        assert_eq!(n.tid / 10, n.tgid, "{case:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_longest_holder_is_the_longest_slice_in_the_wait_not_the_last() {
        // A hog thread for 3 ms, the other for 2 ms, then a short thread let in just before.
        let s = ran(1_000, &[(7, 70, 4_000), (8, 70, 6_000), (9, 90, 6_100)]);
        let n = longest_holder(&s, 2_000, 6_100);
        assert_eq!((n.tgid, n.tid, n.ns), (70, 7, 2_000));
        assert_eq!(longest_holder(&s, 6_100, 9_000), Neighbour::default());
        assert_eq!(longest_holder(&empty(), 0, 9_000), Neighbour::default());
    }
}
