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
    /// The block device of most of that I/O wait (`vda`, `nvme0n1p2`): only when the I/O wait
    /// (with the page faults' reads) is significant.
    #[serde(default)]
    pub disk_device: Option<String>,
    /// The time the thread reclaimed memory on its CPU (part of `on_cpu_s`) or stalled on it
    /// off CPU (part of `off_cpu_s`: reclaim's sleeps, its cgroup's `memory.high` penalty,
    /// thrashing). Counted in `memory.reclaim`.
    #[serde(default)]
    pub memory_reclaim_s: f64,
    /// The part of `memory_reclaim_s` on CPU.
    #[serde(default)]
    pub memory_reclaim_on_cpu_s: f64,
    /// The part of `on_cpu_s` the hypervisor took from the thread's virtual CPU (steal time):
    /// the thread held its CPU and made no progress. Counted in `cpu.steal`.
    #[serde(default)]
    pub cpu_steal_s: f64,
    /// The part of `memory_reclaim_s` waiting for a CPU inside the stall (part of
    /// `runqueue_s`, not of the contention).
    #[serde(default)]
    pub memory_reclaim_runq_s: f64,
    /// The part of `off_cpu_s` the thread slept in a page fault taken in user mode: a major
    /// fault reading the page in from its file (or swap), or the address space's lock. Counted
    /// in `page_fault.major`; the fault's I/O is not counted again in `disk.io`.
    #[serde(default)]
    pub page_fault_s: f64,
    /// The part of `off_cpu_s` the thread slept in `futex` that its releaser's own delays (the
    /// wake chain) do not explain. Counted in `lock.wait`.
    #[serde(default)]
    pub lock_wait_s: f64,
    pub retransmit_wait_s: f64,
    /// The part of `retransmit_wait_s` waiting on a retransmitted handshake (SYN, SYN-ACK):
    /// a connect stalled. Counted in `tcp.connect_retransmit`, the rest in `tcp.retransmit`.
    #[serde(default)]
    pub connect_retransmit_wait_s: f64,
    pub retransmits: u64,
    pub retransmit_peer: Option<String>,
    /// How long the request waited before its server read it (listen backlog, receive queue):
    /// not in the span's duration. Its parts the reader waited for a CPU are below; the rest
    /// is `queue.backlog`.
    #[serde(default)]
    pub queue_wait_s: f64,
    /// The part of `queue_wait_s` the reader waited in a run queue (contention).
    #[serde(default)]
    pub queue_runq_s: f64,
    /// The part of `queue_wait_s` the reader waited throttled.
    #[serde(default)]
    pub queue_throttled_s: f64,
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
    /// For a client span, its place among its call's attempts (`join::retries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<super::retries::Attempt>,
}

