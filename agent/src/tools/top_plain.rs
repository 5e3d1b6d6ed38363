//! `culprit top` as plain text, for `--once` or when stdout is not a terminal.

use std::fmt::Write as _;

use crate::{live::view::Snapshot, printable::printable};

pub(crate) const NOTHING_YET: &str = "no requests observed yet: point the applications' OTLP exporters at \
                           this agent (gRPC 127.0.0.1:4317, HTTP 127.0.0.1:4318)";

/// The end of `s` if it is longer than `n` characters (cgroup paths matter at their end).
pub(crate) fn tail(s: &str, n: usize) -> String {
    let count = s.chars().count();
    if count <= n {
        s.to_string()
    } else {
        let skip = count - n + 1;
        format!("…{}", s.chars().skip(skip).collect::<String>())
    }
}

pub(crate) fn head(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!(
            "{}…",
            s.chars().take(n.saturating_sub(1)).collect::<String>()
        )
    }
}

/// The same content as plain text, for `--once` or when stdout is not a terminal.
pub fn plain(snap: &Snapshot) -> String {
    let mut out = String::new();
    let h = &snap.health;
    let _ = writeln!(
        out,
        "culprit top: probes {}/{}, {} spans received, last {:.0}s{}",
        h.probes_attached,
        h.probes_total,
        h.otlp.ingress.spans_received,
        snap.window_ms as f64 / 1e3,
        if h.degraded { ", DEGRADED" } else { "" }
    );
    if snap.services.is_empty() {
        let _ = writeln!(out, "{NOTHING_YET}");
        return out;
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:>6} {:>8} {:>8}  DOMINANT CAUSE",
        "SERVICE", "REQS", "P50 ms", "P99 ms"
    );
    for s in &snap.services {
        let _ = writeln!(
            out,
            "{:<24} {:>6} {:>8.1} {:>8.1}  {} {:.0}%",
            head(&s.key, 24),
            s.requests,
            s.p50_ms,
            s.p99_ms,
            s.dominant_cause,
            s.dominant_share * 100.0
        );
    }
    let section = |out: &mut String, title: &str, rows: Vec<String>| {
        let _ = writeln!(out, "\n{title}");
        if rows.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for r in rows {
            let _ = writeln!(out, "  {r}");
        }
    };
    section(
        &mut out,
        "THROTTLED CGROUPS (cpu.stat / agent)",
        snap.throttled
            .iter()
            .map(|t| {
                format!(
                    "{}  {:.0} ms / {:.0} ms, {} periods",
                    t.cgroup, t.cpu_stat_throttled_ms, t.agent_throttled_ms, t.nr_throttled
                )
            })
            .collect(),
    );
    section(
        &mut out,
        "NOISY NEIGHBOURS (contention they caused)",
        snap.neighbours
            .iter()
            .map(|n| {
                format!(
                    "{}  {:.1} ms over {} requests",
                    n.neighbour, n.contention_ms, n.requests
                )
            })
            .collect(),
    );
    section(
        &mut out,
        "RETRANSMIT PEERS",
        snap.retransmits
            .iter()
            .map(|p| {
                format!(
                    "{}  {} retransmits, {:.0} ms",
                    p.peer, p.retransmits, p.cost_ms
                )
            })
            .collect(),
    );
    if !snap.oom_kills.is_empty() {
        section(
            &mut out,
            "RECENT OOM KILLS",
            snap.oom_kills
                .iter()
                .rev()
                .map(|k| printable(&crate::report::oom_logs::body(k)).into_owned())
                .collect(),
        );
    }
    section(
        &mut out,
        "SLOWEST REQUESTS",
        snap.slow_requests
            .iter()
            .take(10)
            .map(|r| {
                format!(
                    "{:>8.1} ms  {}  {}  {}  trace {}",
                    r.duration_ms,
                    printable(r.service.as_deref().unwrap_or("?")),
                    printable(&r.name),
                    r.cause,
                    r.trace_id
                )
            })
            .collect(),
    );
    out
}
