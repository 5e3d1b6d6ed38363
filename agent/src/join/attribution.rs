//! The decomposition of a span's wall time and the choice of its dominant cause. Pure: the
//! inputs are what the kernel side measured over the span's window.

#[cfg(any(test, feature = "fuzzing"))]
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use serde::{Deserialize, Serialize};

use crate::{cause::Cause, signals::Measured};

/// A kernel cause is named when it took at least this share of the span, whatever the span's
/// own time (on or off CPU) was: on an idle machine a few microseconds of run-queue wait must
/// not be blamed, but half a request spent behind a neighbour is the news.
pub(crate) const KERNEL_CAUSE_MIN_SHARE: f64 = 0.10;
/// Below this share of the span's wall time seen by the probes, the cause is `unknown`.
pub(crate) const MIN_COVERAGE: f64 = 0.5;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    pub cause: Cause,
    pub cause_share: f64,
    pub on_cpu_s: f64,
    pub runqueue_s: f64,
    pub throttled_s: f64,
    pub off_cpu_s: f64,
    /// The part of `off_cpu_s` the thread slept while its waker was held in a run queue behind
    /// a neighbour: contention through another thread, counted in `cpu.contention`.
    #[serde(default)]
    pub waker_delay_s: f64,
    /// The part of `off_cpu_s` the thread slept while its waker waited throttled by its
    /// cgroup's CPU quota: throttling through another thread, counted in `cpu.throttling`.
    #[serde(default)]
    pub waker_throttled_s: f64,
    /// The part of `off_cpu_s` the thread slept in the kernel's I/O wait (`io_schedule()`):
    /// block reads and writes, pages read in. Counted in `disk.io`.
    #[serde(default)]
    pub disk_io_s: f64,
    /// The part of `off_cpu_s` the thread stalled on memory (reclaim, its cgroup's
    /// `memory.high` penalty, thrashing). Counted in `memory.reclaim`.
    #[serde(default)]
    pub memory_reclaim_s: f64,
    /// The part of `off_cpu_s` the thread slept in `futex` that its releaser's own delays (the
    /// wake chain) do not explain. Counted in `lock.wait`.
    #[serde(default)]
    pub lock_wait_s: f64,
    pub retransmit_wait_s: f64,
    pub retransmits: u64,
    pub retransmit_peer: Option<String>,
    pub neighbour: Option<String>,
    pub neighbour_container_id: Option<String>,
    /// Who woke the serving thread for most of its time off CPU: `comm (pid)` of the process,
    /// or `interrupt` (a timer or device). What the request waited for.
    #[serde(default)]
    pub waker: Option<String>,
    /// The thread whose wakeups ended most of `lock_wait_s`, `comm (tid)`: the one that
    /// released the lock (only when the lock wait is significant).
    #[serde(default)]
    pub lock_holder: Option<String>,
    pub join: String,
    pub coverage: f64,
}

