//! A span's time from the intervals its thread context tagged (OTEP 4947): the exact join, and
//! the only one for async runtimes, where one thread interleaves many requests. An interval is
//! the span's when its context at both ends is the span's own (the span itself, or a span of
//! its trace: a child it made current); an interval on CPU whose context changed inside is
//! split where the change is known to be, else halved.

use culprit_common::thread::{SchedRecord, state};

use super::thread_store::Breakdown;

/// How an interval on CPU whose context changed inside is split between its two spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Split {
    /// The sampler's period, if it runs: a change is caught by the next sample, so it lies in
    /// the interval's last period. Without it the change could be anywhere.
    pub(crate) sample_period_ns: Option<u64>,
    /// Whether the window is the span's own (`own` names it and its children): then its edges
    /// are when its context was attached and detached. False when `own` names other requests.
    pub(crate) window_is_own: bool,
}

/// The part of episode `rec` inside `[start_ns, end_ns)` that belongs to the spans `own` names.
pub(crate) fn own_ns(
    rec: &SchedRecord,
    start_ns: u64,
    end_ns: u64,
    own: &dyn Fn(u64) -> bool,
    split: Split,
) -> u64 {
    let overlap = |lo: u64, hi: u64| hi.min(end_ns).saturating_sub(lo.max(start_ns));
    let len = rec.end_ns.saturating_sub(rec.start_ns);
    // Where the context most likely changed: mid-way through the last sampling period, or
    // mid-way through the interval when nothing sampled it.
    let change_ns = rec.end_ns - split.sample_period_ns.unwrap_or(len).min(len) / 2;
    match (own(rec.spans.at_start), own(rec.spans.at_end)) {
        (true, true) => overlap(rec.start_ns, rec.end_ns),
        (false, false) => 0,
        // Attached inside the interval: if the span began inside it too, that is when (an SDK
        // makes a span current as it starts it).
        (false, true) if split.window_is_own && start_ns > rec.start_ns => {
            overlap(rec.start_ns, rec.end_ns)
        }
        (false, true) => overlap(change_ns, rec.end_ns),
        // Detached inside: likewise when the span ended inside it.
        (true, false) if split.window_is_own && end_ns < rec.end_ns => {
            overlap(rec.start_ns, rec.end_ns)
        }
        (true, false) => overlap(rec.start_ns, change_ns),
    }
}

/// What the span's own intervals among `episodes` (one thread's) account for in the window;
/// `None` when none of them carries the span's context.
pub(crate) fn context_breakdown<'a>(
    episodes: impl IntoIterator<Item = &'a SchedRecord>,
    start_ns: u64,
    end_ns: u64,
    own: &dyn Fn(u64) -> bool,
    split: Split,
) -> Option<Breakdown> {
    let mut out = Breakdown::default();
    let mut found = false;
    for rec in episodes {
        let ns = own_ns(rec, start_ns, end_ns, own, split);
        if ns == 0 || rec.end_ns <= rec.start_ns {
            continue;
        }
        found = true;
        out.add(&rec.bucket, ns as f64 / (rec.end_ns - rec.start_ns) as f64);
        let longest = match rec.state {
            state::ON_CPU => &mut out.longest_on_cpu_ns,
            state::RUNQ => &mut out.longest_runq_ns,
            _ => &mut out.longest_off_cpu_ns,
        };
        *longest = (*longest).max(ns);
    }
    found.then_some(out)
}

