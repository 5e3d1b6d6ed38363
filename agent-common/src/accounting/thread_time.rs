//! Where a watched thread's time goes. Each scheduler event closes the interval of the state the
//! thread was in ([`state`]) and opens the next; a closed interval is streamed as an episode if
//! it is long, else summed into the thread's current bucket, which is streamed when the next
//! interval ends in another bucket.

use core::num::NonZeroU64;

use super::{
    memory_chain,
    neighbour::Neighbour,
    throttle::{Throttling, note_enqueue, throttled_part_ns},
    wake_chain,
};
use crate::{
    ProbeConfig,
    thread::{Delay, SpanTags, ThreadBucket, ThreadState, record, state, wait},
};

/// Where records go: the kernel writes them to the `SCHED_EVENTS` ring buffer for the thread
/// being accounted.
pub trait RecordSink {
    /// A record of `kind` ([`record`]); `state` is the episode's state, 0 for other kinds.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        kind: u32,
        state: u32,
        tgid: u32,
        start_ns: u64,
        end_ns: u64,
        bucket: &ThreadBucket,
        spans: SpanTags,
    );
}

/// An interval one thread spent in one state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interval {
    /// One of [`state`].
    pub state: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    /// For a run-queue wait: the part due to throttling. For time off CPU: the part of the
    /// waker's delay (`neighbour.ns`) it spent throttled.
    pub throttled_ns: u64,
    /// For time off CPU: why the thread left its CPU (one of [`wait`]). For time on CPU:
    /// [`wait::MEMORY`] while it reclaimed memory.
    pub wait: u32,
    /// For an I/O wait: the block device its thread last queued I/O to (0: unknown).
    pub io_dev: u32,
    /// For time off CPU: the process and thread whose wakeup ended it; 0: an interrupt's.
    pub waker_tgid: u32,
    pub waker_tid: u32,
    /// For a run-queue wait: who held the CPU meanwhile. For time off CPU: who held the CPU
    /// from the thread's waker while the thread slept (`ns` of it, `wake_chain`).
    pub neighbour: Neighbour,
    /// The thread's context spans at its ends.
    pub spans: SpanTags,
    /// For time on CPU: the part the hypervisor took from the CPU (steal time).
    pub stolen_ns: u64,
    /// For time off CPU: the part its waker spent stalled on memory meanwhile
    /// (`memory_chain`), beyond `neighbour.ns`.
    pub memory_ns: u64,
}

/// What a closed interval becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charge {
    /// Empty, or its start was never seen (0): nothing to say.
    Nothing,
    /// At least the episode threshold long: a record of its own.
    Episode { dur_ns: u64 },
    /// Summed into the bucket starting at `bucket_start_ns`.
    Bucket { dur_ns: u64, bucket_start_ns: u64 },
}

/// The bucket width when the configuration gives none.
pub const DEFAULT_BUCKET_NS: NonZeroU64 = match NonZeroU64::new(10_000_000) {
    Some(ns) => ns,
    None => unreachable!(),
};

/// The width buckets are cut at. Never zero: it divides.
#[inline(always)]
pub fn bucket_width_ns(cfg: &ProbeConfig) -> NonZeroU64 {
    match NonZeroU64::new(cfg.bucket_ns) {
        Some(ns) => ns,
        None => DEFAULT_BUCKET_NS,
    }
}

/// The start of the bucket holding `t_ns`: buckets are aligned to the clock, so all threads
/// share their boundaries.
#[inline(always)]
pub fn bucket_start_ns(t_ns: u64, width_ns: NonZeroU64) -> u64 {
    t_ns - t_ns % width_ns
}

/// What the interval `[start_ns, end_ns)` becomes. A short interval belongs to the bucket it
/// ends in: its end is when it is known. A clock that went backwards gives an empty interval.
/// An interval of a published context is always an episode: a bucket would lose whose it was.
#[inline(always)]
pub fn charge_of(start_ns: u64, end_ns: u64, spans: SpanTags, cfg: &ProbeConfig) -> Charge {
    let dur_ns = end_ns.saturating_sub(start_ns);
    if dur_ns == 0 || start_ns == 0 {
        return Charge::Nothing;
    }
    if dur_ns >= cfg.episode_threshold_ns || !spans.is_none() {
        return Charge::Episode { dur_ns };
    }
    Charge::Bucket {
        dur_ns,
        bucket_start_ns: bucket_start_ns(end_ns, bucket_width_ns(cfg)),
    }
}

