//! Per-CPU loss counters: a silent drop is a bug.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use culprit_common::DropCounter;

#[map(name = "DROPS")]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DropCounter::COUNT, 0);

#[inline(always)]
pub fn count_drop(counter: DropCounter) {
    if let Some(slot) = DROPS.get_ptr_mut(counter as u32) {
        // Per-CPU slot: no other CPU writes it, and programs do not nest on one CPU for the
        // tracepoints we attach to.
        unsafe { *slot += 1 };
    }
}
