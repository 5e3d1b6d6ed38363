//! Intervals of a thread that publishes its context (OTEP 4947): each carries the span at its
//! two ends, and none is summed into a bucket.

use std::{vec, vec::Vec};

use super::*;

const A: u64 = 0xa;
const B: u64 = 0xb;

fn episodes(out: &Records) -> Vec<(u32, u64, u64, SpanTags)> {
    out.0
        .iter()
        .filter(|r| r.kind == record::EPISODE)
        .map(|r| (r.state, r.start_ns, r.end_ns, r.spans))
        .collect()
}

#[test]
fn a_blocking_request_tags_its_cpu_time_and_its_wait() {
    let mut st = in_state(state::ON_CPU, T0);
    let mut out = Records::default();
    // Short intervals (below the 1 ms threshold) are still episodes: they are a span's.
    switch_out(
        &mut st,
        50,
        false,
        wait::OTHER,
        T0 + 10,
        A,
        None,
        &CFG,
        &mut out,
        unthrottled,
    );
    woken_by_interrupt(&mut st, T0 + 30, &CFG, &mut out, unthrottled);
    switch_in(
        &mut st,
        T0 + 35,
        None,
        &CFG,
        &mut out,
        no_neighbour,
        unthrottled,
    );
    switch_out(
        &mut st,
        50,
        false,
        wait::OTHER,
        T0 + 50,
        0,
        None,
        &CFG,
        &mut out,
        unthrottled,
    );
    assert_eq!(
        episodes(&out),
        vec![
            // The request's context was attached while on the CPU.
            (
                state::ON_CPU,
                T0,
                T0 + 10,
                SpanTags {
                    at_start: 0,
                    at_end: A
                }
            ),
            (state::OFF_CPU, T0 + 10, T0 + 30, SpanTags::steady(A)),
            (state::RUNQ, T0 + 30, T0 + 35, SpanTags::steady(A)),
            // Detached before the thread blocked again.
            (
                state::ON_CPU,
                T0 + 35,
                T0 + 50,
                SpanTags {
                    at_start: A,
                    at_end: 0
                }
            ),
        ]
    );
    assert_eq!(st.bucket.start_ns, 0, "nothing went to a bucket");
}

#[test]
fn a_sample_that_sees_another_span_splits_the_time_on_cpu() {
    let mut st = in_state(state::ON_CPU, T0);
    st.span_id = A;
    let mut out = Records::default();
    // Same span: nothing to record.
    context_sample(&mut st, T0 + MS, A, || None, &CFG, &mut out);
    assert!(out.0.is_empty());
    // The runtime moved on to request B without leaving the CPU.
    context_sample(&mut st, T0 + 2 * MS, B, || None, &CFG, &mut out);
    switch_out(
        &mut st,
        50,
        true,
        wait::OTHER,
        T0 + 3 * MS,
        B,
        None,
        &CFG,
        &mut out,
        unthrottled,
    );
    assert_eq!(
        episodes(&out),
        vec![
            (
                state::ON_CPU,
                T0,
                T0 + 2 * MS,
                SpanTags {
                    at_start: A,
                    at_end: B
                }
            ),
            (state::ON_CPU, T0 + 2 * MS, T0 + 3 * MS, SpanTags::steady(B)),
        ]
    );
    assert_eq!(
        (st.state, st.since_ns, st.span_id),
        (state::RUNQ, T0 + 3 * MS, B)
    );
}

#[test]
fn a_sample_changes_nothing_off_cpu_or_inside_a_hook() {
    let mut out = Records::default();
    let mut st = in_state(state::RUNQ, T0);
    context_sample(&mut st, T0 + MS, A, || None, &CFG, &mut out);
    let mut busy = in_state(state::ON_CPU, T0);
    busy.in_hook = 1;
    context_sample(&mut busy, T0 + MS, A, || None, &CFG, &mut out);
    assert!(out.0.is_empty());
    assert_eq!((st.span_id, busy.span_id, busy.since_ns), (0, 0, T0));
}

#[test]
fn without_a_context_short_intervals_still_go_to_buckets() {
    let mut st = in_state(state::ON_CPU, T0);
    let mut out = Records::default();
    switch_out(
        &mut st,
        50,
        false,
        wait::OTHER,
        T0 + 10,
        0,
        None,
        &CFG,
        &mut out,
        unthrottled,
    );
    assert!(episodes(&out).is_empty());
    assert_eq!(st.bucket.on_cpu_ns, 10);
}
