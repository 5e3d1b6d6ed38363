//! The sums a closed interval adds to a bucket: its state's time, the neighbour that held the
//! CPU, and for time off CPU why the thread slept and who woke it.

use super::{Interval, Neighbour};
use crate::thread::{ThreadBucket, state, wait};

/// Adds `dur_ns` in `state` to `b`. Sums wrap rather than trap: no program may panic, and a
/// bucket would need centuries of time to wrap.
#[inline(always)]
pub fn add_to_bucket(
    b: &mut ThreadBucket,
    state: u32,
    dur_ns: u64,
    throttled_ns: u64,
    n: Neighbour,
) {
    match state {
        state::ON_CPU => b.on_cpu_ns = b.on_cpu_ns.wrapping_add(dur_ns),
        state::RUNQ => {
            b.runq_ns = b.runq_ns.wrapping_add(dur_ns);
            b.throttled_ns = b.throttled_ns.wrapping_add(throttled_ns);
            if n.ns == 0 {
            } else if n.tgid == b.neighbour_tgid {
                b.neighbour_ns = b.neighbour_ns.wrapping_add(n.ns);
            } else if n.ns > b.neighbour_ns {
                // Keeps the bucket's biggest single neighbour: exact when one process
                // dominates, which is the case worth naming.
                b.neighbour_tgid = n.tgid;
                b.neighbour_ns = n.ns;
            }
        }
        _ => {
            // Off CPU, `n.ns` is the sleep's share of its waker's delay, `throttled_ns` of it
            // throttled; the rest was spent behind the neighbour `n.tgid`.
            b.off_cpu_ns = b.off_cpu_ns.wrapping_add(dur_ns);
            b.waker_throttled_ns = b.waker_throttled_ns.wrapping_add(throttled_ns);
            let contended_ns = n.ns.saturating_sub(throttled_ns);
            if contended_ns == 0 || n.tgid == 0 {
                return;
            }
            if n.tgid == b.waker_neighbour_tgid
                || b.waker_delay_ns == 0
                || contended_ns > b.waker_delay_ns
            {
                // One sum, one name: a new neighbour takes it when it alone outweighs the rest.
                b.waker_neighbour_tgid = n.tgid;
            }
            b.waker_delay_ns = b.waker_delay_ns.wrapping_add(contended_ns);
        }
    }
}

/// Adds `dur_ns` of the interval `iv` to `b`: its state's sums, time off CPU by why the thread
/// left its CPU too, and who ended time off CPU.
#[inline(always)]
pub(super) fn add_interval(b: &mut ThreadBucket, iv: &Interval, dur_ns: u64) {
    add_to_bucket(b, iv.state, dur_ns, iv.throttled_ns, iv.neighbour);
    if iv.state == state::ON_CPU && iv.wait == wait::MEMORY {
        b.reclaim_on_cpu_ns = b.reclaim_on_cpu_ns.wrapping_add(dur_ns);
    }
    if iv.state == state::ON_CPU {
        b.steal_ns = b.steal_ns.wrapping_add(iv.stolen_ns.min(dur_ns));
    }
    if iv.state == state::RUNQ && iv.wait == wait::MEMORY {
        let memory_ns = dur_ns.saturating_sub(iv.throttled_ns);
        b.memory_runq_ns = b.memory_runq_ns.wrapping_add(memory_ns);
    }
    if iv.state != state::OFF_CPU {
        return;
    }
    if iv.wait == wait::IO || iv.wait == wait::FAULT {
        // One device per bucket, by the rule of the names below: the one of most of its waits
        // on I/O, a major fault's read included.
        let device_ns = b.io_wait_ns.wrapping_add(b.fault_wait_ns);
        if iv.io_dev != 0 && (b.io_dev == 0 || iv.io_dev == b.io_dev || dur_ns > device_ns) {
            b.io_dev = iv.io_dev;
        }
    }
    // What the waker's memory stall explains (`memory_chain`) is memory's, whatever the
    // thread slept in; a memory stall of its own is already all memory's.
    let waker_stalled_ns = if iv.wait == wait::MEMORY {
        0
    } else {
        iv.memory_ns.min(dur_ns)
    };
    b.memory_stall_ns = b.memory_stall_ns.wrapping_add(waker_stalled_ns);
    // The sleep's reason keeps the rest: the same time is not counted twice.
    let own_ns = dur_ns - waker_stalled_ns;
    match iv.wait {
        wait::IO => b.io_wait_ns = b.io_wait_ns.wrapping_add(own_ns),
        wait::MEMORY => b.memory_stall_ns = b.memory_stall_ns.wrapping_add(dur_ns),
        // A fault waiting for the address space's lock that another thread holds through its
        // reclaim: memory's, not the fault's.
        wait::FAULT => b.fault_wait_ns = b.fault_wait_ns.wrapping_add(own_ns),
        wait::LOCK => {
            // One name, as for the waker below: a new releaser takes it when one wait it
            // ended alone outweighs the lock waits so far.
            if b.lock_wait_ns == 0 || iv.waker_tid == b.lock_waker_tid || dur_ns > b.lock_wait_ns {
                b.lock_waker_tid = iv.waker_tid;
            }
            // What the releaser's own delays explain is theirs (`waker_delay_ns`,
            // `waker_throttled_ns`): the lock is what is left.
            b.lock_wait_ns = b
                .lock_wait_ns
                .wrapping_add(own_ns.saturating_sub(iv.neighbour.ns));
        }
        _ => {}
    }
    if b.woken_by_ns == 0 || iv.waker_tgid == b.woken_by_tgid {
        b.woken_by_tgid = iv.waker_tgid;
        b.woken_by_ns = b.woken_by_ns.wrapping_add(dur_ns);
    } else if dur_ns > b.woken_by_ns {
        b.woken_by_tgid = iv.waker_tgid;
        b.woken_by_ns = dur_ns;
    }
}