/// The decomposition of a span from what was measured over its window, and its dominant cause.
pub(crate) fn attribute(m: &Measured) -> Attribution {
    // Saturating: the kernel's sums are bounded by the span, a corrupt record's are not.
    let observed = m
        .on_cpu_ns
        .saturating_add(m.runq_ns)
        .saturating_add(m.off_cpu_ns);
    let wall = m.wall_ns.max(1) as f64;
    // Several threads of a process can overlap in time: scale their sum to the span.
    let per_thread = (m.threads.max(1)) as f64;
    let coverage = (observed as f64 / (wall * per_thread)).min(1.0);
    let scale = if observed as f64 > wall {
        wall / observed as f64
    } else {
        1.0
    };
    let s = |ns: u64| ns as f64 * scale / 1e9;
    let contention_ns = m.runq_ns.saturating_sub(m.throttled_ns);
    // A thread waits on the network only while off the CPU: a stall on another connection of
    // the process does not slow a span whose thread was computing. Without thread data the
    // span's wall time is the only bound.
    let rtx_cap_ns = if observed > 0 {
        (m.off_cpu_ns as f64 * scale) as u64
    } else {
        m.wall_ns
    };
    let rtx_ns = m.retransmit_wait_ns.min(rtx_cap_ns).min(m.wall_ns);
    // Waiting on the network is off-CPU time; what the retransmits explain is not "off_cpu".
    // Nor is the sleep a waker spent queued behind a neighbour (the wake chain): that is
    // contention through another thread. All in scaled ns, each bounded by what is left of the
    // off-CPU time.
    let off_ns = m.off_cpu_ns as f64 * scale;
    let waker_delay_ns = (m.waker_delay_ns as f64 * scale).min((off_ns - rtx_ns as f64).max(0.0));
    let waker_throttled_ns = (m.waker_throttled_ns as f64 * scale)
        .min((off_ns - rtx_ns as f64 - waker_delay_ns).max(0.0));
    // Why the thread slept comes after who delayed its wakeup (a delayed completion, a lock
    // holder queued behind a hog): each bounded by what is left.
    let mut left_ns = (off_ns - rtx_ns as f64 - waker_delay_ns - waker_throttled_ns).max(0.0);
    let mut take = |ns: u64| {
        let part = (ns as f64 * scale).min(left_ns);
        left_ns -= part;
        part
    };
    let memory_reclaim_ns = take(m.memory_stall_ns);
    let disk_io_ns = take(m.io_wait_ns);
    let lock_wait_ns = take(m.lock_wait_ns);
    let other_off_share = left_ns / wall;
    let share = |ns: u64| ns as f64 * scale / wall;
    let kernel = [
        (
            Cause::CpuContention,
            share(contention_ns) + waker_delay_ns / wall,
        ),
        (
            Cause::CpuThrottling,
            share(m.throttled_ns) + waker_throttled_ns / wall,
        ),
        (Cause::TcpRetransmit, rtx_ns as f64 / wall),
        (Cause::DiskIo, disk_io_ns / wall),
        (Cause::MemoryReclaim, memory_reclaim_ns / wall),
    ];
    let plain = [
        (Cause::OffCpu, other_off_share),
        (Cause::LockWait, lock_wait_ns / wall),
        (Cause::OnCpu, share(m.on_cpu_ns)),
    ];
    let top_kernel = kernel
        .iter()
        .copied()
        .filter(|(_, sh)| *sh >= KERNEL_CAUSE_MIN_SHARE)
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let top_plain = plain.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1));
    let (cause, cause_share) = if coverage < MIN_COVERAGE && rtx_ns == 0 {
        (Cause::Unknown, 0.0)
    } else {
        // A request's own work is never its culprit: a significant kernel cause is named even
        // when the request computed or slept for longer ([`Parts::dominant`] for groups).
        match (top_kernel, top_plain) {
            (Some(k), _) => k,
            (None, Some(p)) => p,
            (None, None) => (Cause::Unknown, 0.0),
        }
    };
    Attribution {
        cause,
        cause_share: cause_share.clamp(0.0, 1.0),
        on_cpu_s: s(m.on_cpu_ns),
        runqueue_s: s(m.runq_ns),
        throttled_s: s(m.throttled_ns),
        off_cpu_s: s(m.off_cpu_ns),
        waker_delay_s: waker_delay_ns / 1e9,
        waker_throttled_s: waker_throttled_ns / 1e9,
        disk_io_s: disk_io_ns / 1e9,
        memory_reclaim_s: memory_reclaim_ns / 1e9,
        lock_wait_s: lock_wait_ns / 1e9,
        retransmit_wait_s: rtx_ns as f64 / 1e9,
        retransmits: m.retransmits,
        retransmit_peer: m.retransmit_peer.clone(),
        neighbour: m.neighbour.clone(),
        neighbour_container_id: m.neighbour_container_id.clone(),
        // Only for a request that waited: a computing one's last wakeup says nothing.
        waker: if off_ns / wall >= KERNEL_CAUSE_MIN_SHARE {
            m.waker.clone()
        } else {
            None
        },
        // Named for the lock wait, or for the chain through the lock: a holder delayed by a
        // neighbour is who the request waited on, though the wait is the neighbour's doing.
        lock_holder: if (lock_wait_ns + waker_delay_ns + waker_throttled_ns) / wall
            >= KERNEL_CAUSE_MIN_SHARE
        {
            m.lock_holder.clone()
        } else {
            None
        },
        join: m.join.to_string(),
        coverage,
    }
}

/// An attribute value, borrowed from the attribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum AttrValue<'a> {
    Str(&'a str),
    F64(f64),
    I64(i64),
}

impl AttrValue<'_> {
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn to_otlp(self) -> Value {
        match self {
            Self::Str(s) => Value::StringValue(s.to_string()),
            Self::F64(v) => Value::DoubleValue(v),
            Self::I64(v) => Value::IntValue(v),
        }
    }
}

