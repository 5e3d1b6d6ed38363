//! `culprit status`: the agent's health on one screen; the exit code says whether every signal
//! runs (0), some run degraded (2), or the agent could not be asked (1).

use std::fmt::Write as _;

use crate::live::{
    client::{self, Endpoint},
    view::Health,
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
    Ok(if health.degraded && !liveness {
        std::process::ExitCode::from(EXIT_DEGRADED)
    } else {
        std::process::ExitCode::SUCCESS
    })
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
            "          {} not attached: {}",
            p.program,
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
        "spans     {} received, {} joined, {} unidentified; {}",
        o.ingress.spans_received,
        o.join.spans_joined,
        o.join.spans_unidentified,
        if o.exporting {
            format!(
                "{} exported, queue {}, {} dropped",
                o.export.spans_exported, o.export.queue_depth, o.export.spans_dropped_queue_full
            )
        } else {
            "no export endpoint (printed only)".to_string()
        }
    );
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
        if h.degraded {
            "DEGRADED: some signals are missing or a task stopped (see above)"
        } else {
            "OK: every signal is running"
        }
    );
    out
}
