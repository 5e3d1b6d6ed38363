//! The lab's self-contained HTML report: per scenario, one chart (drawn with plotters) of the
//! time by cause (all requests next to the slowest 10%) and the latency histogram coloured by
//! the agent's verdict, with the numbers and the verdict in text.

use std::fmt::Write as _;

use plotters::{coord::Shift, prelude::*};

use super::present;
use culprit::cause::{Cause, Colour, Part};

use crate::scenario::{
    accuracy::{Parts, quantile},
    outcome::ScenarioRun,
};

const CHART_SIZE: (u32, u32) = (1100, 340);

/// A cause's or a part's colour (shared with the agent's tools), for both panels.
fn rgb(colour: Colour) -> RGBColor {
    let (r, g, b) = colour.rgb;
    RGBColor(r, g, b)
}

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
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (left, right) = root.split_horizontally(CHART_SIZE.0 / 2);
        time_by_cause(&left, &run.summary.total, &run.summary.slow_total)?;
        latency_histogram(&right, run)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn draw_legend<'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 11))
        .draw()
        .map_err(plot_error)
}

fn plot_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e}")
}

/// Two stacked bars: the share of time by cause over all requests and over the slowest 10%.
fn time_by_cause(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    all: &Parts,
    slow: &Parts,
) -> anyhow::Result<()> {
    let labels = ["all requests", "slowest 10%"];
    let mut chart = ChartBuilder::on(area)
        .caption("Share of request time by cause", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(95)
        .build_cartesian_2d(0f64..100f64, -0.5f64..2.6f64)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(2)
        .y_label_formatter(&|y| {
            labels
                .get(y.round().clamp(0.0, 1.0) as usize)
                .copied()
                .unwrap_or("")
                .to_string()
        })
        .x_desc("% of time")
        .draw()
        .map_err(plot_error)?;
    for (i, part) in Part::ALL.into_iter().enumerate() {
        let colour = rgb(part.colour());
        let mut bars = Vec::new();
        for (row, parts) in [all, slow].into_iter().enumerate() {
            let values = parts.values();
            let total: f64 = values.iter().sum();
            if total <= 0.0 {
                continue;
            }
            let x0 = values[..i].iter().sum::<f64>() / total * 100.0;
            let x1 = x0 + values[i] / total * 100.0;
            let y = row as f64;
            bars.push(Rectangle::new(
                [(x0, y - 0.3), (x1, y + 0.3)],
                colour.filled(),
            ));
        }
        chart
            .draw_series(bars)
            .map_err(plot_error)?
            .label(part.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
    }
    draw_legend(&mut chart)
}

/// Requests per latency bin (log scale), stacked by the cause the agent named.
fn latency_histogram(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    run: &ScenarioRun,
) -> anyhow::Result<()> {
    let latencies: Vec<f64> = run.requests.iter().map(|r| r.latency_ms).collect();
    let lo = quantile(&latencies, 0.0).max(0.05) * 0.8;
    let hi = (quantile(&latencies, 1.0) * 1.25).max(lo * 10.0);
    const BINS: usize = 30;
    let ratio = (hi / lo).powf(1.0 / BINS as f64);
    let edge = |i: usize| lo * ratio.powi(i as i32);
    let bin_of = |ms: f64| (((ms / lo).ln() / ratio.ln()).floor().max(0.0) as usize).min(BINS - 1);
    let causes: Vec<Cause> = {
        let mut c: Vec<Cause> = run.requests.iter().map(|r| r.cause).collect();
        c.sort_unstable();
        c.dedup();
        c
    };
    // counts[bin][cause]
    let mut counts = vec![vec![0u32; causes.len()]; BINS];
    for r in &run.requests {
        let c = causes.iter().position(|c| *c == r.cause).unwrap_or(0);
        counts[bin_of(r.latency_ms)][c] += 1;
    }
    let max = counts
        .iter()
        .map(|b| b.iter().sum::<u32>())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Latency (ms, log scale) by the agent's verdict",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d((lo..hi).log_scale(), 0u32..(max + max / 5 + 1))
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms)")
        .y_desc("requests")
        .draw()
        .map_err(plot_error)?;
    for (ci, cause) in causes.iter().enumerate() {
        let colour = rgb(cause.colour());
        let bars: Vec<_> = (0..BINS)
            .filter(|&b| counts[b][ci] > 0)
            .map(|b| {
                let below: u32 = counts[b][..ci].iter().sum();
                Rectangle::new(
                    [(edge(b), below), (edge(b + 1), below + counts[b][ci])],
                    colour.filled(),
                )
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(plot_error)?
            .label(cause.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
    }
    draw_legend(&mut chart)
}