/// Sums the span's parts across threads (a multi-threaded runtime moves a request between
/// them) and charges the rest of its wall time off CPU: the request was not running anywhere,
/// it was suspended, awaiting something.
pub(crate) fn merge(parts: Vec<Breakdown>, wall_ns: u64) -> Breakdown {
    let mut out = Breakdown::default();
    for p in parts {
        out.on_cpu_ns += p.on_cpu_ns;
        out.runq_ns += p.runq_ns;
        out.throttled_ns += p.throttled_ns;
        out.off_cpu_ns += p.off_cpu_ns;
        out.waker_delay_ns += p.waker_delay_ns;
        out.waker_throttled_ns += p.waker_throttled_ns;
        out.io_wait_ns += p.io_wait_ns;
        out.memory_stall_ns += p.memory_stall_ns;
        out.fault_wait_ns += p.fault_wait_ns;
        out.reclaim_on_cpu_ns += p.reclaim_on_cpu_ns;
        out.steal_ns += p.steal_ns;
        out.memory_runq_ns += p.memory_runq_ns;
        out.lock_wait_ns += p.lock_wait_ns;
        for (dev, ns) in p.io_devices {
            out.io_devices.add(dev, ns);
        }
        for (tid, ns) in p.lock_holders {
            out.lock_holders.add(tid, ns);
        }
        for (tgid, ns) in p.neighbours {
            out.neighbours.add(tgid, ns);
        }
        for (tgid, ns) in p.wakers {
            out.wakers.add(tgid, ns);
        }
        out.longest_on_cpu_ns = out.longest_on_cpu_ns.max(p.longest_on_cpu_ns);
        out.longest_runq_ns = out.longest_runq_ns.max(p.longest_runq_ns);
        out.longest_off_cpu_ns = out.longest_off_cpu_ns.max(p.longest_off_cpu_ns);
    }
    out.off_cpu_ns += wall_ns.saturating_sub(out.observed_ns());
    out
}

