//! Per-thread time accounting for watched threads: on CPU, waiting in a run queue (throttled or
//! contended, with the neighbour that held the CPU), or off CPU. Long intervals are streamed as
//! episodes; short ones are summed into per-thread buckets, streamed when a bucket closes.
//!
//! A thread is watched when it has an entry in `THREAD_STATE`. Whether it has one is cached in
//! the task's local storage until the agent changes the watch set (`WATCH_GENERATION`), so the
//! hooks of the node's other threads do no hash lookup at all.
//!
//! What each event charges is decided in `culprit_common::accounting` (tested on the host); this
//! module finds the state, reads the kernel and writes the records.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, RingBuf},
};
use culprit_common::{
    DropCounter, KernelOffsets,
    accounting::{
        neighbour::Neighbour,
        thread_time::{self, RecordSink},
        watch_cache,
    },
    thread::{Delay, SchedRecord, SpanTags, TaskSched, ThreadBucket, ThreadState},
};

use crate::{
    config::probe_config,
    drops::count_drop,
    task::{
        TASK_RUNNING, cpu_steal_clock, task_cgroup_id, task_memory_stalled, task_tgid,
        task_throttling, task_wait_reason,
    },
    thread_context,
};

#[map(name = "THREAD_STATE")]
static THREAD_STATE: HashMap<u32, ThreadState> = HashMap::with_max_entries(16384, 0);

#[map(name = "WATCHED_TGIDS")]
static WATCHED_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

#[map(name = "WATCHED_CGROUPS")]
static WATCHED_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(1024, 0);

#[map(name = "SCHED_EVENTS")]
static SCHED_EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

#[map(name = "WATCH_GENERATION")]
static WATCH_GENERATION: Array<u32> = Array::with_max_entries(1, 0);

/// The current watch generation (0: none published yet).
#[inline(always)]
pub fn watch_generation() -> u32 {
    WATCH_GENERATION.get(0).copied().unwrap_or(0)
}

/// The task's `THREAD_STATE` entry and tid, if it is watched. The lookup (and `tid`, which may
/// cost a kernel read) happens only when the task's cached answer (as of `generation`) is
/// missing, stale, or yes.
#[inline(always)]
pub fn watched_state(
    ts: Option<*mut TaskSched>,
    generation: u32,
    tid: impl FnOnce() -> Result<u32, ()>,
) -> Option<(u32, *mut ThreadState)> {
    if let Some(ts) = ts
        && watch_cache::known_unwatched(unsafe { &*ts }, generation)
    {
        return None;
    }
    let tid = tid().ok()?;
    let st = THREAD_STATE.get_ptr_mut(tid);
    if let Some(ts) = ts {
        watch_cache::remember(unsafe { &mut *ts }, generation, st.is_some());
    }
    st.map(|st| (tid, st))
}

#[inline(always)]
pub fn is_watched_tgid(tgid: u32) -> bool {
    unsafe { WATCHED_TGIDS.get(tgid) }.is_some()
}

/// Marks `st` as being changed by a hook of its thread's own CPU, or done: the context sampler
/// (an NMI) may interrupt the hook. Volatile, so that the compiler keeps the mark around the
/// changes.
#[inline(always)]
fn mark_in_hook(st: *mut ThreadState, on: u32) {
    unsafe { core::ptr::write_volatile(&raw mut (*st).in_hook, on) };
}

/// Watched `prev` (state `st`) leaves its CPU in `prev_state`: preempted (still runnable) or
/// blocking. Its
/// published context, if its process has one, is read now: it cannot change until it is back.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn switch_out(
    st: *mut ThreadState,
    prev: *const u8,
    tid: u32,
    tgid: u32,
    prev_state: u32,
    now_ns: u64,
    off: &KernelOffsets,
) {
    mark_in_hook(st, 1);
    let preempted = prev_state == TASK_RUNNING;
    let span_id = thread_context::current_span(prev, tgid, off, unsafe { (*st).span_id });
    // A preempted thread waits for a CPU only; whether in a memory stall is all it is asked.
    let wait_reason = if preempted {
        task_memory_stalled(prev, off)
    } else {
        task_wait_reason(prev, prev_state, off)
    };
    thread_time::switch_out(
        unsafe { &mut *st },
        tgid,
        preempted,
        wait_reason,
        now_ns,
        span_id,
        cpu_steal_clock(prev, off),
        &probe_config(),
        &mut Ring { tid },
        || task_throttling(prev, off),
    );
    mark_in_hook(st, 0);
}

/// The sampler interrupted watched thread `tid` (the current task, `task`) of a process that
/// publishes its context.
#[inline(always)]
pub fn sample(task: *const u8, tid: u32, tgid: u32, now_ns: u64, off: &KernelOffsets) {
    let Some(st) = THREAD_STATE.get_ptr_mut(tid) else {
        return;
    };
    // Interrupting a scheduler hook of this thread: its state is half-changed.
    if unsafe { core::ptr::read_volatile(&raw const (*st).in_hook) } != 0 {
        return;
    }
    let span_id = thread_context::current_span(task, tgid, off, unsafe { (*st).span_id });
    thread_time::context_sample(
        unsafe { &mut *st },
        now_ns,
        span_id,
        || cpu_steal_clock(task, off),
        &probe_config(),
        &mut Ring { tid },
    );
}

