//! Who held each CPU recently: the last few slices of CPU time per CPU, so that a watched
//! thread's run-queue wait can be charged to the neighbours that ran while it waited. The ring's
//! arithmetic is `culprit_common::accounting::neighbour`.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use culprit_common::{accounting::neighbour::close_slice, thread::CpuSlices};

#[map(name = "CPU_SLICES")]
static CPU_SLICES: PerCpuArray<CpuSlices> = PerCpuArray::with_max_entries(1, 0);

/// Closes the slice of the thread leaving this CPU.
#[inline(always)]
pub fn record_slice(prev_tid: u32, prev_tgid: u32, now_ns: u64) -> Option<*mut CpuSlices> {
    let s = CPU_SLICES.get_ptr_mut(0)?;
    // Per-CPU and the scheduler hooks do not nest on one CPU: plain writes are safe.
    close_slice(unsafe { &mut *s }, prev_tid, prev_tgid, now_ns);
    Some(s)
}
