//! What the health answer reads live, not from the last report: the event loop's heartbeat (a
//! loop stuck for longer than `LOOP_STUCK_AFTER_MS` fails liveness), the receivers that are
//! bound, and the exporter's state (failing since, last error, last success).

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::{Deserialize, Serialize};

use crate::{
    export::stats::ExportStats,
    kernel::probes::{HookHealth, SignalHealth},
    otlp::ingress::IngressStats,
    report::OtlpCounts,
};

/// The event loop beats at least every release poll (20 ms); a report or a process scan takes
/// far less than this.
pub const LOOP_STUCK_AFTER_MS: u64 = 10_000;

/// The event loop's side: it calls [`Heartbeat::beat`] on every turn.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat(Arc<AtomicU64>);

impl Heartbeat {
    pub fn beat(&self, now_unix_ms: u64) {
        self.0.store(now_unix_ms, Ordering::Relaxed);
    }

    /// How long since the last beat; 0 before the first.
    pub(crate) fn lag_ms(&self, now_unix_ms: u64) -> u64 {
        match self.0.load(Ordering::Relaxed) {
            0 => 0,
            at => now_unix_ms.saturating_sub(at),
        }
    }
}

/// The live sources the health answer reads.
#[derive(Debug, Clone)]
pub(crate) struct Vitals {
    pub(crate) heartbeat: Heartbeat,
    pub(crate) ingress: Arc<IngressStats>,
    /// Set when an export endpoint is configured.
    pub(crate) export: Option<Arc<ExportStats>>,
}

/// The health answer (`/v1/health`, `culprit status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub version: String,
    pub kernel: String,
    pub started_unix_ms: u64,
    pub uptime_s: f64,
    pub probes_attached: usize,
    pub probes_total: usize,
    pub probes: Vec<HookHealth>,
    pub signals: Vec<SignalHealth>,
    /// A signal runs degraded (its hook refused, a kernel feature missing), exports fail, the
    /// event loop is stuck or a task of the agent stopped.
    pub degraded: bool,
    /// The event loop turns and every task runs (a receiver that could not bind stopped its
    /// task): liveness, and readiness, since the agent then takes OTLP.
    #[serde(default = "yes")]
    pub alive: bool,
    /// How long since the event loop's last turn.
    #[serde(default)]
    pub event_loop_lag_ms: u64,
    /// The OTLP receivers listening.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receivers: Vec<String>,
    /// The agent's tasks (receivers, local API, exporter) that stopped on their own, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks_failed: Vec<TaskFailure>,
    /// Kernel and userspace losses since start (`drops` of the last report).
    pub events_lost: BTreeMap<String, u64>,
    pub otlp: OtlpCounts,
    pub requests_kept: usize,
    /// Requests dropped from the API's memory (not from export) to stay within bounds.
    pub requests_evicted: u64,
    pub last_report_unix_ms: Option<u64>,
}

fn yes() -> bool {
    true
}

/// A task of the agent that stopped without being asked to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub task: String,
    pub error: String,
}