/// Takes another request's part `other` out of a thread's time: while the thread ran it, or
/// waited for it, this span was suspended (off CPU).
pub(crate) fn exclude(thread: &mut Breakdown, other: &Breakdown) {
    let on = other.on_cpu_ns.min(thread.on_cpu_ns);
    let runq = other.runq_ns.min(thread.runq_ns);
    thread.on_cpu_ns -= on;
    thread.reclaim_on_cpu_ns = thread
        .reclaim_on_cpu_ns
        .saturating_sub(other.reclaim_on_cpu_ns)
        .min(thread.on_cpu_ns);
    thread.steal_ns = thread
        .steal_ns
        .saturating_sub(other.steal_ns)
        .min(thread.on_cpu_ns);
    thread.runq_ns -= runq;
    thread.throttled_ns = thread
        .throttled_ns
        .saturating_sub(other.throttled_ns)
        .min(thread.runq_ns);
    thread.memory_runq_ns = thread
        .memory_runq_ns
        .saturating_sub(other.memory_runq_ns)
        .min(thread.runq_ns - thread.throttled_ns);
    thread.off_cpu_ns += on + runq;
    for (tgid, ns) in other.neighbours.iter() {
        if let Some(mine) = thread.neighbours.get_mut(tgid) {
            *mine = mine.saturating_sub(ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use culprit_common::thread::{SpanTags, ThreadBucket, record};

    use super::*;

    const A: u64 = 0xa;
    const B: u64 = 0xb;

    fn on_cpu(start_ns: u64, end_ns: u64, at_start: u64, at_end: u64) -> SchedRecord {
        SchedRecord {
            kind: record::EPISODE,
            state: state::ON_CPU,
            start_ns,
            end_ns,
            bucket: ThreadBucket {
                on_cpu_ns: end_ns - start_ns,
                ..ThreadBucket::default()
            },
            spans: SpanTags { at_start, at_end },
            ..SchedRecord::default()
        }
    }

    fn off_cpu(start_ns: u64, end_ns: u64, span: u64) -> SchedRecord {
        SchedRecord {
            state: state::OFF_CPU,
            bucket: ThreadBucket {
                off_cpu_ns: end_ns - start_ns,
                ..ThreadBucket::default()
            },
            ..on_cpu(start_ns, end_ns, span, span)
        }
    }

    fn is(span: u64) -> impl Fn(u64) -> bool {
        move |s| s == span
    }

    const OWN: Split = Split {
        sample_period_ns: None,
        window_is_own: true,
    };
    const SAMPLED: Split = Split {
        sample_period_ns: Some(20),
        window_is_own: true,
    };
    const OTHERS: Split = Split {
        sample_period_ns: Some(20),
        window_is_own: false,
    };

    #[test]
    fn a_steady_interval_is_the_spans_where_it_overlaps() {
        let rec = off_cpu(100, 200, A);
        assert_eq!(own_ns(&rec, 0, 1000, &is(A), OWN), 100);
        assert_eq!(own_ns(&rec, 150, 1000, &is(A), OWN), 50);
        assert_eq!(own_ns(&rec, 0, 1000, &is(B), OWN), 0);
        assert_eq!(own_ns(&rec, 300, 400, &is(A), OWN), 0);
    }

    #[test]
    fn a_change_inside_is_placed_at_the_spans_edge_or_halved() {
        // Thread pool: attached as the span started, inside the slice.
        let attach = on_cpu(100, 200, 0, A);
        assert_eq!(own_ns(&attach, 150, 1000, &is(A), OWN), 50);
        // Detached as it ended.
        let detach = on_cpu(100, 200, A, 0);
        assert_eq!(own_ns(&detach, 0, 170, &is(A), OWN), 70);
        // Async: the runtime switched from B to A somewhere inside, both windows around it.
        let switch = on_cpu(100, 200, B, A);
        assert_eq!(own_ns(&switch, 0, 1000, &is(A), OWN), 50);
        assert_eq!(own_ns(&switch, 0, 1000, &is(B), OWN), 50);
        // Neither end is the span's: another request's time, though inside its window.
        assert_eq!(own_ns(&on_cpu(100, 200, B, 0), 0, 1000, &is(A), OWN), 0);
        // Sampled every 20: the change is in the last 20, expected mid-way.
        assert_eq!(own_ns(&switch, 0, 1000, &is(B), SAMPLED), 90);
        assert_eq!(own_ns(&switch, 0, 1000, &is(A), SAMPLED), 10);
    }

    #[test]
    fn other_requests_time_is_placed_by_the_sampler_not_by_the_window() {
        // Request B computed from 100 until the runtime went idle (0), seen by a sample at 200;
        // the window, a sleeping request's, says nothing of when B's context changed.
        let b_then_idle = on_cpu(100, 200, B, 0);
        assert_eq!(own_ns(&b_then_idle, 120, 150, &is(B), OTHERS), 30);
        assert_eq!(own_ns(&b_then_idle, 0, 1000, &is(B), OTHERS), 90);
        let idle_then_b = on_cpu(100, 200, 0, B);
        assert_eq!(own_ns(&idle_then_b, 150, 1000, &is(B), OTHERS), 10);
    }

    #[test]
    fn a_childs_context_is_the_parents_own() {
        let trace_of_a = |s: u64| s == A || s == B;
        let rec = on_cpu(0, 100, A, B);
        assert_eq!(own_ns(&rec, 0, 100, &trace_of_a, OWN), 100);
    }

    #[test]
    fn another_requests_time_on_the_thread_is_time_suspended() {
        let mut thread = Breakdown {
            on_cpu_ns: 100,
            runq_ns: 30,
            throttled_ns: 10,
            off_cpu_ns: 20,
            ..Breakdown::default()
        };
        let other = Breakdown {
            on_cpu_ns: 80,
            runq_ns: 40,
            throttled_ns: 10,
            ..Breakdown::default()
        };
        exclude(&mut thread, &other);
        assert_eq!(
            (
                thread.on_cpu_ns,
                thread.runq_ns,
                thread.throttled_ns,
                thread.off_cpu_ns
            ),
            (20, 0, 0, 130)
        );
        // Nothing is lost: the thread's time is only moved.
        assert_eq!(thread.observed_ns(), 150);
    }

    #[test]
    fn the_rest_of_the_window_is_time_suspended() {
        let episodes = [
            off_cpu(300, 400, A),
            on_cpu(200, 300, B, B),
            on_cpu(100, 200, 0, A),
        ];
        let a = context_breakdown(&episodes, 150, 500, &is(A), OWN).unwrap();
        assert_eq!((a.on_cpu_ns, a.off_cpu_ns), (50, 100));
        let merged = merge(vec![a], 350);
        assert_eq!((merged.on_cpu_ns, merged.off_cpu_ns), (50, 300));
        assert!(context_breakdown(&episodes, 150, 500, &is(0xc), OWN).is_none());
    }
}
