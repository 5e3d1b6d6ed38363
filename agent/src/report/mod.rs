//! What the agent reports every interval: the signals' interval plus the OTLP pipeline's
//! counts, printed as a table for people or JSON lines for scripts (`table`), and exported as
//! OTLP metrics (`metrics`).

pub(crate) mod metrics;
pub(crate) mod oom_logs;
pub(crate) mod prometheus;
pub(crate) mod series;
pub(crate) mod table;

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

pub(crate) use self::table::{print, print_span};
use crate::{
    export::stats::ExportCounts,
    join::JoinCounts,
    otlp::ingress::IngressCounts,
    signals::{
        CgroupRunq, ConnectionRow, Interval, ListenerRow, OomKill, RetransmitRow, ThreadRow,
        ThrottleRow,
    },
};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub unix_time_ms: u64,
    /// The monotonic clock (the kernel's, as in `bpf_ktime_get_ns`) at the end of the interval.
    pub mono_ns: u64,
    pub interval_ms: u64,
    /// Cgroups with run-queue activity in the interval, most total wait first.
    pub cgroups: Vec<CgroupRunq>,
    /// Watched threads with activity in the interval.
    pub threads: Vec<ThreadRow>,
    /// Every retransmit seen in the interval.
    pub retransmits: Vec<RetransmitRow>,
    /// Retransmits per connection in the interval, most first.
    pub connections: Vec<ConnectionRow>,
    /// CFS throttling of the watched processes' cgroups in the interval.
    pub throttling: Vec<ThrottleRow>,
    /// Kernel-side losses since start, by counter (plus the userspace store's evictions).
    pub drops: BTreeMap<String, u64>,
    /// Signals running degraded, with why.
    pub degraded: Vec<String>,
    /// OOM kills in the interval.
    #[serde(default)]
    pub oom_kills: Vec<OomKill>,
    /// The watched processes' listeners: accept queues, and the refusals of their namespaces.
    #[serde(default)]
    pub listeners: Vec<ListenerRow>,
    /// Spans in, joined, out, dropped.
    #[serde(default)]
    pub otlp: OtlpCounts,
}

/// Self-metrics of the OTLP pipeline, since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtlpCounts {
    pub ingress: IngressCounts,
    pub join: JoinCounts,
    pub export: ExportCounts,
    /// Export not configured: received data was only printed.
    pub exporting: bool,
}

impl Report {
    /// An empty report of an interval of this length, ending now.
    pub fn new(interval: Duration) -> Self {
        Self::of(interval, Interval::default(), OtlpCounts::default())
    }

    /// The report of one interval: what the signals saw, and the OTLP pipeline's counts.
    pub(crate) fn of(interval: Duration, signals: Interval, otlp: OtlpCounts) -> Self {
        let Interval {
            mono_ns,
            cgroups,
            threads,
            retransmits,
            connections,
            throttling,
            oom_kills,
            listeners,
            drops,
            degraded,
        } = signals;
        Self {
            unix_time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            mono_ns,
            interval_ms: interval.as_millis() as u64,
            cgroups,
            threads,
            retransmits,
            connections,
            throttling,
            drops,
            degraded,
            oom_kills,
            listeners,
            otlp,
        }
    }
}

/// How reports and spans are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    /// A per-cgroup table for people.
    Table,
    /// One JSON object per report, one per line, for scripts.
    Json,
}
