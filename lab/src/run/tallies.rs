//! What a scenario's run tallies apart from the spans: the load generator's view of it, the
//! service's count of what it served, the agent's throttling against `cpu.stat` and its reports
//! of OOM kills against the kernel's.

use std::{collections::HashMap, io::Read as _};

use anyhow::Context as _;
use culprit::{
    cause::Cause,
    model::{Report, SpanLine},
};
use serde::Deserialize;

use crate::{
    faults::oom::OomTruth,
    scenario::{
        accuracy,
        outcome::{ClientCounts, OomOutcome, RetryOutcome, ThrottleCheck},
    },
    service::{load::ClientSample, retry_call::RetryCounts},
};

/// Each request's latency as the client saw it (ms), by the trace it started.
pub(super) fn client_latencies(samples: &[ClientSample]) -> HashMap<String, f64> {
    samples
        .iter()
        .filter(|s| s.ok)
        .map(|s| (s.trace_id.clone(), s.latency.as_secs_f64() * 1e3))
        .collect()
}

/// The load generator's view of a phase.
pub(super) fn client_counts(samples: &[ClientSample]) -> ClientCounts {
    let ms: Vec<f64> = samples
        .iter()
        .map(|s| s.latency.as_secs_f64() * 1e3)
        .collect();
    let lag_ms: Vec<f64> = samples
        .iter()
        .map(|s| s.dispatch_lag.as_secs_f64() * 1e3)
        .collect();
    ClientCounts {
        sent: samples.len(),
        failed: samples.iter().filter(|s| !s.ok).count(),
        p50_ms: accuracy::quantile(&ms, 0.5),
        p99_ms: accuracy::quantile(&ms, 0.99),
        dispatch_lag_p99_ms: accuracy::quantile(&lag_ms, 0.99),
    }
}

/// What the service counted itself: the requests it served, and `/retry`'s calls and attempts.
pub(super) fn served_count(
    stdout: Option<std::process::ChildStdout>,
) -> anyhow::Result<(u64, RetryCounts)> {
    let mut text = String::new();
    stdout
        .context("the service's stdout")?
        .read_to_string(&mut text)?;
    #[derive(Deserialize)]
    struct Served {
        served: u64,
        #[serde(default)]
        retries: RetryCounts,
    }
    let line = text.lines().last().unwrap_or_default();
    let served: Served =
        serde_json::from_str(line).with_context(|| format!("the service's exit line: {line:?}"))?;
    Ok((served.served, served.retries))
}

/// The agent's view of the retries (from the attempts' client spans) next to the service's.
pub(super) fn retry_outcome(attempts: &[SpanLine], truth: RetryCounts) -> RetryOutcome {
    let agent = RetryCounts {
        calls: attempts
            .iter()
            .filter(|s| s.attribution.retry.is_some_and(|r| r.index == 0))
            .count() as u64,
        attempts: attempts
            .iter()
            .filter(|s| s.attribution.retry.is_some())
            .count() as u64,
    };
    let failed: Vec<&SpanLine> = attempts
        .iter()
        .filter(|s| s.attribution.retry.is_some_and(|r| r.failed))
        .collect();
    let on_retransmit = |s: &&&SpanLine| {
        matches!(
            s.attribution.cause,
            Cause::TcpRetransmit | Cause::TcpConnectRetransmit
        )
    };
    RetryOutcome {
        truth,
        agent,
        failed_ms: failed.iter().map(|s| s.duration_ms).sum(),
        failed_retransmit_ms: failed
            .iter()
            .filter(on_retransmit)
            .map(|s| s.duration_ms)
            .sum(),
    }
}

pub(super) fn throttle_check(reports: &[Report], cgroup: &str) -> ThrottleCheck {
    let rows = reports
        .iter()
        .flat_map(|r| &r.throttling)
        .filter(|t| t.cgroup == cgroup);
    let mut check = ThrottleCheck {
        cpu_stat_ms: 0.0,
        agent_ms: 0.0,
        agent_threads_sum_ms: 0.0,
    };
    for row in rows {
        check.cpu_stat_ms += row.cpu_stat_throttled_ns as f64 / 1e6;
        check.agent_ms += row.threads_throttled_wall_ns as f64 / 1e6;
        check.agent_threads_sum_ms += row.threads_throttled_ns as f64 / 1e6;
    }
    check
}

/// The agent's reports of the job's OOM kills: each killed worker found by its pid, and named
/// with the job's cgroup and the limit it hit.
pub(super) fn oom_outcome(reports: &[Report], truth: OomTruth) -> OomOutcome {
    let kills: Vec<&culprit::model::OomKill> = reports
        .iter()
        .flat_map(|r| &r.oom_kills)
        .filter(|k| truth.killed_pids.contains(&k.pid))
        .collect();
    let mut pids: Vec<u32> = kills.iter().map(|k| k.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    let identified = kills
        .iter()
        .filter(|k| {
            k.cgroup.as_deref() == Some(truth.cgroup.as_str())
                && k.memory_limit_bytes == Some(truth.limit_bytes)
        })
        .map(|k| k.pid)
        .collect::<std::collections::BTreeSet<u32>>()
        .len();
    OomOutcome {
        reported: pids.len(),
        identified,
        truth,
    }
}
