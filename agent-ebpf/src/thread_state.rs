//! Per-thread time accounting for watched threads: on CPU, waiting in a run queue (throttled or
//! contended, with the neighbour that held the CPU), or off CPU. Long intervals are streamed as
//! episodes; short ones are summed into per-thread buckets, streamed when a bucket closes.
//!
//! A thread is watched when it has an entry in `THREAD_STATE`. Whether it has one is cached in
//! the task's local storage until the agent changes the watch set (`WATCH_GENERATION`), so the
//! hooks of the node's other threads do no hash lookup at all.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, RingBuf},
};
use culprit_common::{
    DropCounter, KernelOffsets,
    thread::{SchedRecord, TaskSched, ThreadBucket, ThreadState, record, state},
};

use crate::{
    config::probe_config,
    cpu_slices::Neighbour,
    drops::count_drop,
    task::{task_cgroup_id, task_tgid, task_throttling},
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

/// The task's `THREAD_STATE` entry and tid, if it is watched. The lookup (and `tid`, which may
/// cost a kernel read) happens only when the task's cached answer is missing, stale, or yes.
///
/// The agent adds entries first and bumps the generation after: a task cached as unwatched
/// during the change is looked up again under the new generation.
#[inline(always)]
pub fn watched_state(
    ts: Option<*mut TaskSched>,
    tid: impl FnOnce() -> Result<u32, ()>,
) -> Option<(u32, *mut ThreadState)> {
    let generation = WATCH_GENERATION.get(0).copied().unwrap_or(0);
    if let Some(ts) = ts {
        let (seen, watched) = unsafe { ((*ts).watch_gen, (*ts).watched) };
        if generation != 0 && seen == generation && watched == 0 {
            return None;
        }
    }
    let tid = tid().ok()?;
    let st = THREAD_STATE.get_ptr_mut(tid);
    if let Some(ts) = ts {
        unsafe {
            (*ts).watch_gen = generation;
            (*ts).watched = u32::from(st.is_some());
        }
    }
    st.map(|st| (tid, st))
}

#[inline(always)]
pub fn is_watched_tgid(tgid: u32) -> bool {
    unsafe { WATCHED_TGIDS.get(tgid) }.is_some()
}

/// Watched `prev` (state `st`) leaves its CPU: preempted (still runnable) or blocking.
#[inline(always)]
pub fn switch_out(
    st: *mut ThreadState,
    prev: *const u8,
    tid: u32,
    tgid: u32,
    preempted: bool,
    now_ns: u64,
    off: &KernelOffsets,
) {
    let st = unsafe { &mut *st };
    st.tgid = tgid;
    close_on_cpu(st, tid, now_ns);
    if preempted {
        begin_wait(st, prev, now_ns, off);
    } else {
        st.state = state::OFF_CPU;
        st.since_ns = now_ns;
    }
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
    let st = unsafe { &mut *st };
    if st.state == state::RUNQ {
        let wait_ns = now_ns.saturating_sub(st.since_ns);
        let neighbour = neighbour(st.since_ns);
        let throttled_ns = throttled_part(st, next, wait_ns, neighbour.ns, off);
        account(
            st,
            tid,
            state::RUNQ,
            st.since_ns,
            now_ns,
            throttled_ns,
            neighbour,
        );
    }
    st.state = state::ON_CPU;
    st.since_ns = now_ns;
}

/// Watched `task` (state `st`) was woken up.
#[inline(always)]
pub fn wakeup(st: *mut ThreadState, task: *const u8, tid: u32, now_ns: u64, off: &KernelOffsets) {
    let st = unsafe { &mut *st };
    match st.state {
        state::OFF_CPU => {
            account(
                st,
                tid,
                state::OFF_CPU,
                st.since_ns,
                now_ns,
                0,
                Neighbour::default(),
            );
            begin_wait(st, task, now_ns, off);
        }
        state::UNKNOWN => begin_wait(st, task, now_ns, off),
        // Already runnable or running: a wakeup changes nothing.
        _ => {}
    }
}

/// A new thread or process: watched from birth if its process or cgroup is watched.
#[inline(always)]
pub fn wakeup_new(task: *const u8, tid: u32, now_ns: u64, off: &KernelOffsets) {
    if let Some(st) = THREAD_STATE.get_ptr_mut(tid) {
        return wakeup(st, task, tid, now_ns, off);
    }
    let Ok(tgid) = task_tgid(task, off) else {
        return;
    };
    let watched = is_watched_tgid(tgid)
        || task_cgroup_id(task, off).is_ok_and(|id| unsafe { WATCHED_CGROUPS.get(id) }.is_some());
    if !watched {
        return;
    }
    let mut st = ThreadState {
        tgid,
        ..ThreadState::default()
    };
    begin_wait(&mut st, task, now_ns, off);
    if THREAD_STATE.insert(tid, st, 0).is_err() {
        count_drop(DropCounter::ThreadStateFull);
    }
}

/// The current thread exits: charge its last interval on CPU, flush what it still holds and
/// forget it.
#[inline(always)]
pub fn exit(tid: u32, now_ns: u64) {
    let Some(st) = THREAD_STATE.get_ptr_mut(tid) else {
        return;
    };
    let st = unsafe { &mut *st };
    close_on_cpu(st, tid, now_ns);
    flush_bucket(st, tid);
    emit(record::EXIT, 0, tid, st.tgid, now_ns, now_ns, &st.bucket);
    let _ = THREAD_STATE.remove(tid);
}

/// Charges the interval on CPU that ends now, if the thread was on one.
#[inline(always)]
fn close_on_cpu(st: &mut ThreadState, tid: u32, now_ns: u64) {
    if st.state == state::ON_CPU {
        let since_ns = st.since_ns;
        account(
            st,
            tid,
            state::ON_CPU,
            since_ns,
            now_ns,
            0,
            Neighbour::default(),
        );
    }
}

#[inline(always)]
fn begin_wait(st: &mut ThreadState, task: *const u8, now_ns: u64, off: &KernelOffsets) {
    st.state = state::RUNQ;
    st.since_ns = now_ns;
    match task_throttling(task, off) {
        Some(t) => {
            st.cfs_rq = t.cfs_rq;
            st.throttled_self_ns_at_enqueue = t.throttled_self_ns;
            st.throttled_at_enqueue = t.throttle_count;
        }
        None => {
            st.cfs_rq = 0;
            st.throttled_at_enqueue = 0;
        }
    }
}

/// The part of a run-queue wait due to throttling.
///
/// A wait that began throttled is throttled as a whole: the thread would not have waited at all
/// without the quota, and getting back on a CPU after the unthrottle is part of that cost. A
/// wait during which the cfs_rq was throttled (its throttled clock moved, >= 6.5) is throttled
/// except for the time a neighbour demonstrably held the CPU: the kernel's clock alone misses
/// time (with 6.18's task-based throttling it only runs once no task of the cfs_rq is left
/// runnable).
#[inline(always)]
fn throttled_part(
    st: &ThreadState,
    task: *const u8,
    wait_ns: u64,
    neighbour_ns: u64,
    off: &KernelOffsets,
) -> u64 {
    if st.throttled_at_enqueue != 0 {
        return wait_ns;
    }
    let Some(now) = task_throttling(task, off) else {
        return 0;
    };
    if now.cfs_rq != st.cfs_rq || now.throttled_self_ns == 0 {
        return 0;
    }
    let delta = now
        .throttled_self_ns
        .saturating_sub(st.throttled_self_ns_at_enqueue);
    if delta == 0 {
        return 0;
    }
    let not_neighbour = wait_ns.saturating_sub(neighbour_ns);
    let throttled = if delta > not_neighbour {
        delta
    } else {
        not_neighbour
    };
    if throttled < wait_ns {
        throttled
    } else {
        wait_ns
    }
}

/// Charges `[start_ns, end_ns)` in `kind` to the thread: an episode if long, else its bucket.
#[inline(always)]
fn account(
    st: &mut ThreadState,
    tid: u32,
    kind: u32,
    start_ns: u64,
    end_ns: u64,
    throttled_ns: u64,
    neighbour: Neighbour,
) {
    let cfg = probe_config();
    let dur = end_ns.saturating_sub(start_ns);
    if dur == 0 || start_ns == 0 {
        return;
    }
    if dur >= cfg.episode_threshold_ns {
        let mut bucket = ThreadBucket::default();
        add(&mut bucket, kind, dur, throttled_ns, neighbour);
        emit(
            record::EPISODE,
            kind,
            tid,
            st.tgid,
            start_ns,
            end_ns,
            &bucket,
        );
        return;
    }
    let width = if cfg.bucket_ns == 0 {
        10_000_000
    } else {
        cfg.bucket_ns
    };
    let bucket_start = end_ns - end_ns % width;
    if st.bucket.start_ns != bucket_start {
        flush_bucket(st, tid);
        st.bucket = ThreadBucket {
            start_ns: bucket_start,
            ..ThreadBucket::default()
        };
    }
    add(&mut st.bucket, kind, dur, throttled_ns, neighbour);
}

#[inline(always)]
fn add(b: &mut ThreadBucket, kind: u32, dur: u64, throttled_ns: u64, n: Neighbour) {
    match kind {
        state::ON_CPU => b.on_cpu_ns += dur,
        state::RUNQ => {
            b.runq_ns += dur;
            b.throttled_ns += throttled_ns;
            if n.ns == 0 {
            } else if n.tgid == b.neighbour_tgid {
                b.neighbour_ns += n.ns;
            } else if n.ns > b.neighbour_ns {
                // Keeps the bucket's biggest single neighbour: exact when one process
                // dominates, which is the case worth naming.
                b.neighbour_tgid = n.tgid;
                b.neighbour_tid = n.tid;
                b.neighbour_ns = n.ns;
            }
        }
        _ => b.off_cpu_ns += dur,
    }
}

#[inline(always)]
fn flush_bucket(st: &mut ThreadState, tid: u32) {
    let b = st.bucket;
    if b.start_ns == 0 || (b.on_cpu_ns | b.runq_ns | b.off_cpu_ns) == 0 {
        return;
    }
    let width = probe_config().bucket_ns;
    emit(
        record::BUCKET,
        0,
        tid,
        st.tgid,
        b.start_ns,
        b.start_ns + width,
        &b,
    );
    st.bucket.start_ns = 0;
}

/// Writes a record straight into the ring buffer: no 88-byte copy on the 512-byte stack.
#[inline(always)]
fn emit(
    kind: u32,
    state: u32,
    tid: u32,
    tgid: u32,
    start_ns: u64,
    end_ns: u64,
    bucket: &ThreadBucket,
) {
    let Some(mut entry) = SCHED_EVENTS.reserve::<SchedRecord>(0) else {
        count_drop(DropCounter::SchedRingFull);
        return;
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        (*rec).kind = kind;
        (*rec).state = state;
        (*rec).tid = tid;
        (*rec).tgid = tgid;
        (*rec).start_ns = start_ns;
        (*rec).end_ns = end_ns;
        (*rec).bucket = *bucket;
    }
    // No wakeup per record: the agent drains the ring on its own 20 ms tick. Waking it for
    // every record would put it on the CPU of the very threads it watches (observer effect).
    entry.submit(BPF_RB_NO_WAKEUP);
}

const BPF_RB_NO_WAKEUP: u64 = 1;
