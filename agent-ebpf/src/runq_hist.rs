//! Node-wide run-queue delay per cgroup: the time from a thread becoming runnable (woken, or
//! preempted while still runnable) to it getting a CPU, as an in-kernel histogram per cgroup.
//! The per-task bookkeeping is `culprit_common::accounting::runq_delay`.
//!
//! A cgroup the agent gave a slot is counted in a per-CPU histogram (`RUNQ_HIST_CPU`): the task's
//! slot is cached with its cgroup id, so the switch does no hash lookup and no atomic add. The
//! rest (before the agent has seen a cgroup, or past the slots) go to the shared histogram per
//! cgroup id, which is also how the agent learns of new cgroups.

use aya_ebpf::{
    helpers::bpf_get_current_cgroup_id,
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use culprit_common::{
    DropCounter, KernelOffsets, RUNQ_CPU_SLOTS, RunqCpuHist, RunqHist, accounting::runq_delay,
    checked_hist_slot, thread::TaskSched,
};

use crate::{drops::count_drop, task::task_cgroup_id};

#[map(name = "RUNQ_HIST")]
static RUNQ_HIST: HashMap<u64, RunqHist> = HashMap::with_max_entries(4096, 0);

#[map(name = "RUNQ_HIST_CPU")]
static RUNQ_HIST_CPU: PerCpuArray<RunqCpuHist> = PerCpuArray::with_max_entries(RUNQ_CPU_SLOTS, 0);

#[map(name = "RUNQ_SLOT_OF")]
static RUNQ_SLOT_OF: HashMap<u64, u32> = HashMap::with_max_entries(RUNQ_CPU_SLOTS, 0);

/// A zeroed histogram to insert new entries from: a `RunqHist` is larger than the 512-byte BPF
/// stack.
#[map(name = "RUNQ_HIST_ZERO")]
static RUNQ_HIST_ZERO: Array<RunqHist> = Array::with_max_entries(1, 0);

/// The task of `ts` became runnable.
#[inline(always)]
pub fn record_enqueue(ts: *mut TaskSched, now_ns: u64) {
    runq_delay::note_enqueue(unsafe { &mut *ts }, now_ns);
}

/// `prev` (bookkeeping `ts`), the current task, leaves its CPU: remember its cgroup, and its
/// enqueue time if it stays runnable.
#[inline(always)]
pub fn record_switch_out(ts: *mut TaskSched, preempted: bool, now_ns: u64) {
    let ts = unsafe { &mut *ts };
    if runq_delay::note_switch_out(ts, preempted, now_ns) {
        let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
        ts.cgroup_id = cgroup_id;
        ts.runq_slot = unsafe { RUNQ_SLOT_OF.get(cgroup_id) }.map_or(0, |slot| slot + 1);
    }
}

/// `next` (bookkeeping `ts`) got a CPU: charge its wait to its cgroup. Returns the wait, if it
/// is known to have waited.
#[inline(always)]
pub fn record_dequeue(
    next: *const u8,
    ts: *mut TaskSched,
    now_ns: u64,
    off: &KernelOffsets,
) -> Option<u64> {
    let ts = unsafe { &mut *ts };
    let delay_ns = runq_delay::take_delay_ns(ts, now_ns)?;
    // A task that never left a CPU yet (just forked) has no cached cgroup.
    let cgroup_id = if ts.cgroup_id != 0 {
        if ts.runq_slot != 0 && add_on_cpu(ts.runq_slot - 1, ts.cgroup_id, delay_ns) {
            return Some(delay_ns);
        }
        ts.cgroup_id
    } else {
        match task_cgroup_id(next, off) {
            Ok(id) => id,
            Err(()) => return Some(delay_ns),
        }
    };
    let _ = add_sample(cgroup_id, delay_ns);
    Some(delay_ns)
}

/// Counts the wait in this CPU's histogram of `slot` if the slot is still `cgroup_id`'s.
#[inline(always)]
fn add_on_cpu(slot: u32, cgroup_id: u64, delay_ns: u64) -> bool {
    match RUNQ_HIST_CPU.get_ptr_mut(slot) {
        // Per CPU, and the hook runs with preemption off: a plain add is exact.
        Some(hist) => unsafe { &mut *hist }.add(cgroup_id, delay_ns),
        None => false,
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
    let slot = checked_hist_slot(delay_ns).ok_or(())?;
    // Shared across CPUs: atomic adds keep the counters exact. `count` is the sum of the slots:
    // the agent computes it when it reads the map, one atomic add fewer per switch.
    unsafe {
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
