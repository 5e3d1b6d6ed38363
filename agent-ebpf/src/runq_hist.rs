//! Node-wide run-queue delay per cgroup: the time from a thread becoming runnable (woken, or
//! preempted while still runnable) to it getting a CPU, as an in-kernel histogram per cgroup.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap},
};
use culprit_common::{DropCounter, HIST_SLOTS, KernelOffsets, RunqHist, hist_slot};

use crate::{drops::count_drop, task::task_cgroup_id};

/// tid -> the moment the thread became runnable. LRU so that threads that exit while runnable
/// cannot leak entries.
#[map(name = "RUNQ_ENQUEUED_NS")]
static RUNQ_ENQUEUED_NS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(65536, 0);

#[map(name = "RUNQ_HIST")]
static RUNQ_HIST: HashMap<u64, RunqHist> = HashMap::with_max_entries(4096, 0);

/// A zeroed histogram to insert new entries from: a `RunqHist` is larger than the 512-byte BPF
/// stack.
#[map(name = "RUNQ_HIST_ZERO")]
static RUNQ_HIST_ZERO: Array<RunqHist> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn record_enqueue(tid: u32, now_ns: u64) {
    if tid == 0 {
        return;
    }
    if RUNQ_ENQUEUED_NS.insert(tid, now_ns, 0).is_err() {
        count_drop(DropCounter::RunqEnqueueFailed);
    }
}

/// `next` (thread `next_tid`) got a CPU: charge its wait to its cgroup.
#[inline(always)]
pub fn record_dequeue(next: *const u8, next_tid: u32, now_ns: u64, off: &KernelOffsets) {
    let Some(enqueued_ns) = (unsafe { RUNQ_ENQUEUED_NS.get(next_tid) }).copied() else {
        return;
    };
    let _ = RUNQ_ENQUEUED_NS.remove(next_tid);
    if let Ok(cgroup_id) = task_cgroup_id(next, off) {
        let _ = add_sample(cgroup_id, now_ns.saturating_sub(enqueued_ns));
    }
}

#[inline(always)]
fn add_sample(cgroup_id: u64, delay_ns: u64) -> Result<(), ()> {
    let hist = match RUNQ_HIST.get_ptr_mut(cgroup_id) {
        Some(hist) => hist,
        None => {
            let zero = RUNQ_HIST_ZERO.get(0).ok_or(())?;
            // BPF_NOEXIST: when two CPUs race to create the entry, the loser simply uses the
            // winner's.
            if RUNQ_HIST.insert(cgroup_id, zero, 1).is_err()
                && RUNQ_HIST.get_ptr_mut(cgroup_id).is_none()
            {
                count_drop(DropCounter::RunqHistFull);
                return Err(());
            }
            RUNQ_HIST.get_ptr_mut(cgroup_id).ok_or(())?
        }
    };
    // The compiler knows `hist_slot` is in range and would drop the check, but the verifier
    // cannot follow the bit arithmetic: a volatile read hides the range from the compiler so the
    // check survives for the verifier.
    let slot = hist_slot(delay_ns);
    let slot = unsafe { core::ptr::read_volatile(&slot) };
    if slot >= HIST_SLOTS {
        return Err(());
    }
    // Shared across CPUs: atomic adds keep the counters exact.
    unsafe {
        atomic_add(&mut (*hist).count, 1);
        atomic_add(&mut (*hist).total_ns, delay_ns);
        atomic_add((*hist).slots.as_mut_ptr().add(slot), 1);
    }
    Ok(())
}

/// The bpf target has atomic add but no compare-and-swap, so `AtomicU64` offers no `fetch_add`;
/// the intrinsic compiles to the BPF atomic add instruction.
#[inline(always)]
unsafe fn atomic_add(target: *mut u64, value: u64) {
    use core::intrinsics::{AtomicOrdering, atomic_xadd};
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(target, value) };
}
