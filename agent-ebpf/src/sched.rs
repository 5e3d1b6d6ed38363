//! Run-queue delay: the time from a thread becoming runnable (woken, or preempted while still
//! runnable) to it getting a CPU, aggregated in the kernel per cgroup as a histogram.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map},
    maps::{Array, HashMap, LruHashMap},
    programs::BtfTracePointContext,
};
use culprit_common::{DropCounter, HIST_SLOTS, RunqHist, hist_slot};

use crate::{
    drops::count_drop,
    task::{offsets, task_cgroup_id, task_state, task_tid},
};

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

const TASK_RUNNING: u32 = 0;

#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    let _ = try_enqueue(ctx.arg(0));
    0
}

#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    let _ = try_enqueue(ctx.arg(0));
    0
}

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sched_switch(&ctx);
    0
}

#[inline(always)]
fn try_enqueue(task: *const u8) -> Result<(), ()> {
    let off = offsets();
    let tid = task_tid(task, &off)?;
    record_enqueue(tid)
}

#[inline(always)]
fn record_enqueue(tid: u32) -> Result<(), ()> {
    if tid == 0 {
        return Ok(());
    }
    let now_ns = unsafe { bpf_ktime_get_ns() };
    RUNQ_ENQUEUED_NS.insert(tid, now_ns, 0).map_err(|_| {
        count_drop(DropCounter::RunqEnqueueFailed);
    })
}

fn try_sched_switch(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let off = offsets();
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);

    // A thread switched out while still runnable was preempted: it waits in the run queue again
    // from now on.
    let prev_state = if off.switch_has_prev_state != 0 {
        ctx.arg::<u64>(3) as u32
    } else {
        task_state(prev, &off)?
    };
    if prev_state == TASK_RUNNING {
        let prev_tid = task_tid(prev, &off)?;
        let _ = record_enqueue(prev_tid);
    }

    let next_tid = task_tid(next, &off)?;
    let Some(enqueued_ns) = (unsafe { RUNQ_ENQUEUED_NS.get(next_tid) }).copied() else {
        return Ok(());
    };
    let _ = RUNQ_ENQUEUED_NS.remove(next_tid);
    let now_ns = unsafe { bpf_ktime_get_ns() };
    let delay_ns = now_ns.saturating_sub(enqueued_ns);
    let cgroup_id = task_cgroup_id(next, &off)?;
    add_sample(cgroup_id, delay_ns)
}

#[inline(always)]
fn add_sample(cgroup_id: u64, delay_ns: u64) -> Result<(), ()> {
    let hist = match RUNQ_HIST.get_ptr_mut(cgroup_id) {
        Some(hist) => hist,
        None => {
            // BPF_NOEXIST: when two CPUs race to create the entry, the loser simply uses the
            // winner's.
            let zero = RUNQ_HIST_ZERO.get(0).ok_or(())?;
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