/// The decomposition of a span from what was measured over its window, and its dominant cause.
pub(crate) fn attribute(m: &Measured) -> Attribution {
    // Saturating: the kernel's sums are bounded by the span, a corrupt record's are not.
    let observed = m
        .on_cpu_ns
        .saturating_add(m.runq_ns)
        .saturating_add(m.off_cpu_ns);
    let wall = m.wall_ns.max(1) as f64;
    // The wait before the span: what the reader waited for a CPU meanwhile is contention or
    // throttling, the rest the backlog. Shares are of what the client saw: the wait and the
    // span.
    let queue_throttled_ns = m.queue_throttled_ns.min(m.queue_wait_ns);
    let queue_runq_ns = m.queue_runq_ns.min(m.queue_wait_ns - queue_throttled_ns);
    let backlog_ns = m.queue_wait_ns - queue_throttled_ns - queue_runq_ns;
    let experienced = wall + m.queue_wait_ns as f64;
    // Several threads of a process can overlap in time: scale their sum to the span.
    let per_thread = (m.threads.max(1)) as f64;
    let coverage = (observed as f64 / (wall * per_thread)).min(1.0);
    let scale = if observed as f64 > wall {
        wall / observed as f64
    } else {
        1.0
    };
    let s = |ns: u64| ns as f64 * scale / 1e9;
    // A wait for a CPU inside a memory stall is the stall's (as the kernel's PSI counts it).
    let memory_runq_ns = m
        .memory_runq_ns
        .min(m.runq_ns.saturating_sub(m.throttled_ns));
    let contention_ns = m
        .runq_ns
        .saturating_sub(m.throttled_ns)
        .saturating_sub(memory_runq_ns);
    // A thread waits on the network only while off the CPU: a stall on another connection of
    // the process does not slow a span whose thread was computing. When no thread could be
    // told (the `process` join) the span's wall time is the only bound; a thread that was
    // named but not observed (its records not in yet, or lost) is not known to have waited:
    // seen in CI, a 5 ms `/cpu` request blamed whole on another connection's stall.
    let rtx_cap_ns = if observed > 0 {
        (m.off_cpu_ns as f64 * scale) as u64
    } else if m.join == "process" {
        m.wall_ns
    } else {
        0
    };
    let rtx_ns = m.retransmit_wait_ns.min(rtx_cap_ns).min(m.wall_ns);
    // A stalled handshake is a connect's wait, its own cause; bounded as the whole is.
    let connect_ns = m.connect_retransmit_wait_ns.min(rtx_ns);
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
    let memory_stall_ns = take(m.memory_stall_ns);
    let page_fault_ns = take(m.fault_wait_ns);
    let disk_io_ns = take(m.io_wait_ns);
    let lock_wait_ns = take(m.lock_wait_ns);
    let other_off_share = left_ns / experienced;
    // Reclaim on CPU is the kernel's work in the thread's time: not the request's own computing.
    let reclaim_on_cpu_ns = m.reclaim_on_cpu_ns.min(m.on_cpu_ns) as f64 * scale;
    let memory_reclaim_ns = memory_stall_ns + reclaim_on_cpu_ns + memory_runq_ns as f64 * scale;
    // Steal is the hypervisor's, taken from the time on CPU that reclaim left.
    let steal_ns = (m.steal_ns as f64 * scale).min(m.on_cpu_ns as f64 * scale - reclaim_on_cpu_ns);
    let share = |ns: u64| ns as f64 * scale / experienced;
    let kernel = [
        (Cause::QueueBacklog, backlog_ns as f64 / experienced),
        (
            Cause::CpuContention,
            share(contention_ns) + (waker_delay_ns + queue_runq_ns as f64) / experienced,
        ),
        (
            Cause::CpuThrottling,
            share(m.throttled_ns) + (waker_throttled_ns + queue_throttled_ns as f64) / experienced,
        ),
        (Cause::CpuSteal, steal_ns / experienced),
        (
            Cause::TcpRetransmit,
            (rtx_ns - connect_ns) as f64 / experienced,
        ),
        (Cause::TcpConnectRetransmit, connect_ns as f64 / experienced),
        (Cause::DiskIo, disk_io_ns / experienced),
        (Cause::MemoryReclaim, memory_reclaim_ns / experienced),
        (Cause::PageFault, page_fault_ns / experienced),
    ];
    let plain = [
        (Cause::OffCpu, other_off_share),
        (Cause::LockWait, lock_wait_ns / experienced),
        (
            Cause::OnCpu,
            share(m.on_cpu_ns) - (reclaim_on_cpu_ns + steal_ns) / experienced,
        ),
    ];
    let top_kernel = kernel
        .iter()
        .copied()
        .filter(|(_, sh)| *sh >= KERNEL_CAUSE_MIN_SHARE)
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let top_plain = plain.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1));
    let (cause, cause_share) = if coverage < MIN_COVERAGE && rtx_ns == 0 && backlog_ns == 0 {
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
        // The device a major fault read its pages from, too.
        disk_device: if (disk_io_ns + page_fault_ns) / wall >= KERNEL_CAUSE_MIN_SHARE {
            m.disk_device.clone()
        } else {
            None
        },
        memory_reclaim_s: memory_reclaim_ns / 1e9,
        memory_reclaim_on_cpu_s: reclaim_on_cpu_ns / 1e9,
        cpu_steal_s: steal_ns / 1e9,
        memory_reclaim_runq_s: s(memory_runq_ns),
        page_fault_s: page_fault_ns / 1e9,
        lock_wait_s: lock_wait_ns / 1e9,
        retransmit_wait_s: rtx_ns as f64 / 1e9,
        connect_retransmit_wait_s: connect_ns as f64 / 1e9,
        retransmits: m.retransmits,
        retransmit_peer: m.retransmit_peer.clone(),
        queue_wait_s: m.queue_wait_ns as f64 / 1e9,
        queue_runq_s: queue_runq_ns as f64 / 1e9,
        queue_throttled_s: queue_throttled_ns as f64 / 1e9,
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
        retry: None,
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
        ("culprit.cpu_steal.duration", F64(a.cpu_steal_s)),
        ("culprit.off_cpu.duration", F64(a.off_cpu_s)),
        ("culprit.waker_delay.duration", F64(a.waker_delay_s)),
        ("culprit.waker_throttled.duration", F64(a.waker_throttled_s)),
        ("culprit.disk_io.duration", F64(a.disk_io_s)),
        ("culprit.memory_reclaim.duration", F64(a.memory_reclaim_s)),
        (
            "culprit.memory_reclaim.on_cpu.duration",
            F64(a.memory_reclaim_on_cpu_s),
        ),
        (
            "culprit.memory_reclaim.runqueue.duration",
            F64(a.memory_reclaim_runq_s),
        ),
        ("culprit.page_fault.duration", F64(a.page_fault_s)),
        ("culprit.lock_wait.duration", F64(a.lock_wait_s)),
        ("culprit.retransmit_wait.duration", F64(a.retransmit_wait_s)),
        (
            "culprit.connect_retransmit_wait.duration",
            F64(a.connect_retransmit_wait_s),
        ),
        ("culprit.tcp.retransmits", I64(a.retransmits as i64)),
        ("culprit.queue.duration", F64(a.queue_wait_s)),
        ("culprit.join", Str(&a.join)),
        ("culprit.coverage", F64(a.coverage)),
    ]
    .into_iter()
    .chain(
        [
            ("culprit.tcp.retransmit.peer", &a.retransmit_peer),
            ("culprit.cpu.neighbor", &a.neighbour),
            ("culprit.waker", &a.waker),
            ("culprit.disk.device", &a.disk_device),
            ("culprit.lock.holder", &a.lock_holder),
            (
                "culprit.cpu.neighbor.container.id",
                &a.neighbour_container_id,
            ),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, Str(v.as_deref()?)))),
    )
    .chain(
        a.retry
            .filter(|r| r.retried)
            .map(|r| ("culprit.retry.attempt", I64(i64::from(r.index)))),
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
mod tests;
