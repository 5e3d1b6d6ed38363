//! What one scenario run recorded: its phases, the agent's decomposition of every request with
//! the summary figures, the load generator's view and the throttling cross-check. Serialized as
//! the demo's results.json.

use std::collections::BTreeMap;

use culprit::cause::Cause;
use serde::{Deserialize, Serialize};

use crate::service::retry_call::RetryCounts;

use super::{
    accuracy::{self, Injected, Request, Summary},
    plan::Scenario,
};

/// When one phase ran, on the kernel's monotonic clock, and what was injected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub injected: Option<Injected>,
    pub start_mono_ns: u64,
    pub end_mono_ns: u64,
}

/// The agent's throttled time for the service next to the cgroup's own `cpu.stat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThrottleCheck {
    pub cpu_stat_ms: f64,
    /// Wall time during which a service thread waited throttled.
    pub agent_ms: f64,
    /// The threads' throttled waits summed (a throttle counts once per waiting thread).
    pub agent_threads_sum_ms: f64,
}

impl ThrottleCheck {
    /// `agent / cpu.stat - 1`.
    pub fn relative_error(&self) -> f64 {
        if self.cpu_stat_ms > 0.0 {
            self.agent_ms / self.cpu_stat_ms - 1.0
        } else {
            0.0
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientCounts {
    pub sent: usize,
    pub failed: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// How late the lab's load generator sent its requests, 99th percentile (its own lag, not
    /// in their latency); 0 for k6 and Locust, which time their own sends.
    #[serde(default)]
    pub dispatch_lag_p99_ms: f64,
}

/// Everything one scenario produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioRun {
    pub scenario: Scenario,
    pub description: String,
    pub phases: Vec<Phase>,
    /// Route -> median latency with nothing injected.
    pub reference_medians: BTreeMap<String, f64>,
    /// The requests of the fault phases, as the agent decomposed them.
    pub requests: Vec<Request>,
    pub summary: Summary,
    /// The load generator's view of the fault phases.
    pub client: ClientCounts,
    pub throttle: Option<ThrottleCheck>,
    pub service_pid: u32,
    pub hog_pid: Option<u32>,
    /// The downstream service as the service sees it (`127.0.0.1:port`).
    pub downstream_peer: String,
    /// The downstream service's process.
    #[serde(default)]
    pub downstream_pid: u32,
    /// Request spans the service ended vs those that came out of the agent.
    pub spans_expected: u64,
    pub spans_received: usize,
    /// The retransmits the agent saw on the downstream connections.
    pub retransmits: Vec<culprit::model::RetransmitRow>,
    /// `/retry`'s calls and attempts, by the service and by the agent, where it ran.
    #[serde(default)]
    pub retry: Option<RetryOutcome>,
    /// The OOM kills of the `oom` scenario's job, and what the agent reported of them.
    #[serde(default)]
    pub oom: Option<OomOutcome>,
    /// The agent's join of the spans with their serving threads, by the service's record.
    #[serde(default)]
    pub thread_join: crate::scenario::join_score::ThreadJoin,
}

/// The kernel's OOM kills of a job and the agent's reports of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OomOutcome {
    pub truth: crate::faults::oom::OomTruth,
    /// Kills the agent reported (by victim pid).
    pub reported: usize,
    /// Of those, the ones naming the job's cgroup and the limit the victim hit.
    pub identified: usize,
}

/// Retries as the service counted them and as the agent found them in the attempts' spans.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryOutcome {
    pub truth: RetryCounts,
    pub agent: RetryCounts,
    /// Time in the failed attempts, and the part of it in attempts the agent blamed on a
    /// retransmit (of data or of a handshake).
    pub failed_ms: f64,
    pub failed_retransmit_ms: f64,
}

impl RetryOutcome {
    /// Attempts per call, as the service counted them and as the agent did.
    pub fn amplification(&self) -> (f64, f64) {
        let ratio = |c: RetryCounts| c.attempts as f64 / c.calls.max(1) as f64;
        (ratio(self.truth), ratio(self.agent))
    }
}

impl ScenarioRun {
    /// The slowest request.
    pub(crate) fn slowest(&self) -> Option<&Request> {
        self.requests
            .iter()
            .max_by(|a, b| a.latency_ms.total_cmp(&b.latency_ms))
    }

    /// Share of the contention phase's slow contended requests (its p90+, the agent's verdict
    /// `cpu.contention`) naming the hog as the neighbour. Requests the hog did not slow are left
    /// out: on EEVDF a waking thread often runs its whole request ahead of the hog, and when
    /// most do, the phase's p90 holds plain on-CPU requests whose neighbour says nothing.
    pub fn hog_named_share(&self) -> Option<f64> {
        let tag = format!("({})", self.hog_pid?);
        // Slow as in the accuracy: the contention phase's own p90.
        let contended: Vec<&Request> = self
            .requests
            .iter()
            .filter(|r| r.injected == Some(Injected::Contention))
            .collect();
        let latencies: Vec<f64> = contended.iter().map(|r| r.latency_ms).collect();
        let p90 = accuracy::quantile(&latencies, 0.9);
        let slow: Vec<&Request> = contended
            .into_iter()
            .filter(|r| r.latency_ms >= p90 && r.cause == Cause::CpuContention)
            .collect();
        let named = slow
            .iter()
            .filter(|r| r.neighbour.as_deref().is_some_and(|n| n.ends_with(&tag)))
            .count();
        (!slow.is_empty()).then(|| named as f64 / slow.len() as f64)
    }
}