/// Charges a closed interval to the thread: an episode if long, else its bucket, streaming the
/// bucket first if the interval ends in another one.
#[inline(always)]
pub fn account(st: &mut ThreadState, iv: Interval, cfg: &ProbeConfig, sink: &mut impl RecordSink) {
    match charge_of(iv.start_ns, iv.end_ns, iv.spans, cfg) {
        Charge::Nothing => {}
        Charge::Episode { dur_ns } => {
            let mut bucket = ThreadBucket::default();
            add_interval(&mut bucket, &iv, dur_ns);
            sink.emit(
                record::EPISODE,
                iv.state,
                st.tgid,
                iv.start_ns,
                iv.end_ns,
                &bucket,
                iv.spans,
            );
        }
        Charge::Bucket {
            dur_ns,
            bucket_start_ns,
        } => {
            if st.bucket.start_ns != bucket_start_ns {
                flush_bucket(st, cfg, sink);
                st.bucket = ThreadBucket {
                    start_ns: bucket_start_ns,
                    ..ThreadBucket::default()
                };
            }
            add_interval(&mut st.bucket, &iv, dur_ns);
        }
    }
}

/// Streams the thread's bucket if it holds any time, and marks it empty. The record ends at
/// `start + bucket_ns` as configured, the end the agent also gives the live bucket.
#[inline(always)]
pub fn flush_bucket(st: &mut ThreadState, cfg: &ProbeConfig, sink: &mut impl RecordSink) {
    let b = &st.bucket;
    if b.start_ns == 0 || (b.on_cpu_ns | b.runq_ns | b.off_cpu_ns) == 0 {
        return;
    }
    sink.emit(
        record::BUCKET,
        0,
        st.tgid,
        b.start_ns,
        b.start_ns.wrapping_add(cfg.bucket_ns),
        b,
        SpanTags::NONE,
    );
    st.bucket.start_ns = 0;
}

/// The thread becomes runnable at `now_ns` with its cfs_rq in state `throttling`.
#[inline(always)]
pub fn begin_wait(st: &mut ThreadState, now_ns: u64, throttling: Option<Throttling>) {
    st.state = state::RUNQ;
    st.since_ns = now_ns;
    note_enqueue(st, throttling);
}

/// The state of a thread first seen as it is created (woken for the first time).
#[inline(always)]
pub fn new_thread(tgid: u32, now_ns: u64, throttling: Option<Throttling>) -> ThreadState {
    let mut st = ThreadState {
        tgid,
        ..ThreadState::default()
    };
    begin_wait(&mut st, now_ns, throttling);
    st
}

/// The steal clock of the thread's CPU now: `None` where the kernel keeps none (no
/// paravirtual steal accounting, or the read failed).
pub type StealClock = Option<u64>;

/// The part of the interval on CPU `[since, now)` (`dur_ns` long) the hypervisor took, from the
/// CPU's steal clock as it began (kept in `st`) and now; 0 when either reading is missing. A
/// thread does not change CPU while on one, so the two readings are of one clock.
#[inline(always)]
pub fn stolen_ns(st: &ThreadState, steal_clock: StealClock, dur_ns: u64) -> u64 {
    match steal_clock {
        Some(now) if st.steal_known != 0 => now.saturating_sub(st.steal_clock_ns).min(dur_ns),
        _ => 0,
    }
}

/// An interval on CPU begins with the CPU's steal clock at `steal_clock`.
#[inline(always)]
fn note_steal_clock(st: &mut ThreadState, steal_clock: StealClock) {
    st.steal_known = u32::from(steal_clock.is_some());
    st.steal_clock_ns = steal_clock.unwrap_or(0);
}

/// Charges the interval on CPU that ends at `now_ns`, if the thread was on one; `span_id` is
/// its context now, `steal_clock` its CPU's steal clock (the interval that follows on CPU, if
/// any, begins with it).
#[inline(always)]
pub fn close_on_cpu(
    st: &mut ThreadState,
    now_ns: u64,
    span_id: u64,
    steal_clock: StealClock,
    cfg: &ProbeConfig,
    sink: &mut impl RecordSink,
) {
    if st.state == state::ON_CPU {
        let iv = Interval {
            state: state::ON_CPU,
            start_ns: st.since_ns,
            end_ns: now_ns,
            spans: SpanTags {
                at_start: st.span_id,
                at_end: span_id,
            },
            wait: if st.reclaiming != 0 {
                wait::MEMORY
            } else {
                wait::OTHER
            },
            stolen_ns: stolen_ns(st, steal_clock, now_ns.saturating_sub(st.since_ns)),
            ..Interval::default()
        };
        account(st, iv, cfg, sink);
    }
    st.span_id = span_id;
    note_steal_clock(st, steal_clock);
}