/// The public attribute schema (docs/attributes.md), in order, without allocating.
pub(crate) fn attribute_pairs(
    a: &Attribution,
) -> impl Iterator<Item = (&'static str, AttrValue<'_>)> {
    use AttrValue::{F64, I64, Str};
    [
        ("culprit.cause", Str(a.cause.as_str())),
        ("culprit.cause.share", F64(a.cause_share)),
        ("culprit.on_cpu.duration", F64(a.on_cpu_s)),
        ("culprit.runqueue.duration", F64(a.runqueue_s)),
        ("culprit.throttled.duration", F64(a.throttled_s)),
        ("culprit.off_cpu.duration", F64(a.off_cpu_s)),
        ("culprit.waker_delay.duration", F64(a.waker_delay_s)),
        ("culprit.waker_throttled.duration", F64(a.waker_throttled_s)),
        ("culprit.disk_io.duration", F64(a.disk_io_s)),
        ("culprit.memory_reclaim.duration", F64(a.memory_reclaim_s)),
        ("culprit.lock_wait.duration", F64(a.lock_wait_s)),
        ("culprit.retransmit_wait.duration", F64(a.retransmit_wait_s)),
        ("culprit.tcp.retransmits", I64(a.retransmits as i64)),
        ("culprit.join", Str(&a.join)),
        ("culprit.coverage", F64(a.coverage)),
    ]
    .into_iter()
    .chain(
        [
            ("culprit.tcp.retransmit.peer", &a.retransmit_peer),
            ("culprit.cpu.neighbor", &a.neighbour),
            ("culprit.waker", &a.waker),
            ("culprit.lock.holder", &a.lock_holder),
            (
                "culprit.cpu.neighbor.container.id",
                &a.neighbour_container_id,
            ),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, Str(v.as_deref()?)))),
    )
}

