//! The report as a self-contained HTML page (one chart per service, drawn by `tools::charts`)
//! and as Markdown, from the same figures.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::model::{CauseShare, ClientSummary, ReportRequest, ServiceReport};
use crate::{cause::Cause, live::view::ThrottledView, tools::charts};

/// Everything a report says, as `report.json` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub from_unix_ms: u64,
    pub to_unix_ms: u64,
    /// The load generator's results file, with its lines that were no request and its requests
    /// no span of this agent's matched.
    pub client_file: Option<String>,
    pub client_skipped_lines: usize,
    pub client_unjoined: usize,
    pub clients: Vec<ClientSummary>,
    pub services: Vec<ServiceReport>,
    pub throttled: Vec<ThrottledView>,
    /// The OOM kills on the node in the window, oldest first.
    #[serde(default)]
    pub oom_kills: Vec<crate::signals::OomKill>,
    /// The agent keeps its most recent requests only: what the window may miss.
    pub kept_requests: usize,
}

const CHART_SIZE: (u32, u32) = (1100, 680);

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn shares_text(shares: &[CauseShare]) -> String {
    let mut out: Vec<String> = shares
        .iter()
        .filter(|s| s.share >= 0.01)
        .map(|s| {
            let who = s
                .who
                .first()
                .map(|w| format!(" ({})", w.0))
                .unwrap_or_default();
            format!("{} {:.0}%{who}", cause_label(s.cause), s.share * 100.0)
        })
        .collect();
    if out.is_empty() {
        out.push("no excess".into());
    }
    out.join(", ")
}

/// The cause's name; the time outside the server reads as what it is.
fn cause_label(cause: Cause) -> &'static str {
    match cause {
        Cause::Unknown => "outside the server (network, client) or unobserved",
        c => c.as_str(),
    }
}

