//! Episodes, buckets and their rollover.

use super::*;

#[test]
fn empty_intervals_and_unseen_starts_are_not_charged() {
    assert_eq!(charge_of(T0, T0, SpanTags::NONE, &CFG), Charge::Nothing);
    // The clock went backwards.
    assert_eq!(charge_of(T0 + 5, T0, SpanTags::NONE, &CFG), Charge::Nothing);
    assert_eq!(
        charge_of(u64::MAX, 0, SpanTags::NONE, &CFG),
        Charge::Nothing
    );
    // A start of 0 was never seen, however long ago it claims to be.
    assert_eq!(charge_of(0, T0, SpanTags::NONE, &CFG), Charge::Nothing);
    assert_eq!(charge_of(0, 1, SpanTags::NONE, &CFG), Charge::Nothing);
}

#[test]
fn the_episode_threshold_is_inclusive() {
    assert_eq!(
        charge_of(T0, T0 + MS, SpanTags::NONE, &CFG),
        Charge::Episode { dur_ns: MS }
    );
    assert_eq!(
        charge_of(T0, T0 + MS - 1, SpanTags::NONE, &CFG),
        Charge::Bucket {
            dur_ns: MS - 1,
            bucket_start_ns: T0
        }
    );
    assert_eq!(
        charge_of(1, u64::MAX, SpanTags::NONE, &CFG),
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
    assert_eq!(
        charge_of(T0, T0 + 1, SpanTags::NONE, &cfg),
        Charge::Episode { dur_ns: 1 }
    );
    assert_eq!(charge_of(T0, T0, SpanTags::NONE, &cfg), Charge::Nothing);
}

#[test]
fn a_short_interval_belongs_to_the_bucket_it_ends_in() {
    // Starts in the bucket at T0, ends exactly on the next boundary: the next bucket's.
    let end_ns = T0 + 10 * MS;
    assert_eq!(
        charge_of(end_ns - 1_000, end_ns, SpanTags::NONE, &CFG),
        Charge::Bucket {
            dur_ns: 1_000,
            bucket_start_ns: end_ns
        }
    );
    assert_eq!(
        charge_of(end_ns - 1_000, end_ns - 1, SpanTags::NONE, &CFG),
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
        charge_of(T0 + 25 * MS, T0 + 25 * MS + 10, SpanTags::NONE, &cfg),
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
    assert_eq!((b.neighbour_tgid, b.neighbour_ns), (7, 30));
    // The same process again, another of its threads: summed.
    add_to_bucket(&mut b, state::RUNQ, 100, 0, n(7, 72, 30));
    assert_eq!((b.neighbour_tgid, b.neighbour_ns), (7, 60));
    // Another process, not bigger than the sum so far (even exactly as big): ignored.
    add_to_bucket(&mut b, state::RUNQ, 100, 0, n(8, 81, 60));
    assert_eq!((b.neighbour_tgid, b.neighbour_ns), (7, 60));
    // Bigger in one wait: it replaces the first.
    add_to_bucket(&mut b, state::RUNQ, 100, 0, n(8, 81, 61));
    assert_eq!((b.neighbour_tgid, b.neighbour_ns), (8, 61));
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
        spans: SpanTags::NONE,
        wait: wait::OTHER,
        waker_tgid: 0,
        waker_tid: 0,
        io_dev: 0,
        stolen_ns: 0,
        memory_ns: 0,
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
                ..ThreadBucket::default()
            },
            spans: SpanTags::NONE,
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
