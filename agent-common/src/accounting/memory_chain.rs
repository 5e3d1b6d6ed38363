//! Memory stalls passed along wakeups: a thread asleep waiting for a watched thread that was
//! itself stalled on memory meanwhile is late because of the memory pressure, not because of
//! anything it or its waker did. Seen in the lab's `memory-pressure` scenario: a request's
//! `munmap` waits for the address space's lock while the service's other worker holds it
//! through a 500 ms reclaim in a page fault; the request's 400 ms asleep were `off_cpu`, woken
//! by the other worker.
//!
//! Each watched thread keeps one window of its own memory stalls ([`ThreadState::memory_stall`]):
//! the time it slept inside a stall (closed at its wakeup) and reclaimed on its CPU (closed at
//! the reclaim's end tracepoint; not where `sched_switch` closes it, for that program's verifier
//! budget), added while the
//! stalls follow each other within [`MAX_GAP_NS`], started afresh after a longer quiet. A watched
//! sleeper woken by a watched thread is charged the part of the waker's window that fell within
//! its sleep, spread evenly over the window as the wake chain's delays are
//! ([`Delay::overlap_ns`]). Only watched wakers: their stalls are what the agent reads (one
//! lookup per wakeup of a watched thread, none for the node's others).
//!
//! [`ThreadState::memory_stall`]: crate::thread::ThreadState

use crate::thread::Delay;

/// A quiet longer than this between two stalls of a thread starts a new window: a reclaim that
/// waits on writeback page after page is one stall to whoever waits for it, a stall seconds
/// later is another.
pub const MAX_GAP_NS: u64 = 100_000_000;

/// Adds a stall `[start_ns, end_ns)` of the thread to its window.
#[inline(always)]
pub fn add_stall(window: &mut Delay, start_ns: u64, end_ns: u64) {
    let stall_ns = end_ns.saturating_sub(start_ns);
    if stall_ns == 0 {
        return;
    }
    if window.is_none() || start_ns.saturating_sub(window.end_ns) > MAX_GAP_NS {
        *window = Delay {
            start_ns,
            end_ns,
            delayed_ns: stall_ns,
            ..Delay::NONE
        };
        return;
    }
    if start_ns < window.start_ns {
        window.start_ns = start_ns;
    }
    if end_ns > window.end_ns {
        window.end_ns = end_ns;
    }
    window.delayed_ns = window.delayed_ns.saturating_add(stall_ns);
}

/// The part of a sleep `[sleep_start_ns, wake_ns)` its waker spent stalled on memory
/// (`waker_stall`), beyond what the sleep is already charged to (`charged_ns`: the waker's
/// run-queue delays): never more than the sleep.
#[inline(always)]
pub fn stalled_ns(waker_stall: &Delay, sleep_start_ns: u64, wake_ns: u64, charged_ns: u64) -> u64 {
    let left_ns = wake_ns
        .saturating_sub(sleep_start_ns)
        .saturating_sub(charged_ns);
    let ns = waker_stall.overlap_ns(sleep_start_ns, wake_ns);
    if ns < left_ns { ns } else { left_ns }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn stalls_close_together_make_one_window() {
        let mut w = Delay::NONE;
        // A reclaim: 30 ms asleep on writeback, 2 ms reclaiming on CPU, 40 ms asleep again.
        add_stall(&mut w, 100 * MS, 130 * MS);
        add_stall(&mut w, 130 * MS, 132 * MS);
        add_stall(&mut w, 140 * MS, 180 * MS);
        assert_eq!(
            (w.start_ns, w.end_ns, w.delayed_ns),
            (100 * MS, 180 * MS, 72 * MS)
        );
        // Nothing for a second: the next stall is a window of its own.
        add_stall(&mut w, 1200 * MS, 1210 * MS);
        assert_eq!(
            (w.start_ns, w.end_ns, w.delayed_ns),
            (1200 * MS, 1210 * MS, 10 * MS)
        );
        // An empty stall changes nothing.
        add_stall(&mut w, 1300 * MS, 1300 * MS);
        assert_eq!(w.end_ns, 1210 * MS);
    }

    #[test]
    fn a_sleeper_is_charged_the_stall_within_its_sleep_at_most_what_is_left() {
        let mut w = Delay::NONE;
        add_stall(&mut w, 100 * MS, 500 * MS);
        // Asleep from 150 ms to the waker's wakeup at 510 ms: 350 ms of the stall.
        assert_eq!(stalled_ns(&w, 150 * MS, 510 * MS, 0), 350 * MS);
        // 20 ms of the sleep already the waker's run-queue delay: the stall is the rest at most.
        assert_eq!(stalled_ns(&w, 490 * MS, 510 * MS, 15 * MS), 5 * MS);
        // A sleep after the stall, or a waker never stalled: nothing.
        assert_eq!(stalled_ns(&w, 500 * MS, 520 * MS, 0), 0);
        assert_eq!(stalled_ns(&Delay::NONE, 0, 520 * MS, 0), 0);
        // Stalls spread over a window: a sleep in part of it gets its share.
        let mut spread = Delay::NONE;
        add_stall(&mut spread, 0, 10 * MS);
        add_stall(&mut spread, 90 * MS, 100 * MS);
        assert_eq!(stalled_ns(&spread, 50 * MS, 100 * MS, 0), 10 * MS);
    }
}