/// The thread on its CPU begins (`begin`) or ends reclaiming memory at `now_ns`, with context
/// `span_id`: its time on CPU so far is charged as it was, and what follows is reclaim until
/// the end (a sleep inside is a memory stall: `in_memstall`).
#[inline(always)]
pub fn reclaim(
    st: &mut ThreadState,
    now_ns: u64,
    span_id: u64,
    begin: bool,
    steal_clock: StealClock,
    cfg: &ProbeConfig,
    sink: &mut impl RecordSink,
) {
    if st.state == state::ON_CPU {
        // Reclaim on CPU ends: a stall a thread it wakes may have waited for
        // (`memory_chain`). Here, not where any interval closes: `sched_switch`, which closes
        // most, stays within its verifier budget.
        if !begin && st.reclaiming != 0 {
            memory_chain::add_stall(&mut st.memory_stall, st.since_ns, now_ns);
        }
        close_on_cpu(st, now_ns, span_id, steal_clock, cfg, sink);
        st.since_ns = now_ns;
    }
    st.reclaiming = u32::from(begin);
}

/// The thread on its CPU was sampled at `now_ns` with context `span_id`. A change of context
/// ends its interval on CPU there, so that the time either side is charged to its own span:
/// a runtime that switches requests without leaving the CPU (async) is placed to within one
/// sampling period. The CPU's steal clock is read (`steal_clock`) only then.
#[inline(always)]
pub fn context_sample(
    st: &mut ThreadState,
    now_ns: u64,
    span_id: u64,
    steal_clock: impl FnOnce() -> StealClock,
    cfg: &ProbeConfig,
    sink: &mut impl RecordSink,
) {
    if st.state != state::ON_CPU || st.span_id == span_id || st.in_hook != 0 {
        return;
    }
    close_on_cpu(st, now_ns, span_id, steal_clock(), cfg, sink);
    st.since_ns = now_ns;
}

/// The thread (of process `tgid`) leaves its CPU at `now_ns`: still runnable if `preempted`
/// (its wait begins; `throttling` reads its cfs_rq), else blocking; `wait_reason` (one of
/// [`wait`]) says why, or for a preemption whether it was in a memory stall. `span_id` is its
/// published context as it leaves (0: none), which the interval it begins keeps;
/// `steal_clock` its CPU's steal clock.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn switch_out(
    st: &mut ThreadState,
    tgid: u32,
    preempted: bool,
    wait_reason: u32,
    now_ns: u64,
    span_id: u64,
    steal_clock: StealClock,
    cfg: &ProbeConfig,
    sink: &mut impl RecordSink,
    throttling: impl FnOnce() -> Option<Throttling>,
) {
    st.tgid = tgid;
    close_on_cpu(st, now_ns, span_id, steal_clock, cfg, sink);
    // Woken as it was leaving (the waker's `sched_waking` ran while it was on its way out): the
    // kernel queues it as soon as it is off its CPU, so it waits from here, and the cfs_rq's
    // throttling is read now, as for a preemption.
    let woken_as_it_left =
        st.woken_on_cpu_ns != 0 && now_ns.saturating_sub(st.woken_on_cpu_ns) <= WOKEN_AS_IT_LEFT_NS;
    st.woken_on_cpu_ns = 0;
    st.wait_reason = wait_reason;
    if preempted || woken_as_it_left {
        begin_wait(st, now_ns, throttling());
    } else {
        st.state = state::OFF_CPU;
        st.since_ns = now_ns;
    }
}

/// A wakeup that found the thread on its CPU this shortly before it left blocking raced with its
/// switch-out; one longer before was for a sleep it never began (it kept running).
pub const WOKEN_AS_IT_LEFT_NS: u64 = 1_000_000;

/// The thread gets a CPU at `now_ns`, whose steal clock reads `steal_clock`. If it was waiting,
/// the wait is charged: `neighbour` says who held the CPU since the wait began (its argument),
/// `throttling` reads the cfs_rq's state now (only for a wait that did not begin throttled).
///
/// A thread that gets a CPU while still known off it was woken as it was leaving its CPU (the
/// wakeup is seen in the waker, `sched_waking`, while the sleeper may still be on its way out),
/// and its switch-out was not recognised as such ([`WOKEN_AS_IT_LEFT_NS`]): it waited from its
/// switch-out on, whether throttled unknown.
#[inline(always)]
pub fn switch_in(
    st: &mut ThreadState,
    now_ns: u64,
    steal_clock: StealClock,
    cfg: &ProbeConfig,
    sink: &mut impl RecordSink,
    neighbour: impl FnOnce(u64) -> Neighbour,
    throttling: impl FnOnce() -> Option<Throttling>,
) {
    if st.state == state::OFF_CPU {
        let since_ns = st.since_ns;
        begin_wait(st, since_ns, None);
    }
    if st.state == state::RUNQ {
        let start_ns = st.since_ns;
        let wait_ns = now_ns.saturating_sub(start_ns);
        let neighbour = neighbour(start_ns);
        let throttled_ns = throttled_part_ns(st, wait_ns, neighbour.ns, throttling);
        let iv = Interval {
            state: state::RUNQ,
            start_ns,
            end_ns: now_ns,
            throttled_ns,
            neighbour,
            spans: SpanTags::steady(st.span_id),
            // Only a memory stall's reason says anything about the wait for a CPU.
            wait: if st.wait_reason == wait::MEMORY {
                wait::MEMORY
            } else {
                wait::OTHER
            },
            waker_tgid: 0,
            waker_tid: 0,
            io_dev: 0,
            stolen_ns: 0,
            memory_ns: 0,
        };
        account(st, iv, cfg, sink);
    }
    st.state = state::ON_CPU;
    st.since_ns = now_ns;
    note_steal_clock(st, steal_clock);
}

