//! Where a watched thread's time goes. Each scheduler event closes the interval of the state the
//! thread was in ([`state`]) and opens the next; a closed interval is streamed as an episode if
//! it is long, else summed into the thread's current bucket, which is streamed when the next
//! interval ends in another bucket.

use core::num::NonZeroU64;

use super::{
    neighbour::Neighbour,
    throttle::{Throttling, note_enqueue, throttled_part_ns},
};
use crate::{
    ProbeConfig,
    thread::{ThreadBucket, ThreadState, record, state},
};

/// Where records go: the kernel writes them to the `SCHED_EVENTS` ring buffer for the thread
/// being accounted.
pub trait RecordSink {
    /// A record of `kind` ([`record`]); `state` is the episode's state, 0 for other kinds.
    fn emit(
        &mut self,
        kind: u32,
        state: u32,
        tgid: u32,
        start_ns: u64,
        end_ns: u64,
        bucket: &ThreadBucket,
    );
}

/// An interval one thread spent in one state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interval {
    /// One of [`state`].
    pub state: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    /// For a run-queue wait: the part due to throttling.
    pub throttled_ns: u64,
    /// For a run-queue wait: who held the CPU meanwhile.
    pub neighbour: Neighbour,
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
#[inline(always)]
pub fn charge_of(start_ns: u64, end_ns: u64, cfg: &ProbeConfig) -> Charge {
    let dur_ns = end_ns.saturating_sub(start_ns);
    if dur_ns == 0 || start_ns == 0 {
        return Charge::Nothing;
    }
    if dur_ns >= cfg.episode_threshold_ns {
        return Charge::Episode { dur_ns };
    }
    Charge::Bucket {
        dur_ns,
        bucket_start_ns: bucket_start_ns(end_ns, bucket_width_ns(cfg)),
    }
}

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
                b.neighbour_tid = n.tid;
                b.neighbour_ns = n.ns;
            }
        }
        _ => b.off_cpu_ns = b.off_cpu_ns.wrapping_add(dur_ns),
    }
}

