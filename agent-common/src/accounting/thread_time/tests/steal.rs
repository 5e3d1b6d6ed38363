//! Steal time: the part of a thread's time on CPU the hypervisor took, from its CPU's steal
//! clock at the interval's two ends.

use super::*;

/// A thread that got its CPU at `at_ns` with the CPU's steal clock at `clock`.
fn running_since(at_ns: u64, clock: StealClock) -> ThreadState {
    let mut st = in_state(state::RUNQ, at_ns - 10);
    let mut out = Records::default();
    switch_in(
        &mut st,
        at_ns,
        clock,
        &CFG,
        &mut out,
        no_neighbour,
        unthrottled,
    );
    st
}

fn leave(st: &mut ThreadState, at_ns: u64, clock: StealClock, out: &mut Records) {
    switch_out(
        st,
        50,
        false,
        wait::OTHER,
        at_ns,
        0,
        clock,
        &CFG,
        out,
        unthrottled,
    );
}

#[test]
fn the_clocks_advance_over_an_interval_on_cpu_is_its_steal() {
    let mut st = running_since(T0, Some(7 * MS));
    let mut out = Records::default();
    leave(&mut st, T0 + 5 * MS, Some(9 * MS), &mut out);
    let r = out.0[0];
    assert_eq!((r.kind, r.state), (record::EPISODE, state::ON_CPU));
    assert_eq!((r.bucket.on_cpu_ns, r.bucket.steal_ns), (5 * MS, 2 * MS));
}

#[test]
fn short_intervals_sum_their_steal_into_the_bucket() {
    let mut st = running_since(T0, Some(100));
    let mut out = Records::default();
    leave(&mut st, T0 + 400_000, Some(150), &mut out);
    let mut out = Records::default();
    switch_in(
        &mut st,
        T0 + 500_000,
        Some(150),
        &CFG,
        &mut out,
        no_neighbour,
        unthrottled,
    );
    leave(&mut st, T0 + 900_000, Some(400), &mut out);
    assert!(out.0.is_empty(), "{:?}", out.0);
    assert_eq!((st.bucket.on_cpu_ns, st.bucket.steal_ns), (800_000, 300));
}

#[test]
fn a_missing_reading_at_either_end_gives_no_steal() {
    for (begin, end) in [(None, Some(9 * MS)), (Some(7 * MS), None), (None, None)] {
        let mut st = running_since(T0, begin);
        let mut out = Records::default();
        leave(&mut st, T0 + 5 * MS, end, &mut out);
        assert_eq!(out.0[0].bucket.steal_ns, 0, "{begin:?} {end:?}");
    }
}

#[test]
fn steal_never_exceeds_the_interval_nor_goes_backwards() {
    // A clock far ahead (a read of another CPU's rq, a corrupt value) is capped by the interval;
    // one behind gives nothing.
    for (end, stolen) in [(Some(u64::MAX), 5 * MS), (Some(0), 0)] {
        let mut st = running_since(T0, Some(7 * MS));
        let mut out = Records::default();
        leave(&mut st, T0 + 5 * MS, end, &mut out);
        assert_eq!(out.0[0].bucket.steal_ns, stolen, "{end:?}");
    }
}

#[test]
fn a_context_change_splits_the_steal_at_the_sample() {
    // The sampler ends the interval at a change of context: each side keeps its own steal, and
    // the clock is read only when the interval is cut.
    let mut st = running_since(T0, Some(0));
    let mut out = Records::default();
    context_sample(
        &mut st,
        T0 + MS,
        0,
        || unreachable!("no change"),
        &CFG,
        &mut out,
    );
    context_sample(&mut st, T0 + 2 * MS, 0xa, || Some(MS / 2), &CFG, &mut out);
    leave(&mut st, T0 + 5 * MS, Some(2 * MS), &mut out);
    let steal: Vec<u64> = out.0.iter().map(|r| r.bucket.steal_ns).collect();
    assert_eq!(steal, [MS / 2, 3 * MS / 2]);
}

#[test]
fn reclaim_and_steal_are_both_parts_of_the_time_on_cpu() {
    let mut st = running_since(T0, Some(0));
    let mut out = Records::default();
    reclaim(&mut st, T0 + 2 * MS, 0, true, Some(MS), &CFG, &mut out);
    leave(&mut st, T0 + 4 * MS, Some(MS + 500), &mut out);
    let b: Vec<(u64, u64, u64)> = out
        .0
        .iter()
        .map(|r| {
            (
                r.bucket.on_cpu_ns,
                r.bucket.reclaim_on_cpu_ns,
                r.bucket.steal_ns,
            )
        })
        .collect();
    assert_eq!(b, [(2 * MS, 0, MS), (2 * MS, 2 * MS, 500)]);
}
