//! The lab's self-contained HTML report: per scenario, one chart (the agent's `tools::charts`,
//! as `culprit report` draws them) of the time by cause (all requests next to the slowest 10%)
//! and the latency histogram coloured by the agent's verdict, with the numbers and the verdict
//! in text.

use std::fmt::Write as _;

use super::present;
use culprit::{cause::Cause, tools::charts};

use crate::scenario::outcome::ScenarioRun;

const CHART_SIZE: (u32, u32) = (1100, 340);

pub(crate) fn render(runs: &[ScenarioRun]) -> anyhow::Result<String> {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Culprit lab report</title><style>\
         body{font-family:sans-serif;margin:2em;max-width:1150px;color:#222}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}\
         figure.chart{margin:0}.found{color:#1a7f37}.missed{color:#b3261e}\
         code{font-size:90%}</style></head><body>\n\
         <h1>Culprit lab report</h1>\n\
         <p>Each scenario runs the lab service under steady load, first with nothing injected \
         (the reference), then with the fault. Below, for each: where the requests' time went \
         according to the agent (all requests, and the slowest 10%), and the latency \
         distribution coloured by the cause the agent named for each request.</p>\n",
    );
    html.push_str("<table><tr><th>scenario</th><th>injected</th><th>requests</th><th>p50 ms</th><th>p99 ms</th><th>verdict</th></tr>\n");
    for run in runs {
        let v = present::verdict(run);
        let _ = writeln!(
            html,
            "<tr><td><a href=\"#{0}\">{0}</a></td><td>{1}</td><td>{2}</td><td>{3:.1}</td><td>{4:.1}</td><td class=\"{5}\">{6}</td></tr>",
            run.scenario,
            escape(&run.description),
            run.summary.requests,
            run.summary.p50_ms,
            run.summary.p99_ms,
            if v.found { "found" } else { "missed" },
            escape(&v.text)
        );
    }
    html.push_str("</table>\n");
    for run in runs {
        let _ = writeln!(
            html,
            "<section id=\"{0}\"><h2>{0}</h2><p>{1}</p>",
            run.scenario,
            escape(&run.description)
        );
        let _ = writeln!(
            html,
            "<figure class=\"chart\" data-scenario=\"{}\">{}</figure>",
            run.scenario,
            chart_svg(run)?
        );
        if let Some(r) = run.slowest() {
            let _ = writeln!(
                html,
                "<p>Slowest request: <code>{}</code></p>",
                escape(&present::decomposition(r))
            );
        }
        let v = present::verdict(run);
        let _ = writeln!(
            html,
            "<p class=\"{}\">{}</p></section>",
            if v.found { "found" } else { "missed" },
            escape(&v.text)
        );
    }
    html.push_str("</body></html>\n");
    Ok(html)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn chart_svg(run: &ScenarioRun) -> anyhow::Result<String> {
    let requests: Vec<(f64, Cause)> = run
        .requests
        .iter()
        .map(|r| (r.latency_ms, r.cause))
        .collect();
    charts::svg(CHART_SIZE, |root| {
        let (left, right) = root.split_horizontally(CHART_SIZE.0 / 2);
        charts::time_by_cause(
            &left,
            "Share of request time by cause",
            &[
                ("all requests", &run.summary.total),
                ("slowest 10%", &run.summary.slow_total),
            ],
        )?;
        charts::latency_histogram(&right, &requests)
    })
}