fn decomposition(r: &ReportRequest) -> String {
    let parts: Vec<String> = r
        .parts
        .each()
        .filter(|(_, ms)| *ms >= 0.05)
        .map(|(p, ms)| format!("{} {ms:.1} ms", p.name()))
        .collect();
    let who = [
        r.neighbour.as_deref().map(|n| format!("neighbour {n}")),
        r.retransmit_peer.as_deref().map(|p| format!("peer {p}")),
        r.disk_device.as_deref().map(|d| format!("device {d}")),
        r.lock_holder.as_deref().map(|h| format!("lock holder {h}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    format!(
        "{} {:.1} ms (trace {}) cause={}: {}{}",
        r.name,
        r.latency_ms,
        r.trace_id,
        r.cause,
        parts.join(", "),
        if who.is_empty() {
            String::new()
        } else {
            format!("; {who}")
        }
    )
}

fn chart(s: &ServiceReport) -> anyhow::Result<String> {
    charts::svg(CHART_SIZE, |root| {
        let (top, bottom) = root.split_vertically(CHART_SIZE.1 / 2);
        charts::latency_over_time(&top, s.bin_s, &s.bins)?;
        let (left, right) = bottom.split_horizontally(CHART_SIZE.0 / 2);
        charts::time_by_cause(
            &left,
            "Share of request time by cause",
            &[("all requests", &s.total), ("slowest 10%", &s.slow_total)],
        )?;
        charts::latency_histogram(&right, &s.histogram)
    })
}

pub fn html(report: &LoadReport) -> anyhow::Result<String> {
    let mut h = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Culprit report</title><style>\
         body{font-family:sans-serif;margin:2em;max-width:1150px;color:#222}\
         table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}\
         figure.chart{margin:0}code{font-size:90%}</style></head><body>\n<h1>Culprit report</h1>\n",
    );
    let _ = writeln!(h, "<p>{}</p>", escape(&summary_line(report)));
    if !report.clients.is_empty() {
        h.push_str("<h2>What the load generator saw</h2>\n<table><tr><th>group</th><th>requests</th><th>joined</th><th>p50 ms</th><th>p99 ms</th><th>p99 excess by cause</th></tr>\n");
        for c in &report.clients {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td></tr>",
                escape(c.group.as_deref().unwrap_or("all")),
                c.requests,
                c.joined,
                c.p50_ms,
                c.p99_ms,
                escape(&shares_text(&c.p99_by_cause))
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("<h2>Services</h2>\n<table><tr><th>service</th><th>requests</th><th>p50 ms</th><th>p99 ms</th><th>p99 excess by cause, and who is behind it</th></tr>\n");
    for s in &report.services {
        let _ = writeln!(
            h,
            "<tr><td><a href=\"#{0}\">{0}</a></td><td>{1}</td><td>{2:.1}</td><td>{3:.1}</td><td>{4}</td></tr>",
            escape(&s.service),
            s.requests,
            s.p50_ms,
            s.p99_ms,
            escape(&shares_text(&s.p99_by_cause))
        );
    }
    h.push_str("</table>\n");
    for s in &report.services {
        let _ = writeln!(h, "<section id=\"{0}\"><h2>{0}</h2>", escape(&s.service));
        let _ = writeln!(
            h,
            "<figure class=\"chart\" data-service=\"{}\">{}</figure>",
            escape(&s.service),
            chart(s)?
        );
        h.push_str("<h3>Slowest requests</h3><ol>\n");
        for r in &s.slowest {
            let _ = writeln!(h, "<li><code>{}</code></li>", escape(&decomposition(r)));
        }
        h.push_str("</ol></section>\n");
    }
    if !report.throttled.is_empty() {
        h.push_str("<h2>Throttled cgroups</h2>\n<table><tr><th>cgroup</th><th>periods throttled</th><th>throttled ms (cpu.stat)</th><th>a watched thread waited throttled, ms</th></tr>\n");
        for t in &report.throttled {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td></tr>",
                escape(&t.cgroup),
                t.nr_throttled,
                t.cpu_stat_throttled_ms,
                t.agent_throttled_ms
            );
        }
        h.push_str("</table>\n");
    }
    if !report.oom_kills.is_empty() {
        h.push_str("<h2>Killed for memory (OOM)</h2>\n<table><tr>");
        for head in KILL_COLUMNS {
            let _ = write!(h, "<th>{head}</th>");
        }
        h.push_str("</tr>\n");
        for row in kill_rows(report) {
            h.push_str("<tr>");
            for cell in row {
                let _ = write!(h, "<td>{}</td>", escape(&cell));
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    Ok(h)
}

const KILL_COLUMNS: [&str; 5] = [
    "when (UTC)",
    "process",
    "cgroup",
    "pod / container",
    "limit",
];

/// One row per OOM kill, in [`KILL_COLUMNS`] order.
fn kill_rows(report: &LoadReport) -> Vec<[String; 5]> {
    report
        .oom_kills
        .iter()
        .map(|k| {
            let when = k
                .unix_ms
                .and_then(|ms| jiff::Timestamp::from_millisecond(ms as i64).ok())
                .map_or("?".to_string(), |t| format!("{t:.0}"));
            let who = format!("{} ({})", k.comm.as_deref().unwrap_or("?"), k.pid);
            let owner = match (&k.pod_uid, &k.container_id) {
                (Some(pod), Some(c)) => format!("pod {pod}, container {}", &c[..c.len().min(12)]),
                (None, Some(c)) => format!("container {}", &c[..c.len().min(12)]),
                (Some(pod), None) => format!("pod {pod}"),
                (None, None) => String::new(),
            };
            let limit = k
                .memory_limit_bytes
                .map_or(String::new(), |b| format!("{} MiB", b >> 20));
            [
                when,
                who,
                k.cgroup.clone().unwrap_or_default(),
                owner,
                limit,
            ]
        })
        .collect()
}

fn summary_line(report: &LoadReport) -> String {
    let mut line = format!(
        "{} requests of {} services, {} s of the agent's data ({} requests kept by the agent \
         now: it keeps its most recent {}).",
        report.services.iter().map(|s| s.requests).sum::<usize>(),
        report.services.len(),
        (report.to_unix_ms.saturating_sub(report.from_unix_ms)) / 1000,
        report.kept_requests,
        crate::live::view::MAX_REQUESTS
    );
    if let Some(file) = &report.client_file {
        let _ = write!(
            line,
            " Joined with {file}: {} client requests had no span here, {} lines were no request.",
            report.client_unjoined, report.client_skipped_lines
        );
    }
    line
}

pub fn markdown(report: &LoadReport) -> String {
    let mut m = format!("# Culprit report\n\n{}\n\n", summary_line(report));
    if !report.clients.is_empty() {
        m.push_str("## What the load generator saw\n\n| group | requests | joined | p50 ms | p99 ms | p99 excess by cause |\n|---|---:|---:|---:|---:|---|\n");
        for c in &report.clients {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {:.1} | {:.1} | {} |",
                c.group.as_deref().unwrap_or("all"),
                c.requests,
                c.joined,
                c.p50_ms,
                c.p99_ms,
                shares_text(&c.p99_by_cause)
            );
        }
        m.push('\n');
    }
    m.push_str("## Services\n\n| service | requests | p50 ms | p99 ms | p99 excess by cause, and who is behind it |\n|---|---:|---:|---:|---|\n");
    for s in &report.services {
        let _ = writeln!(
            m,
            "| {} | {} | {:.1} | {:.1} | {} |",
            s.service,
            s.requests,
            s.p50_ms,
            s.p99_ms,
            shares_text(&s.p99_by_cause)
        );
    }
    for s in &report.services {
        let _ = writeln!(m, "\n### {}: slowest requests\n", s.service);
        for r in &s.slowest {
            let _ = writeln!(m, "- `{}`", decomposition(r));
        }
    }
    if !report.oom_kills.is_empty() {
        let _ = writeln!(
            m,
            "\n## Killed for memory (OOM)\n\n| {} |\n|{}",
            KILL_COLUMNS.join(" | "),
            "---|".repeat(KILL_COLUMNS.len())
        );
        for row in kill_rows(report) {
            let _ = writeln!(m, "| {} |", row.join(" | "));
        }
    }
    m
}
