//! Which interval each scheduler event closes, and a thread's whole life.

use super::*;

/// Every state a thread's record can hold, and one no program writes.
const STATES: [u32; 5] = [
    state::UNKNOWN,
    state::ON_CPU,
    state::RUNQ,
    state::OFF_CPU,
    42,
];

#[test]
fn switching_out_closes_time_on_cpu_and_starts_a_wait_or_time_off_cpu() {
    for from in STATES {
        for preempted in [false, true] {
            let mut st = in_state(from, T0);
            let mut out = Records::default();
            let mut reads = 0;
            let now = T0 + 2 * MS;
            switch_out(
                &mut st,
                77,
                preempted,
                wait::OTHER,
                now,
                0,
                None,
                &CFG,
                &mut out,
                || {
                    reads += 1;
                    unthrottled()
                },
            );
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
            None,
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
        // Off CPU, it was woken as it left (see the test below): a wait too.
        let waited = from == state::RUNQ || from == state::OFF_CPU;
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
        woken_by_interrupt(&mut st, now, &CFG, &mut out, || {
            reads += 1;
            unthrottled()
        });
        let closed = (from == state::OFF_CPU).then_some((state::OFF_CPU, 2 * MS));
        assert_eq!(charged(&out), closed, "from {from}");
        if from == state::OFF_CPU || from == state::UNKNOWN {
            assert_eq!((st.state, st.since_ns), (state::RUNQ, now));
            assert_eq!(reads, 1);
        } else if from == state::ON_CPU {
            // Running: only noted, in case it is on its way off its CPU.
            assert_eq!(
                st,
                ThreadState {
                    woken_on_cpu_ns: now,
                    ..before
                }
            );
            assert_eq!(reads, 0);
        } else {
            // Already runnable (or a state no program writes): a wakeup changes nothing.
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
    switch_in(&mut st, T0, None, &CFG, &mut out, no_neighbour, unthrottled);
    assert!(out.0.is_empty());
    assert_eq!((st.state, st.since_ns), (state::ON_CPU, T0));
    switch_out(
        &mut st,
        5,
        false,
        wait::OTHER,
        T0 + 2 * MS,
        0,
        None,
        &CFG,
        &mut out,
        unthrottled,
    );
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
    woken_by_interrupt(&mut st, T0, &CFG, &mut Records::default(), || {
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
    switch_in(
        &mut st,
        T0 + 5 * MS,
        None,
        &CFG,
        &mut out,
        |_| neighbour,
        || end,
    );
    let r = out.0[0];
    assert_eq!((r.kind, r.state), (record::EPISODE, state::RUNQ));
    assert_eq!((r.start_ns, r.end_ns), (T0, T0 + 5 * MS));
    assert_eq!((r.bucket.runq_ns, r.bucket.throttled_ns), (5 * MS, 2 * MS));
    assert_eq!(
        (r.bucket.neighbour_tgid, r.bucket.neighbour_ns),
        (9, 3 * MS)
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
        wait::OTHER,
        T0 + 10,
        0,
        None,
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
    switch_in(&mut st, T0 + 1_010, None, &CFG, &mut out, neighbour, || {
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
        None,
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
    exit(&mut st, now, None, &CFG, &mut out);
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
    exit(&mut st, T0 + 5 * MS, None, &CFG, &mut out);
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
                (state::RUNQ, 0) => woken_by_interrupt(&mut st, now, &cfg, &mut out, cfs_rq),
                (state::RUNQ, _) => {
                    let neighbour = |start_ns: u64| Neighbour {
                        tgid: 9,
                        tid: 9,
                        ns: (now - start_ns) / 2,
                    };
                    switch_in(&mut st, now, None, &cfg, &mut out, neighbour, cfs_rq)
                }
                (state::ON_CPU, 0) => woken_by_interrupt(&mut st, now, &cfg, &mut out, cfs_rq),
                (state::ON_CPU, k) => switch_out(
                    &mut st,
                    50,
                    k == 1,
                    wait::OTHER,
                    now,
                    0,
                    None,
                    &cfg,
                    &mut out,
                    cfs_rq,
                ),
                (_, _) => woken_by_interrupt(&mut st, now, &cfg, &mut out, cfs_rq),
            }
        }
        // Threads exit on a CPU.
        if st.state != state::ON_CPU {
            now += 1;
            if st.state == state::OFF_CPU {
                woken_by_interrupt(&mut st, now, &cfg, &mut out, cfs_rq);
            }
            now += 1;
            switch_in(&mut st, now, None, &cfg, &mut out, no_neighbour, cfs_rq);
        }
        now += 1;
        exit(&mut st, now, None, &cfg, &mut out);

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