/// Thread `tid`, if watched, queued block I/O to device `dev`: its next I/O wait is on it.
#[inline(always)]
pub fn note_io_device(tid: u32, dev: u32) {
    if let Some(st) = THREAD_STATE.get_ptr_mut(tid) {
        unsafe { (*st).io_dev = dev };
    }
}

/// Thread `tid` (the current task, `task`), if watched, begins or ends reclaiming memory on
/// its CPU.
#[inline(always)]
pub fn reclaim(
    task: *const u8,
    tid: u32,
    tgid: u32,
    now_ns: u64,
    begin: bool,
    off: &KernelOffsets,
) {
    let Some(st) = THREAD_STATE.get_ptr_mut(tid) else {
        return;
    };
    mark_in_hook(st, 1);
    let span_id = thread_context::current_span(task, tgid, off, unsafe { (*st).span_id });
    thread_time::reclaim(
        unsafe { &mut *st },
        now_ns,
        span_id,
        begin,
        cpu_steal_clock(task, off),
        &probe_config(),
        &mut Ring { tid },
    );
    mark_in_hook(st, 0);
}

/// Watched `next` (state `st`) gets a CPU; `neighbour` is who held the CPU while it waited.
#[inline(always)]
pub fn switch_in(
    st: *mut ThreadState,
    next: *const u8,
    tid: u32,
    now_ns: u64,
    off: &KernelOffsets,
    neighbour: impl FnOnce(u64) -> Neighbour,
) {
    thread_time::switch_in(
        unsafe { &mut *st },
        now_ns,
        cpu_steal_clock(next, off),
        &probe_config(),
        &mut Ring { tid },
        neighbour,
        || task_throttling(next, off),
    );
}

/// Watched `task` (state `st`) was woken up by `waker` (process, thread; 0s: an interrupt)
/// that carried `waker_delay`. A watched waker's memory stalls are read from its own state: one
/// lookup, only for the wakeups of watched threads.
#[inline(always)]
pub fn wakeup(
    st: *mut ThreadState,
    task: *const u8,
    tid: u32,
    now_ns: u64,
    waker: (u32, u32),
    waker_delay: &Delay,
    off: &KernelOffsets,
) {
    let waker_stall = match waker.1 {
        0 => Delay::NONE,
        waker_tid if waker_tid == tid => Delay::NONE,
        waker_tid => THREAD_STATE
            .get_ptr(waker_tid)
            .map_or(Delay::NONE, |w| unsafe { (*w).memory_stall }),
    };
    thread_time::wakeup(
        unsafe { &mut *st },
        now_ns,
        waker.0,
        waker.1,
        waker_delay,
        &waker_stall,
        &probe_config(),
        &mut Ring { tid },
        || task_throttling(task, off),
    );
}

/// A new thread or process: watched from birth if its process or cgroup is watched.
#[inline(always)]
pub fn wakeup_new(task: *const u8, tid: u32, now_ns: u64, off: &KernelOffsets) {
    if let Some(st) = THREAD_STATE.get_ptr_mut(tid) {
        // A new thread's first wakeup ends no sleep: its waker is nobody's news.
        return wakeup(st, task, tid, now_ns, (0, 0), &Delay::NONE, off);
    }
    let Ok(tgid) = task_tgid(task, off) else {
        return;
    };
    let watched = is_watched_tgid(tgid)
        || task_cgroup_id(task, off).is_ok_and(|id| unsafe { WATCHED_CGROUPS.get(id) }.is_some());
    if !watched {
        return;
    }
    let st = thread_time::new_thread(tgid, now_ns, task_throttling(task, off));
    if THREAD_STATE.insert(tid, st, 0).is_err() {
        count_drop(DropCounter::ThreadStateFull);
    }
}

/// The current thread (`task`) exits: charge its last interval on CPU, flush what it still
/// holds and forget it.
#[inline(always)]
pub fn exit(task: *const u8, tid: u32, now_ns: u64, off: &KernelOffsets) {
    let Some(st) = THREAD_STATE.get_ptr_mut(tid) else {
        return;
    };
    mark_in_hook(st, 1);
    thread_time::exit(
        unsafe { &mut *st },
        now_ns,
        cpu_steal_clock(task, off),
        &probe_config(),
        &mut Ring { tid },
    );
    let _ = THREAD_STATE.remove(tid);
}

/// The records of thread `tid`, to `SCHED_EVENTS`.
struct Ring {
    tid: u32,
}

impl RecordSink for Ring {
    /// Writes the record straight into the ring buffer: no 104-byte copy on the 512-byte stack.
    #[inline(always)]
    fn emit(
        &mut self,
        kind: u32,
        state: u32,
        tgid: u32,
        start_ns: u64,
        end_ns: u64,
        bucket: &ThreadBucket,
        spans: SpanTags,
    ) {
        let Some(mut entry) = SCHED_EVENTS.reserve::<SchedRecord>(0) else {
            count_drop(DropCounter::SchedRingFull);
            return;
        };
        let rec = entry.as_mut_ptr();
        unsafe {
            (*rec).kind = kind;
            (*rec).state = state;
            (*rec).tid = self.tid;
            (*rec).tgid = tgid;
            (*rec).start_ns = start_ns;
            (*rec).end_ns = end_ns;
            (*rec).bucket = *bucket;
            (*rec).spans = spans;
        }
        // No wakeup per record: the agent drains the ring on its own 20 ms tick. Waking it for
        // every record would put it on the CPU of the very threads it watches (observer effect).
        entry.submit(BPF_RB_NO_WAKEUP);
    }
}

const BPF_RB_NO_WAKEUP: u64 = 1;