/// The thread is woken at `now_ns` by thread `waker_tid` of process `waker_tgid` (0: from a
/// timer or device interrupt) that carried `waker_delay` and, if watched, stalled on memory
/// in `waker_stall`: a blocked thread's time off CPU ends (the part its waker spent delayed
/// behind a neighbour is named, the part it spent throttled or stalled on memory kept apart)
/// and its wait begins; a thread not seen yet begins waiting; a
/// runnable or running one is unchanged.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn wakeup(
    st: &mut ThreadState,
    now_ns: u64,
    waker_tgid: u32,
    waker_tid: u32,
    waker_delay: &Delay,
    waker_stall: &Delay,
    cfg: &ProbeConfig,
    sink: &mut impl RecordSink,
    throttling: impl FnOnce() -> Option<Throttling>,
) {
    match st.state {
        state::OFF_CPU => {
            // A memory stall is memory's whoever ends it: the flusher or kswapd that was
            // delayed before it freed a page is memory pressure still, not the chain's. A lock's
            // releaser did the work the sleeper waited for, delays before the sleep included;
            // any other waker (a completion in a softirq on top of some task) is charged only
            // what it met during the sleep.
            let delayed_ns = match st.wait_reason {
                wait::MEMORY => 0,
                wait::LOCK => wake_chain::postponed_ns(waker_delay, st.since_ns, now_ns),
                _ => waker_delay.overlap_ns(st.since_ns, now_ns),
            };
            // The waker's own memory stall meanwhile is memory's (`memory_chain`); a stall of
            // the thread's own adds to what a thread it wakes may wait for.
            let memory_ns = match st.wait_reason {
                wait::MEMORY => {
                    memory_chain::add_stall(&mut st.memory_stall, st.since_ns, now_ns);
                    0
                }
                _ => memory_chain::stalled_ns(waker_stall, st.since_ns, now_ns, delayed_ns),
            };
            let iv = Interval {
                state: state::OFF_CPU,
                start_ns: st.since_ns,
                end_ns: now_ns,
                throttled_ns: waker_delay.throttled_part_ns(delayed_ns),
                wait: st.wait_reason,
                io_dev: st.io_dev,
                waker_tgid,
                waker_tid,
                neighbour: Neighbour {
                    tgid: waker_delay.neighbour_tgid,
                    tid: 0,
                    ns: delayed_ns,
                },
                spans: SpanTags::steady(st.span_id),
                stolen_ns: 0,
                memory_ns,
            };
            account(st, iv, cfg, sink);
            begin_wait(st, now_ns, throttling());
        }
        state::UNKNOWN => begin_wait(st, now_ns, throttling()),
        // Perhaps about to leave its CPU blocking, too late for the wakeup to find it off.
        state::ON_CPU => st.woken_on_cpu_ns = now_ns,
        _ => {}
    }
}

/// The thread exits at `now_ns` (it is on its CPU, whose steal clock reads `steal_clock`): its
/// last interval on CPU and its bucket are streamed, then an exit record so that the agent
/// forgets it.
#[inline(always)]
pub fn exit(
    st: &mut ThreadState,
    now_ns: u64,
    steal_clock: StealClock,
    cfg: &ProbeConfig,
    sink: &mut impl RecordSink,
) {
    close_on_cpu(st, now_ns, st.span_id, steal_clock, cfg, sink);
    flush_bucket(st, cfg, sink);
    sink.emit(
        record::EXIT,
        0,
        st.tgid,
        now_ns,
        now_ns,
        &st.bucket,
        SpanTags::NONE,
    );
}

mod sums;
use sums::add_interval;
pub use sums::add_to_bucket;

#[cfg(test)]
mod tests;
