//! Who held each CPU recently: the last few slices of CPU time per CPU, so that a watched
//! thread's run-queue wait can be charged to the neighbours that ran while it waited.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use culprit_common::thread::{CPU_SLICE_SLOTS, CpuSlices};

#[map(name = "CPU_SLICES")]
static CPU_SLICES: PerCpuArray<CpuSlices> = PerCpuArray::with_max_entries(1, 0);

const SLOT_MASK: u32 = CPU_SLICE_SLOTS as u32 - 1;
const _: () = assert!(CPU_SLICE_SLOTS.is_power_of_two());

/// The neighbour that held the CPU longest during a wait.
#[derive(Clone, Copy, Default)]
pub struct Neighbour {
    pub tgid: u32,
    pub tid: u32,
    pub ns: u64,
}

/// Closes the slice of the thread leaving this CPU. Idle time (tid 0) is not a neighbour.
#[inline(always)]
pub fn record_slice(prev_tid: u32, prev_tgid: u32, now_ns: u64) -> Option<*mut CpuSlices> {
    let s = CPU_SLICES.get_ptr_mut(0)?;
    // Per-CPU and the scheduler hooks do not nest on one CPU: plain writes are safe.
    unsafe {
        if (*s).last_switch_ns != 0 && prev_tid != 0 {
            let i = ((*s).head & SLOT_MASK) as usize;
            (*s).tgid[i] = prev_tgid;
            (*s).tid[i] = prev_tid;
            (*s).start_ns[i] = (*s).last_switch_ns;
            (*s).end_ns[i] = now_ns;
            (*s).head = (*s).head.wrapping_add(1);
        }
        (*s).last_switch_ns = now_ns;
    }
    Some(s)
}

/// The neighbour a wait is charged to: the process that held this CPU just before the waiter
/// got it (`prev` of this switch), with all the time its threads held the CPU during the wait.
/// A single pass with one comparison per slot keeps the verifier's work linear.
#[inline(always)]
pub fn neighbour_of_wait(
    s: *const CpuSlices,
    prev_tgid: u32,
    prev_tid: u32,
    start_ns: u64,
    end_ns: u64,
) -> Neighbour {
    if prev_tid == 0 {
        // The CPU was idle just before: nobody took it from the waiter.
        return Neighbour::default();
    }
    let s = unsafe { &*s };
    let mut ns = 0u64;
    for i in 0..CPU_SLICE_SLOTS {
        if s.tgid[i] == prev_tgid {
            let lo = if s.start_ns[i] > start_ns {
                s.start_ns[i]
            } else {
                start_ns
            };
            let hi = if s.end_ns[i] < end_ns {
                s.end_ns[i]
            } else {
                end_ns
            };
            ns += hi.saturating_sub(lo);
        }
    }
    Neighbour {
        tgid: prev_tgid,
        tid: prev_tid,
        ns,
    }
}
