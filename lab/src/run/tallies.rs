//! What a scenario's run tallies apart from the spans: the load generator's view of it, the
//! service's count of what it served, and the agent's throttling against `cpu.stat`.

use std::{collections::HashMap, io::Read as _};

use anyhow::Context as _;
use culprit::model::Report;
use serde::Deserialize;

use crate::{
    scenario::{
        accuracy,
        outcome::{ClientCounts, ThrottleCheck},
    },
    service::load::ClientSample,
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
    ClientCounts {
        sent: samples.len(),
        failed: samples.iter().filter(|s| !s.ok).count(),
        p50_ms: accuracy::quantile(&ms, 0.5),
        p99_ms: accuracy::quantile(&ms, 0.99),
    }
}

pub(super) fn served_count(stdout: Option<std::process::ChildStdout>) -> anyhow::Result<u64> {
    let mut text = String::new();
    stdout
        .context("the service's stdout")?
        .read_to_string(&mut text)?;
    #[derive(Deserialize)]
    struct Served {
        served: u64,
    }
    let line = text.lines().last().unwrap_or_default();
    let served: Served =
        serde_json::from_str(line).with_context(|| format!("the service's exit line: {line:?}"))?;
    Ok(served.served)
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