/// Charges a closed interval to the thread: an episode if long, else its bucket, streaming the
/// bucket first if the interval ends in another one.
#[inline(always)]
pub fn account(st: &mut ThreadState, iv: Interval, cfg: &ProbeConfig, sink: &mut impl RecordSink) {
    match charge_of(iv.start_ns, iv.end_ns, cfg) {
        Charge::Nothing => {}
        Charge::Episode { dur_ns } => {
            let mut bucket = ThreadBucket::default();
            add_to_bucket(&mut bucket, iv.state, dur_ns, iv.throttled_ns, iv.neighbour);
            sink.emit(
                record::EPISODE,
                iv.state,
                st.tgid,
                iv.start_ns,
                iv.end_ns,
                &bucket,
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
            add_to_bucket(
                &mut st.bucket,
                iv.state,
                dur_ns,
                iv.throttled_ns,
                iv.neighbour,
            );
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

/// Charges the interval on CPU that ends at `now_ns`, if the thread was on one.
#[inline(always)]
pub fn close_on_cpu(
    st: &mut ThreadState,
    now_ns: u64,
    cfg: &ProbeConfig,
    sink: &mut impl RecordSink,
) {
    if st.state == state::ON_CPU {
        let iv = Interval {
            state: state::ON_CPU,
            start_ns: st.since_ns,
            end_ns: now_ns,
            ..Interval::default()
        };
        account(st, iv, cfg, sink);
    }
}

/// The thread (of process `tgid`) leaves its CPU at `now_ns`: still runnable if `preempted`
/// (its wait begins; `throttling` reads its cfs_rq), else blocking.
#[inline(always)]
pub fn switch_out(
    st: &mut ThreadState,
    tgid: u32,
    preempted: bool,
    now_ns: u64,
    cfg: &ProbeConfig,
    sink: &mut impl RecordSink,
    throttling: impl FnOnce() -> Option<Throttling>,
) {
    st.tgid = tgid;
    close_on_cpu(st, now_ns, cfg, sink);
    if preempted {
        begin_wait(st, now_ns, throttling());
    } else {
        st.state = state::OFF_CPU;
        st.since_ns = now_ns;
    }
}

/// The thread gets a CPU at `now_ns`. If it was waiting, the wait is charged: `neighbour` says
/// who held the CPU since the wait began (its argument), `throttling` reads the cfs_rq's state
/// now (only for a wait that did not begin throttled).
#[inline(always)]
pub fn switch_in(
    st: &mut ThreadState,
    now_ns: u64,
    cfg: &ProbeConfig,
    sink: &mut impl RecordSink,
    neighbour: impl FnOnce(u64) -> Neighbour,
    throttling: impl FnOnce() -> Option<Throttling>,
) {
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
        };
        account(st, iv, cfg, sink);
    }
    st.state = state::ON_CPU;
    st.since_ns = now_ns;
}

/// The thread is woken at `now_ns`: a blocked thread's time off CPU ends and its wait begins; a
/// thread not seen yet begins waiting; a runnable or running one is unchanged.
#[inline(always)]
pub fn wakeup(
    st: &mut ThreadState,
    now_ns: u64,
    cfg: &ProbeConfig,
    sink: &mut impl RecordSink,
    throttling: impl FnOnce() -> Option<Throttling>,
) {
    match st.state {
        state::OFF_CPU => {
            let iv = Interval {
                state: state::OFF_CPU,
                start_ns: st.since_ns,
                end_ns: now_ns,
                ..Interval::default()
            };
            account(st, iv, cfg, sink);
            begin_wait(st, now_ns, throttling());
        }
        state::UNKNOWN => begin_wait(st, now_ns, throttling()),
        _ => {}
    }
}

/// The thread exits at `now_ns` (it is on its CPU): its last interval on CPU and its bucket are
/// streamed, then an exit record so that the agent forgets it.
#[inline(always)]
pub fn exit(st: &mut ThreadState, now_ns: u64, cfg: &ProbeConfig, sink: &mut impl RecordSink) {
    close_on_cpu(st, now_ns, cfg, sink);
    flush_bucket(st, cfg, sink);
    sink.emit(record::EXIT, 0, st.tgid, now_ns, now_ns, &st.bucket);
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::thread::SchedRecord;

    const MS: u64 = 1_000_000;
    /// A boot-time clock well past its first bucket.
    const T0: u64 = 1_000 * MS;

    const CFG: ProbeConfig = ProbeConfig {
        episode_threshold_ns: MS,
        bucket_ns: 10 * MS,
        node_summary: 1,
        _reserved: 0,
    };

    #[derive(Default)]
    struct Records(Vec<SchedRecord>);

    impl RecordSink for Records {
        fn emit(
            &mut self,
            kind: u32,
            state: u32,
            tgid: u32,
            start_ns: u64,
            end_ns: u64,
            bucket: &ThreadBucket,
        ) {
            self.0.push(SchedRecord {
                kind,
                state,
                tid: 0,
                tgid,
                start_ns,
                end_ns,
                bucket: *bucket,
            });
        }
    }

    fn in_state(state: u32, since_ns: u64) -> ThreadState {
        ThreadState {
            state,
            tgid: 50,
            since_ns,
            ..ThreadState::default()
        }
    }

    fn bucket(start_ns: u64) -> ThreadBucket {
        ThreadBucket {
            start_ns,
            ..ThreadBucket::default()
        }
    }

    fn no_neighbour(_: u64) -> Neighbour {
        Neighbour::default()
    }

    fn unthrottled() -> Option<Throttling> {
        None
    }

    #[test]
    fn empty_intervals_and_unseen_starts_are_not_charged() {
        assert_eq!(charge_of(T0, T0, &CFG), Charge::Nothing);
        // The clock went backwards.
        assert_eq!(charge_of(T0 + 5, T0, &CFG), Charge::Nothing);
        assert_eq!(charge_of(u64::MAX, 0, &CFG), Charge::Nothing);
        // A start of 0 was never seen, however long ago it claims to be.
        assert_eq!(charge_of(0, T0, &CFG), Charge::Nothing);
        assert_eq!(charge_of(0, 1, &CFG), Charge::Nothing);
    }

    #[test]
    fn the_episode_threshold_is_inclusive() {
        assert_eq!(charge_of(T0, T0 + MS, &CFG), Charge::Episode { dur_ns: MS });
        assert_eq!(
            charge_of(T0, T0 + MS - 1, &CFG),
            Charge::Bucket {
                dur_ns: MS - 1,
                bucket_start_ns: T0
            }
        );
        assert_eq!(
            charge_of(1, u64::MAX, &CFG),
            Charge::Episode {
                dur_ns: u64::MAX - 1
            }
        );
    }

    #[test]
    fn a_zero_threshold_makes_every_interval_an_episode() {
        let cfg = ProbeConfig {
            episode_threshold_ns: 0,
            ..CFG
        };
        assert_eq!(charge_of(T0, T0 + 1, &cfg), Charge::Episode { dur_ns: 1 });
        assert_eq!(charge_of(T0, T0, &cfg), Charge::Nothing);
    }

    #[test]
    fn a_short_interval_belongs_to_the_bucket_it_ends_in() {
        // Starts in the bucket at T0, ends exactly on the next boundary: the next bucket's.
        let end_ns = T0 + 10 * MS;
        assert_eq!(
            charge_of(end_ns - 1_000, end_ns, &CFG),
            Charge::Bucket {
                dur_ns: 1_000,
                bucket_start_ns: end_ns
            }
        );
        assert_eq!(
            charge_of(end_ns - 1_000, end_ns - 1, &CFG),
            Charge::Bucket {
                dur_ns: 999,
                bucket_start_ns: T0
            }
        );
    }

    #[test]
    fn a_zero_bucket_width_falls_back_to_10_ms() {
        let cfg = ProbeConfig {
            bucket_ns: 0,
            ..CFG
        };
        assert_eq!(bucket_width_ns(&cfg), DEFAULT_BUCKET_NS);
        assert_eq!(DEFAULT_BUCKET_NS.get(), 10 * MS);
        assert_eq!(bucket_width_ns(&CFG).get(), 10 * MS);
        assert_eq!(
            charge_of(T0 + 25 * MS, T0 + 25 * MS + 10, &cfg),
            Charge::Bucket {
                dur_ns: 10,
                bucket_start_ns: T0 + 20 * MS
            }
        );
    }

    #[test]
    fn buckets_are_aligned_to_the_clock() {
        let width = NonZeroU64::new(7).unwrap();
        for t in 0..50u64 {
            let start = bucket_start_ns(t, width);
            assert!(
                start <= t && t < start + 7 && start.is_multiple_of(7),
                "{t}"
            );
        }
        assert_eq!(
            bucket_start_ns(u64::MAX, NonZeroU64::MIN.saturating_add(1)),
            u64::MAX - 1
        );
        assert_eq!(bucket_start_ns(u64::MAX, NonZeroU64::MAX), u64::MAX);
    }

    #[test]
    fn time_is_summed_by_state() {
        let mut b = bucket(T0);
        let n = Neighbour::default();
        add_to_bucket(&mut b, state::ON_CPU, 1, 0, n);
        add_to_bucket(&mut b, state::RUNQ, 20, 5, n);
        add_to_bucket(&mut b, state::OFF_CPU, 300, 0, n);
        add_to_bucket(&mut b, state::ON_CPU, 4_000, 0, n);
        assert_eq!(
            (b.on_cpu_ns, b.runq_ns, b.throttled_ns, b.off_cpu_ns),
            (4_001, 20, 5, 300)
        );
        // The throttled part only comes with waits.
        add_to_bucket(&mut b, state::ON_CPU, 1, 99, n);
        assert_eq!(b.throttled_ns, 5);
    }

    #[test]
    fn a_state_out_of_range_counts_as_off_cpu() {
        let mut b = bucket(T0);
        add_to_bucket(&mut b, state::UNKNOWN, 3, 0, Neighbour::default());
        add_to_bucket(&mut b, 99, 4, 0, Neighbour::default());
        assert_eq!(b.off_cpu_ns, 7);
    }

    #[test]
    fn sums_wrap_instead_of_trapping() {
        let mut b = ThreadBucket {
            runq_ns: u64::MAX,
            throttled_ns: u64::MAX,
            neighbour_tgid: 3,
            neighbour_ns: u64::MAX,
            ..bucket(T0)
        };
        let n = Neighbour {
            tgid: 3,
            tid: 3,
            ns: 2,
        };
        add_to_bucket(&mut b, state::RUNQ, 2, 2, n);
        assert_eq!((b.runq_ns, b.throttled_ns, b.neighbour_ns), (1, 1, 1));
    }

    #[test]
    fn a_bucket_names_its_biggest_single_neighbour() {
        let mut b = bucket(T0);
        let n = |tgid, tid, ns| Neighbour { tgid, tid, ns };
        add_to_bucket(&mut b, state::RUNQ, 100, 0, n(7, 71, 30));
        assert_eq!(
            (b.neighbour_tgid, b.neighbour_tid, b.neighbour_ns),
            (7, 71, 30)
        );
        // The same process again: summed, its first thread stays named.
        add_to_bucket(&mut b, state::RUNQ, 100, 0, n(7, 72, 30));
        assert_eq!(
            (b.neighbour_tgid, b.neighbour_tid, b.neighbour_ns),
            (7, 71, 60)
        );
        // Another process, not bigger than the sum so far (even exactly as big): ignored.
        add_to_bucket(&mut b, state::RUNQ, 100, 0, n(8, 81, 60));
        assert_eq!((b.neighbour_tgid, b.neighbour_ns), (7, 60));
        // Bigger in one wait: it replaces the first.
        add_to_bucket(&mut b, state::RUNQ, 100, 0, n(8, 81, 61));
        assert_eq!(
            (b.neighbour_tgid, b.neighbour_tid, b.neighbour_ns),
            (8, 81, 61)
        );
        // A wait nobody took the CPU in changes nothing, whoever it names.
        add_to_bucket(&mut b, state::RUNQ, 100, 0, n(9, 91, 0));
        assert_eq!((b.neighbour_tgid, b.neighbour_ns), (8, 61));
        assert_eq!(b.runq_ns, 500);
        // Neighbours only come with waits.
        add_to_bucket(&mut b, state::ON_CPU, 100, 0, n(8, 81, 1_000));
        assert_eq!(b.neighbour_ns, 61);
    }

    #[test]
    fn a_long_interval_is_an_episode_and_leaves_the_bucket_alone() {
        let mut st = in_state(state::ON_CPU, T0);
        st.bucket = ThreadBucket {
            on_cpu_ns: 7,
            ..bucket(T0)
        };
        let before = st.bucket;
        let mut out = Records::default();
        let iv = Interval {
            state: state::RUNQ,
            start_ns: T0 + 100,
            end_ns: T0 + 100 + 3 * MS,
            throttled_ns: MS,
            neighbour: Neighbour {
                tgid: 8,
                tid: 81,
                ns: 2 * MS,
            },
        };
        account(&mut st, iv, &CFG, &mut out);
        assert_eq!(st.bucket, before);
        assert_eq!(
            out.0,
            [SchedRecord {
                kind: record::EPISODE,
                state: state::RUNQ,
                tid: 0,
                tgid: 50,
                start_ns: T0 + 100,
                end_ns: T0 + 100 + 3 * MS,
                bucket: ThreadBucket {
                    runq_ns: 3 * MS,
                    throttled_ns: MS,
                    neighbour_ns: 2 * MS,
                    neighbour_tgid: 8,
                    neighbour_tid: 81,
                    ..ThreadBucket::default()
                },
            }]
        );
    }

    #[test]
    fn an_interval_ending_in_a_new_bucket_streams_the_old_one_first() {
        let mut st = in_state(state::ON_CPU, T0);
        let mut out = Records::default();
        let on_cpu = |start_ns, end_ns| Interval {
            state: state::ON_CPU,
            start_ns,
            end_ns,
            ..Interval::default()
        };
        account(&mut st, on_cpu(T0 + 1_000, T0 + 2_000), &CFG, &mut out);
        account(&mut st, on_cpu(T0 + 3_000, T0 + 3_500), &CFG, &mut out);
        assert!(out.0.is_empty());
        assert_eq!(st.bucket.start_ns, T0);
        assert_eq!(st.bucket.on_cpu_ns, 1_500);

        let next = T0 + 10 * MS;
        account(&mut st, on_cpu(next - 100, next + 100), &CFG, &mut out);
        assert_eq!(out.0.len(), 1);
        let r = out.0[0];
        assert_eq!((r.kind, r.state, r.tgid), (record::BUCKET, 0, 50));
        assert_eq!((r.start_ns, r.end_ns), (T0, T0 + 10 * MS));
        assert_eq!(r.bucket.on_cpu_ns, 1_500);
        assert_eq!(
            st.bucket,
            ThreadBucket {
                on_cpu_ns: 200,
                ..bucket(next)
            }
        );
    }

    #[test]
    fn a_bucket_without_time_is_not_streamed() {
        // A bucket holding only a neighbour or throttling (impossible, but) or nothing at all.
        let mut st = in_state(state::ON_CPU, T0);
        st.bucket = ThreadBucket {
            throttled_ns: 5,
            neighbour_ns: 5,
            ..bucket(T0)
        };
        let mut out = Records::default();
        flush_bucket(&mut st, &CFG, &mut out);
        assert!(out.0.is_empty());
        assert_eq!(st.bucket.start_ns, T0);

        for time in [
            ThreadBucket {
                on_cpu_ns: 1,
                ..bucket(T0)
            },
            ThreadBucket {
                runq_ns: 1,
                ..bucket(T0)
            },
            ThreadBucket {
                off_cpu_ns: 1,
                ..bucket(T0)
            },
        ] {
            st.bucket = time;
            flush_bucket(&mut st, &CFG, &mut out);
            assert_eq!(st.bucket.start_ns, 0);
            // Streamed once: an emptied bucket is not streamed again.
            flush_bucket(&mut st, &CFG, &mut out);
        }
        assert_eq!(out.0.len(), 3);
    }

    #[test]
    fn a_streamed_bucket_ends_one_configured_width_after_its_start() {
        let mut st = in_state(state::ON_CPU, T0);
        let mut out = Records::default();
        for bucket_ns in [10 * MS, 3, 0] {
            st.bucket = ThreadBucket {
                on_cpu_ns: 1,
                ..bucket(T0)
            };
            let cfg = ProbeConfig { bucket_ns, ..CFG };
            flush_bucket(&mut st, &cfg, &mut out);
        }
        let ends: Vec<u64> = out.0.iter().map(|r| r.end_ns - r.start_ns).collect();
        assert_eq!(ends, [10 * MS, 3, 0]);
    }

    #[test]
    fn a_clock_going_back_a_bucket_streams_the_current_one() {
        let mut st = in_state(state::ON_CPU, T0);
        st.bucket = ThreadBucket {
            on_cpu_ns: 1,
            ..bucket(T0 + 10 * MS)
        };
        let mut out = Records::default();
        let iv = Interval {
            state: state::OFF_CPU,
            start_ns: T0 + 5,
            end_ns: T0 + 10,
            ..Interval::default()
        };
        account(&mut st, iv, &CFG, &mut out);
        assert_eq!(out.0.len(), 1);
        assert_eq!(out.0[0].start_ns, T0 + 10 * MS);
        assert_eq!(st.bucket.start_ns, T0);
        assert_eq!(st.bucket.off_cpu_ns, 5);
    }

    #[test]
    fn intervals_ending_in_the_clocks_first_bucket_are_never_streamed() {
        // Its start, 0, reads as an empty bucket; a boot-time clock is never that young.
        let mut st = in_state(state::ON_CPU, 0);
        let mut out = Records::default();
        let iv = Interval {
            state: state::ON_CPU,
            start_ns: 100,
            end_ns: 200,
            ..Interval::default()
        };
        account(&mut st, iv, &CFG, &mut out);
        assert_eq!((st.bucket.start_ns, st.bucket.on_cpu_ns), (0, 100));
        flush_bucket(&mut st, &CFG, &mut out);
        assert!(out.0.is_empty());
    }

    /// Every state a thread's record can hold, and one no program writes.
    const STATES: [u32; 5] = [
        state::UNKNOWN,
        state::ON_CPU,
        state::RUNQ,
        state::OFF_CPU,
        42,
    ];

    /// The single interval (state, duration) a transition charged, if any.
    fn charged(out: &Records) -> Option<(u32, u64)> {
        assert!(out.0.len() <= 1, "{:?}", out.0);
        let r = out.0.first()?;
        assert_eq!(r.kind, record::EPISODE);
        let b = r.bucket;
        Some((r.state, b.on_cpu_ns + b.runq_ns + b.off_cpu_ns))
    }

    #[test]
    fn switching_out_closes_time_on_cpu_and_starts_a_wait_or_time_off_cpu() {
        for from in STATES {
            for preempted in [false, true] {
                let mut st = in_state(from, T0);
                let mut out = Records::default();
                let mut reads = 0;
                let now = T0 + 2 * MS;
                switch_out(&mut st, 77, preempted, now, &CFG, &mut out, || {
                    reads += 1;
                    unthrottled()
                });
                let closed = (from == state::ON_CPU).then_some((state::ON_CPU, 2 * MS));
                assert_eq!(charged(&out), closed, "from {from}");
                let to = if preempted {
                    state::RUNQ
                } else {
                    state::OFF_CPU
                };
                assert_eq!((st.state, st.since_ns, st.tgid), (to, now, 77));
                // The cfs_rq is only read for a wait.
                assert_eq!(reads, u32::from(preempted));
            }
        }
    }

    #[test]
    fn switching_in_closes_a_wait_and_starts_time_on_cpu() {
        for from in STATES {
            let mut st = in_state(from, T0);
            let mut out = Records::default();
            let (mut asked, mut reads) = (None, 0);
            let now = T0 + 2 * MS;
            switch_in(
                &mut st,
                now,
                &CFG,
                &mut out,
                |start_ns| {
                    asked = Some(start_ns);
                    Neighbour::default()
                },
                || {
                    reads += 1;
                    unthrottled()
                },
            );
            let waited = from == state::RUNQ;
            assert_eq!(charged(&out), waited.then_some((state::RUNQ, 2 * MS)));
            // Only a wait asks who held the CPU (since it began) and reads the cfs_rq.
            assert_eq!(asked, waited.then_some(T0));
            assert_eq!(reads, u32::from(waited));
            assert_eq!((st.state, st.since_ns), (state::ON_CPU, now));
        }
    }

    #[test]
    fn a_wakeup_ends_time_off_cpu_and_starts_a_wait() {
        for from in STATES {
            let mut st = in_state(from, T0);
            let before = st;
            let mut out = Records::default();
            let mut reads = 0;
            let now = T0 + 2 * MS;
            wakeup(&mut st, now, &CFG, &mut out, || {
                reads += 1;
                unthrottled()
            });
            let closed = (from == state::OFF_CPU).then_some((state::OFF_CPU, 2 * MS));
            assert_eq!(charged(&out), closed, "from {from}");
            if from == state::OFF_CPU || from == state::UNKNOWN {
                assert_eq!((st.state, st.since_ns), (state::RUNQ, now));
                assert_eq!(reads, 1);
            } else {
                // Already runnable or running (or a state no program writes): a wakeup
                // changes nothing.
                assert_eq!(st, before);
                assert_eq!(reads, 0);
            }
        }
    }

    #[test]
    fn a_thread_registered_by_the_agent_starts_accounting_at_its_first_event() {
        // UNKNOWN's `since_ns` is 0: nothing before the first event is charged.
        let mut st = ThreadState::default();
        let mut out = Records::default();
        switch_in(&mut st, T0, &CFG, &mut out, no_neighbour, unthrottled);
        assert!(out.0.is_empty());
        assert_eq!((st.state, st.since_ns), (state::ON_CPU, T0));
        switch_out(&mut st, 5, false, T0 + 2 * MS, &CFG, &mut out, unthrottled);
        assert_eq!(charged(&out), Some((state::ON_CPU, 2 * MS)));
    }

    #[test]
    fn a_wait_is_charged_its_neighbour_and_throttling() {
        let at_enqueue = Throttling {
            cfs_rq: 0x1000,
            throttle_count: 0,
            throttled_self_ns: 40 * MS,
        };
        let mut st = ThreadState::default();
        wakeup(&mut st, T0, &CFG, &mut Records::default(), || {
            Some(at_enqueue)
        });
        let mut out = Records::default();
        // 5 ms wait; the cfs_rq was throttled 1 ms of it by its clock; a neighbour held the CPU
        // 3 ms: the other 2 ms are the quota's.
        let neighbour = Neighbour {
            tgid: 9,
            tid: 91,
            ns: 3 * MS,
        };
        let end = Some(Throttling {
            throttled_self_ns: 41 * MS,
            ..at_enqueue
        });
        switch_in(&mut st, T0 + 5 * MS, &CFG, &mut out, |_| neighbour, || end);
        let r = out.0[0];
        assert_eq!((r.kind, r.state), (record::EPISODE, state::RUNQ));
        assert_eq!((r.start_ns, r.end_ns), (T0, T0 + 5 * MS));
        assert_eq!((r.bucket.runq_ns, r.bucket.throttled_ns), (5 * MS, 2 * MS));
        assert_eq!(
            (
                r.bucket.neighbour_tgid,
                r.bucket.neighbour_tid,
                r.bucket.neighbour_ns
            ),
            (9, 91, 3 * MS)
        );
    }

    #[test]
    fn a_wait_that_began_throttled_is_throttled_whole() {
        let mut st = in_state(state::ON_CPU, T0);
        let throttled = Some(Throttling {
            cfs_rq: 0x1000,
            throttle_count: 1,
            throttled_self_ns: 0,
        });
        switch_out(
            &mut st,
            5,
            true,
            T0 + 10,
            &CFG,
            &mut Records::default(),
            || throttled,
        );
        let mut out = Records::default();
        let neighbour = |_| Neighbour {
            tgid: 9,
            tid: 91,
            ns: 400,
        };
        switch_in(&mut st, T0 + 1_010, &CFG, &mut out, neighbour, || {
            unreachable!("a wait that began throttled needs no second read")
        });
        assert_eq!((st.bucket.runq_ns, st.bucket.throttled_ns), (1_000, 1_000));
        assert_eq!(st.bucket.neighbour_ns, 400);
    }

    #[test]
    fn a_wait_that_ends_before_it_began_is_not_charged() {
        let mut st = in_state(state::RUNQ, T0);
        let mut out = Records::default();
        let mut asked = None;
        switch_in(
            &mut st,
            T0 - 1,
            &CFG,
            &mut out,
            |start_ns| {
                asked = Some(start_ns);
                Neighbour::default()
            },
            unthrottled,
        );
        assert!(out.0.is_empty());
        assert_eq!(st.bucket, ThreadBucket::default());
        assert_eq!(asked, Some(T0));
        assert_eq!((st.state, st.since_ns), (state::ON_CPU, T0 - 1));
    }

    #[test]
    fn a_new_thread_begins_waiting_with_its_cfs_rq() {
        let t = Throttling {
            cfs_rq: 0x2000,
            throttle_count: 3,
            throttled_self_ns: 77,
        };
        let st = new_thread(12, T0, Some(t));
        assert_eq!(
            st,
            ThreadState {
                state: state::RUNQ,
                tgid: 12,
                since_ns: T0,
                cfs_rq: 0x2000,
                throttled_self_ns_at_enqueue: 77,
                throttled_at_enqueue: 3,
                ..ThreadState::default()
            }
        );
        let st = new_thread(12, T0, None);
        assert_eq!(
            (st.state, st.cfs_rq, st.throttled_at_enqueue),
            (state::RUNQ, 0, 0)
        );
    }

    #[test]
    fn exit_streams_the_last_time_on_cpu_then_the_bucket_then_an_exit_record() {
        let mut st = in_state(state::ON_CPU, T0 + 100);
        st.bucket = ThreadBucket {
            off_cpu_ns: 30,
            ..bucket(T0)
        };
        let mut out = Records::default();
        let now = T0 + 10 * MS + 50;
        exit(&mut st, now, &CFG, &mut out);
        let kinds: Vec<u32> = out.0.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [record::EPISODE, record::BUCKET, record::EXIT]);
        assert_eq!(out.0[0].bucket.on_cpu_ns, now - T0 - 100);
        assert_eq!(out.0[1].bucket.off_cpu_ns, 30);
        assert_eq!(
            (out.0[2].start_ns, out.0[2].end_ns, out.0[2].tgid),
            (now, now, 50)
        );
    }

    #[test]
    fn exit_off_cpu_streams_only_the_exit_record() {
        // A thread exits on its CPU; were it seen off it, nothing more is charged.
        let mut st = in_state(state::OFF_CPU, T0);
        let mut out = Records::default();
        exit(&mut st, T0 + 5 * MS, &CFG, &mut out);
        assert_eq!(out.0.len(), 1);
        assert_eq!(out.0[0].kind, record::EXIT);
    }

    /// A small deterministic generator: the tests need variety, not quality.
    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn every_nanosecond_of_a_threads_life_is_charged_exactly_once() {
        for seed in 1..=200u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let threshold_ns = [1, 500, MS, 100 * MS][rng.below(4) as usize];
            let cfg = ProbeConfig {
                episode_threshold_ns: threshold_ns,
                bucket_ns: [0, 1_000, 10 * MS][rng.below(3) as usize],
                ..CFG
            };
            let mut out = Records::default();
            let born_ns = T0 + rng.below(MS);
            let mut now = born_ns;
            let throttled = rng.below(2) == 0;
            let cfs_rq = move || {
                Some(Throttling {
                    cfs_rq: 0x1000,
                    throttle_count: u32::from(throttled),
                    throttled_self_ns: 0,
                })
            };
            let mut st = new_thread(50, now, cfs_rq());
            for _ in 0..500 {
                // Steps from nothing to well past a bucket, most of them short.
                now += [
                    0,
                    1,
                    rng.below(2_000),
                    rng.below(3 * MS),
                    rng.below(30 * MS),
                ][rng.below(5) as usize];
                match (st.state, rng.below(4)) {
                    (state::RUNQ, 0) => wakeup(&mut st, now, &cfg, &mut out, cfs_rq),
                    (state::RUNQ, _) => {
                        let neighbour = |start_ns: u64| Neighbour {
                            tgid: 9,
                            tid: 9,
                            ns: (now - start_ns) / 2,
                        };
                        switch_in(&mut st, now, &cfg, &mut out, neighbour, cfs_rq)
                    }
                    (state::ON_CPU, 0) => wakeup(&mut st, now, &cfg, &mut out, cfs_rq),
                    (state::ON_CPU, k) => {
                        switch_out(&mut st, 50, k == 1, now, &cfg, &mut out, cfs_rq)
                    }
                    (_, _) => wakeup(&mut st, now, &cfg, &mut out, cfs_rq),
                }
            }
            // Threads exit on a CPU.
            if st.state != state::ON_CPU {
                now += 1;
                if st.state == state::OFF_CPU {
                    wakeup(&mut st, now, &cfg, &mut out, cfs_rq);
                }
                now += 1;
                switch_in(&mut st, now, &cfg, &mut out, no_neighbour, cfs_rq);
            }
            now += 1;
            exit(&mut st, now, &cfg, &mut out);

            let (exit_rec, streamed) = out.0.split_last().unwrap();
            assert_eq!(exit_rec.kind, record::EXIT);
            let mut total_ns = 0;
            for r in streamed {
                let b = r.bucket;
                assert!(r.kind == record::EPISODE || r.kind == record::BUCKET);
                assert!(b.throttled_ns <= b.runq_ns, "{r:?}");
                assert!(b.neighbour_ns <= b.runq_ns, "{r:?}");
                if throttled {
                    assert_eq!(b.throttled_ns, b.runq_ns, "{r:?}");
                }
                if r.kind == record::EPISODE {
                    assert!(r.end_ns - r.start_ns >= threshold_ns, "{r:?}");
                    assert_eq!(
                        r.end_ns - r.start_ns,
                        b.on_cpu_ns + b.runq_ns + b.off_cpu_ns
                    );
                } else {
                    let width = bucket_width_ns(&cfg).get();
                    assert!(r.start_ns.is_multiple_of(width));
                }
                total_ns += b.on_cpu_ns + b.runq_ns + b.off_cpu_ns;
            }
            assert_eq!(total_ns, now - born_ns, "seed {seed}");
        }
    }
}
