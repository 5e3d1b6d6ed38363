//! Host tests of the thread-time accounting: bucket and episode arithmetic (`buckets`), state
//! transitions and whole lives (`transitions`).

extern crate std;
use std::vec::Vec;

use super::*;
use crate::thread::{SchedRecord, SpanTags};

const MS: u64 = 1_000_000;
/// A boot-time clock well past its first bucket.
const T0: u64 = 1_000 * MS;

const CFG: ProbeConfig = ProbeConfig {
    episode_threshold_ns: MS,
    bucket_ns: 10 * MS,
    node_summary: 1,
    ..ProbeConfig::DEFAULT
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
        spans: SpanTags,
    ) {
        self.0.push(SchedRecord {
            kind,
            state,
            tid: 0,
            tgid,
            start_ns,
            end_ns,
            bucket: *bucket,
            spans,
        });
    }
}

/// A wakeup from an interrupt: no waker, nothing carried.
fn woken_by_interrupt(
    st: &mut ThreadState,
    now_ns: u64,
    cfg: &ProbeConfig,
    out: &mut Records,
    throttling: impl FnOnce() -> Option<Throttling>,
) {
    wakeup(
        st,
        now_ns,
        0,
        0,
        &Delay::NONE,
        &Delay::NONE,
        cfg,
        out,
        throttling,
    );
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

/// The single interval (state, duration) a transition charged, if any.
fn charged(out: &Records) -> Option<(u32, u64)> {
    assert!(out.0.len() <= 1, "{:?}", out.0);
    let r = out.0.first()?;
    assert_eq!(r.kind, record::EPISODE);
    let b = r.bucket;
    Some((r.state, b.on_cpu_ns + b.runq_ns + b.off_cpu_ns))
}

mod buckets;
mod context;
mod steal;
mod transitions;
mod wait_reasons;
mod wakeups;
