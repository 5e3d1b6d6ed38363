//! `culprit status`: the agent's health on one screen; the exit code says whether everything
//! runs (0), something runs degraded (2), or the agent could not be asked (1). With
//! `--liveness` (or `--readiness`) only a stuck event loop or a stopped task fails (2): a node
//! whose kernel lacks a hook, or whose backend is down, still serves.

use std::fmt::Write as _;

use crate::live::{
    client::{self, Endpoint},
    view::Health,
    vitals::LOOP_STUCK_AFTER_MS,
};

/// Exit code when a signal runs degraded or a task of the agent stopped.
pub(crate) const EXIT_DEGRADED: u8 = 2;

pub(crate) fn run(
    endpoint: &Endpoint,
    json: bool,
    liveness: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let health: Health = client::block_on(client::get(endpoint, "/v1/health"))??
        .ok_or_else(|| anyhow::anyhow!("{endpoint} has no /v1/health: is that a culprit agent?"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&health)?);
    } else {
        print!(
            "{}",
            render(&health, crate::host::clock::realtime_ns() / 1_000_000)
        );
    }
    let failed = if liveness {
        !health.alive
    } else {
        health.degraded
    };
    Ok(if failed {
        std::process::ExitCode::from(EXIT_DEGRADED)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

/// The exporter: what went out and, while exports fail, since when and why.
fn export_line(h: &Health, now_unix_ms: u64) -> String {
    let o = &h.otlp;
    if !o.exporting {
        return "no endpoint (spans printed only)".to_string();
    }
    let e = &o.export;
    let dropped = e.spans_dropped_queue_full + e.spans_dropped_retries_exhausted;
    let mut line = format!(
        "{} spans exported, {} rejected by the backend, {dropped} dropped, queue {}",
        e.spans_exported, e.spans_rejected_by_backend, e.queue_depth
    );
    let ago = |t: u64| duration(now_unix_ms.saturating_sub(t) as f64 / 1e3);
    match (e.failing_since_unix_ms, e.last_success_unix_ms) {
        (Some(since), last) => {
            let _ = write!(
                line,
                "\n          DEGRADED: failing for {} ({}); last success {}",
                ago(since),
                crate::printable::printable(e.last_error.as_deref().unwrap_or("?")),
                last.map_or("never".to_string(), |t| format!("{} ago", ago(t)))
            );
        }
        (None, Some(t)) => {
            let _ = write!(line, "; last success {} ago", ago(t));
        }
        (None, None) => {}
    }
    line
}

fn duration(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

pub(crate) fn render(h: &Health, now_unix_ms: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "culprit agent {} on Linux {}, up {}",
        h.version,
        h.kernel,
        duration(h.uptime_s)
    );
    let _ = writeln!(
        out,
        "probes    {}/{} attached",
        h.probes_attached, h.probes_total
    );
    for p in h.probes.iter().filter(|p| !p.attached) {
        let _ = writeln!(
            out,
            "          {} {}: {}",
            p.program,
            if p.standby {
                "on standby"
            } else {
                "not attached"
            },
            p.error.as_deref().unwrap_or("?")
        );
    }
    for s in &h.signals {
        let _ = writeln!(
            out,
            "signal    {:<18} {}",
            format!("{:?}", s.signal),
            if s.ok {
                "ok".to_string()
            } else {
                format!("DEGRADED: {}", s.reason.as_deref().unwrap_or("?"))
            }
        );
    }
    let lost: Vec<String> = h
        .events_lost
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    let _ = writeln!(
        out,
        "lost      {}",
        if lost.is_empty() {
            "nothing".to_string()
        } else {
            lost.join(" ")
        }
    );
    let o = &h.otlp;
    let _ = writeln!(
        out,
        "receivers {}",
        if h.receivers.is_empty() {
            "none".to_string()
        } else {
            h.receivers.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "spans     {} received, {} joined, {} unidentified",
        o.ingress.spans_received, o.join.spans_joined, o.join.spans_unidentified,
    );
    let _ = writeln!(out, "export    {}", export_line(h, now_unix_ms));
    if h.event_loop_lag_ms >= LOOP_STUCK_AFTER_MS {
        let _ = writeln!(
            out,
            "loop      STUCK: no turn for {}",
            duration(h.event_loop_lag_ms as f64 / 1e3)
        );
    }
    let _ = writeln!(
        out,
        "requests  {} kept for the live view ({} evicted)",
        h.requests_kept, h.requests_evicted
    );
    match h.last_report_unix_ms {
        Some(t) => {
            let _ = writeln!(
                out,
                "report    last {} ago",
                duration(now_unix_ms.saturating_sub(t) as f64 / 1e3)
            );
        }
        None => {
            let _ = writeln!(out, "report    none yet (the agent just started)");
        }
    }
    for f in &h.tasks_failed {
        let _ = writeln!(out, "task      {} STOPPED: {}", f.task, f.error);
    }
    let _ = writeln!(
        out,
        "=> {}",
        if !h.alive {
            "FAILING: the event loop is stuck or a task stopped (see above)"
        } else if h.degraded {
            "DEGRADED: some signals are missing or exports fail (see above)"
        } else {
            "OK: every signal is running"
        }
    );
    out
}