#[cfg(any(test, feature = "fuzzing"))]
/// The schema as OTLP attributes.
pub(crate) fn to_attributes(a: &Attribution) -> Vec<KeyValue> {
    attribute_pairs(a)
        .map(|(k, v)| KeyValue {
            key: k.to_string(),
            value: Some(AnyValue {
                value: Some(v.to_otlp()),
            }),
            ..KeyValue::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn m(on: u64, runq: u64, throttled: u64, off: u64, rtx: u64) -> Measured {
        Measured {
            wall_ns: (on + runq + off) * MS,
            on_cpu_ns: on * MS,
            runq_ns: runq * MS,
            throttled_ns: throttled * MS,
            off_cpu_ns: off * MS,
            retransmit_wait_ns: rtx * MS,
            join: "thread",
            threads: 1,
            ..Measured::default()
        }
    }

    #[test]
    fn contention_dominates_when_the_cpu_was_taken() {
        let a = attribute(&m(20, 40, 0, 2, 0));
        assert_eq!(a.cause, "cpu.contention");
        assert!((a.cause_share - 40.0 / 62.0).abs() < 1e-9);
        assert!((a.runqueue_s - 0.040).abs() < 1e-9);
        assert_eq!(a.coverage, 1.0);
    }

    #[test]
    fn throttling_is_split_from_contention() {
        let a = attribute(&m(10, 80, 75, 1, 0));
        assert_eq!(a.cause, "cpu.throttling");
        assert!((a.throttled_s - 0.075).abs() < 1e-9);
    }

    #[test]
    fn retransmit_wait_explains_off_cpu_time() {
        let a = attribute(&m(2, 0, 0, 210, 200));
        assert_eq!(a.cause, "tcp.retransmit");
        assert!((a.retransmit_wait_s - 0.2).abs() < 1e-9);
    }

    #[test]
    fn a_sleep_behind_a_delayed_waker_is_contention() {
        // 10 ms asleep on a downstream whose packet sat 8 ms in ksoftirqd's run queue.
        let mut x = m(1, 0, 0, 10, 0);
        x.waker_delay_ns = 8 * MS;
        let a = attribute(&x);
        assert_eq!(a.cause, "cpu.contention");
        assert!((a.cause_share - 8.0 / 11.0).abs() < 1e-9);
        assert!((a.waker_delay_s - 0.008).abs() < 1e-9);
        // The off-CPU time holds it: a record claiming more is bounded, and what retransmits
        // explain is not counted twice.
        let mut x = m(1, 0, 0, 10, 6);
        x.waker_delay_ns = 50 * MS;
        let a = attribute(&x);
        assert!((a.waker_delay_s - 0.004).abs() < 1e-9, "{a:?}");
        assert!((a.retransmit_wait_s - 0.006).abs() < 1e-9);
    }

    #[test]
    fn why_a_thread_slept_follows_who_delayed_its_wakeup() {
        // 20 ms asleep: 6 ms of it its lock holder sat behind a hog, 10 ms more in the futex.
        let mut x = m(1, 0, 0, 20, 0);
        x.waker_delay_ns = 6 * MS;
        x.lock_wait_ns = 10 * MS;
        x.lock_holder = Some("worker (42)".into());
        let a = attribute(&x);
        // The hog's 6 ms of 21 is a kernel cause past the bar: it is named over the lock's 10.
        assert_eq!(a.cause, "cpu.contention");
        assert!((a.lock_wait_s - 0.010).abs() < 1e-9, "{a:?}");
        // The holder is named with the chain through it, even with no wait left of its own.
        let mut chain = x.clone();
        chain.lock_wait_ns = 0;
        assert_eq!(
            attribute(&chain).lock_holder.as_deref(),
            Some("worker (42)")
        );
        assert_eq!(a.lock_holder.as_deref(), Some("worker (42)"));
        let parts = crate::join::parts::Parts::of(&a, 21.0);
        assert!((parts.lock_wait_ms - 10.0).abs() < 1e-9, "{parts:?}");
        assert!((parts.off_cpu_ms - 4.0).abs() < 1e-9, "{parts:?}");
        // Without the hog the lock is the answer: the application's own waiting, beating the
        // rest of the sleep and the computing.
        x.waker_delay_ns = 0;
        let a = attribute(&x);
        assert_eq!(a.cause, "lock.wait");
        // A memory stall is the kernel's: named past the bar, and taken first; the lock wait
        // is bounded by what is left (a corrupt sum cannot exceed the sleep).
        x.memory_stall_ns = 15 * MS;
        x.lock_wait_ns = 50 * MS;
        let a = attribute(&x);
        assert_eq!(a.cause, "memory.reclaim");
        assert!((a.memory_reclaim_s - 0.015).abs() < 1e-9, "{a:?}");
        assert!((a.lock_wait_s - 0.005).abs() < 1e-9, "{a:?}");
        // A lock wait under the bar names no holder.
        x.memory_stall_ns = 19 * MS;
        let a = attribute(&x);
        assert_eq!(a.lock_holder, None);
    }

    #[test]
    fn a_sleep_behind_a_throttled_waker_is_throttling() {
        // 10 ms asleep on a thread of a quota'd cgroup that waited 6 ms throttled and 2 ms
        // behind a neighbour before it answered.
        let mut x = m(1, 0, 0, 10, 0);
        x.waker_throttled_ns = 6 * MS;
        x.waker_delay_ns = 2 * MS;
        let a = attribute(&x);
        assert_eq!(a.cause, "cpu.throttling");
        assert!((a.cause_share - 6.0 / 11.0).abs() < 1e-9, "{a:?}");
        assert!((a.waker_throttled_s - 0.006).abs() < 1e-9);
        let parts = crate::join::parts::Parts::of(&a, 11.0);
        assert!((parts.throttled_ms - 6.0).abs() < 1e-9, "{parts:?}");
        assert!((parts.contention_ms - 2.0).abs() < 1e-9, "{parts:?}");
        assert!((parts.off_cpu_ms - 2.0).abs() < 1e-9, "{parts:?}");
        // Bounded by what the waker's contention and the retransmits leave of the sleep.
        x.waker_throttled_ns = 50 * MS;
        let a = attribute(&x);
        assert!((a.waker_throttled_s - 0.008).abs() < 1e-9, "{a:?}");
    }

    #[test]
    fn the_waker_is_named_only_for_a_request_that_waited() {
        let mut x = m(1, 0, 0, 10, 0);
        x.waker = Some("db (7)".into());
        assert_eq!(attribute(&x).waker.as_deref(), Some("db (7)"));
        let keys: Vec<&str> = attribute_pairs(&attribute(&x)).map(|(k, _)| k).collect();
        assert!(keys.contains(&"culprit.waker"));
        // 0.1 ms asleep in a 10 ms computation: its last wakeup says nothing.
        let mut busy = m(10, 0, 0, 0, 0);
        busy.off_cpu_ns = MS / 10;
        busy.waker = Some("db (7)".into());
        assert_eq!(attribute(&busy).waker, None);
    }

    #[test]
    fn a_computing_thread_is_not_waiting_on_the_network() {
        // Another connection of the process stalled during the span, but this thread ran.
        let a = attribute(&m(50, 0, 0, 2, 50));
        assert_eq!(a.cause, "on_cpu");
        assert!((a.retransmit_wait_s - 0.002).abs() < 1e-9);
        // With no thread data at all, the stall is bounded by the span only.
        let mut blind = m(0, 0, 0, 0, 30);
        blind.wall_ns = 100 * MS;
        assert!((attribute(&blind).retransmit_wait_s - 0.030).abs() < 1e-9);
    }

    #[test]
    fn sleeping_is_off_cpu_and_computing_is_on_cpu() {
        assert_eq!(attribute(&m(1, 0, 0, 100, 0)).cause, "off_cpu");
        assert_eq!(attribute(&m(100, 1, 0, 1, 0)).cause, "on_cpu");
    }

    #[test]
    fn a_significant_kernel_cause_is_named_over_the_requests_own_time() {
        // Half its time computing, half behind a neighbour: the neighbour is the culprit.
        let a = attribute(&m(50, 49, 0, 1, 0));
        assert_eq!(a.cause, "cpu.contention");
        assert!((a.cause_share - 0.49).abs() < 1e-9);
        // A long sleep with a throttled tenth: throttling, with its own share.
        let a = attribute(&m(1, 11, 11, 88, 0));
        assert_eq!(a.cause, "cpu.throttling");
        assert!((a.cause_share - 0.11).abs() < 1e-9);
        // Just under the bar, the request's own time is the answer.
        assert_eq!(attribute(&m(91, 9, 0, 0, 0)).cause, "on_cpu");
    }

    #[test]
    fn small_kernel_waits_are_not_blamed() {
        // 5% contention is real but not the cause on an otherwise idle machine.
        let a = attribute(&m(50, 5, 0, 45, 0));
        assert_eq!(a.cause, "on_cpu");
        let a = attribute(&m(40, 9, 0, 51, 0));
        assert_eq!(a.cause, "off_cpu");
    }

    #[test]
    fn unobserved_spans_are_unknown() {
        let mut x = m(1, 0, 0, 1, 0);
        x.wall_ns = 100 * MS;
        let a = attribute(&x);
        assert_eq!(a.cause, "unknown");
        assert!(a.coverage < 0.05);
        let empty = attribute(&Measured::default());
        assert_eq!(empty.cause, "unknown");
    }

    #[test]
    fn absurd_measurements_are_bounded_not_overflowed() {
        let mut x = m(0, 0, 0, 0, 0);
        (x.on_cpu_ns, x.runq_ns, x.off_cpu_ns) = (u64::MAX, u64::MAX, u64::MAX);
        x.throttled_ns = u64::MAX;
        x.retransmit_wait_ns = u64::MAX;
        x.threads = usize::MAX;
        let a = attribute(&x);
        assert!((0.0..=1.0).contains(&a.cause_share) && (0.0..=1.0).contains(&a.coverage));
        assert!(a.on_cpu_s.is_finite() && a.retransmit_wait_s >= 0.0);
    }

    #[test]
    fn overlapping_threads_are_scaled_to_the_span() {
        let mut x = m(100, 0, 0, 100, 0);
        x.wall_ns = 100 * MS;
        x.threads = 2;
        x.join = "process";
        let a = attribute(&x);
        assert!((a.on_cpu_s + a.off_cpu_s - 0.1).abs() < 1e-9);
        assert_eq!(a.coverage, 1.0);
    }

    #[test]
    fn attributes_follow_the_schema() {
        let mut x = m(20, 40, 0, 2, 0);
        x.neighbour = Some("stress (42)".into());
        let attrs = to_attributes(&attribute(&x));
        let keys: Vec<&str> = attrs.iter().map(|k| k.key.as_str()).collect();
        for k in [
            "culprit.cause",
            "culprit.cause.share",
            "culprit.on_cpu.duration",
            "culprit.runqueue.duration",
            "culprit.throttled.duration",
            "culprit.off_cpu.duration",
            "culprit.waker_delay.duration",
            "culprit.retransmit_wait.duration",
            "culprit.tcp.retransmits",
            "culprit.cpu.neighbor",
            "culprit.join",
            "culprit.coverage",
        ] {
            assert!(keys.contains(&k), "{k} missing");
        }
        assert!(!keys.contains(&"culprit.tcp.retransmit.peer"));
    }
}
