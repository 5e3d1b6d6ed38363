//! Charts as SVG, drawn with plotters in the causes' own colours: the lab's report and
//! `culprit report` draw with these, so that a cause looks the same everywhere.

use plotters::{
    coord::{Shift, ranged1d::SegmentValue},
    prelude::*,
};

use crate::{
    cause::{Cause, Colour, Part},
    join::parts::Parts,
};

pub type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// A cause's or a part's colour, as plotters takes it.
fn rgb(colour: Colour) -> RGBColor {
    let (r, g, b) = colour.rgb;
    RGBColor(r, g, b)
}

fn plot_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e}")
}

/// An SVG document of `size` pixels, drawn by `draw` on a white page.
pub fn svg(
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        draw(&root)?;
        root.present().map_err(plot_error)?;
    }
    Ok(out)
}

/// A latency in ms for an axis: at most three significant digits, no float noise
/// (`0.4`, not `0.40000000000000002`).
pub fn ms_label(ms: f64) -> String {
    let text = if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else if ms >= 1.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.3}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

fn legend<'a, X: Ranged, Y: Ranged>(
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

/// One stacked bar per row: the share of each row's time by part. Each label sits on its own
/// bar (a segmented axis: one segment per row).
pub fn time_by_cause(area: &Area<'_>, title: &str, rows: &[(&str, &Parts)]) -> anyhow::Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(95)
        // A segmented range of 0..n has n + 1 segments, the last one empty.
        .build_cartesian_2d(
            0f64..100f64,
            (0..rows.len().saturating_sub(1)).into_segmented(),
        )
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows.len().max(1))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => rows.get(*i).map_or("", |r| r.0).to_string(),
            _ => String::new(),
        })
        .x_desc("% of time")
        .draw()
        .map_err(plot_error)?;
    for (i, part) in Part::ALL.into_iter().enumerate() {
        let colour = rgb(part.colour());
        let bars: Vec<_> = rows
            .iter()
            .enumerate()
            .filter_map(|(row, (_, parts))| {
                let values = parts.values();
                let total: f64 = values.iter().sum();
                (total > 0.0 && values[i] > 0.0).then(|| {
                    let x0 = values[..i].iter().sum::<f64>() / total * 100.0;
                    let x1 = x0 + values[i] / total * 100.0;
                    Rectangle::new(
                        [
                            (x0, SegmentValue::Exact(row)),
                            (x1, SegmentValue::Exact(row + 1)),
                        ],
                        colour.filled(),
                    )
                })
            })
            .collect();
        if bars.is_empty() {
            continue;
        }
        chart
            .draw_series(bars)
            .map_err(plot_error)?
            .label(part.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
    }
    legend(&mut chart)
}

/// Requests per latency bin (log scale), stacked by the cause each was labelled with.
pub fn latency_histogram(area: &Area<'_>, requests: &[(f64, Cause)]) -> anyhow::Result<()> {
    let latencies: Vec<f64> = requests.iter().map(|r| r.0).collect();
    let lo = latencies
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .max(0.05)
        * 0.8;
    let hi = (latencies.iter().copied().fold(0.0, f64::max) * 1.25).max(lo * 10.0);
    const BINS: usize = 30;
    let ratio = (hi / lo).powf(1.0 / BINS as f64);
    let edge = |i: usize| lo * ratio.powi(i as i32);
    let bin_of = |ms: f64| (((ms / lo).ln() / ratio.ln()).floor().max(0.0) as usize).min(BINS - 1);
    let mut causes: Vec<Cause> = requests.iter().map(|r| r.1).collect();
    causes.sort_unstable();
    causes.dedup();
    // counts[bin][cause]
    let mut counts = vec![vec![0u32; causes.len()]; BINS];
    for (ms, cause) in requests {
        let c = causes.iter().position(|x| x == cause).unwrap_or(0);
        counts[bin_of(*ms)][c] += 1;
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
        .x_labels(8)
        .x_label_formatter(&|v| ms_label(*v))
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
    legend(&mut chart)
}

/// Mean latency per request over time, stacked by part: one bar per time bin (`bins`: the
/// bin's start in seconds from the window's start, and its requests' mean parts).
pub fn latency_over_time(area: &Area<'_>, bin_s: f64, bins: &[(f64, Parts)]) -> anyhow::Result<()> {
    let end_s = bins.last().map_or(1.0, |b| b.0 + bin_s).max(bin_s);
    let top = bins
        .iter()
        .map(|b| b.1.total_ms())
        .fold(0.0, f64::max)
        .max(0.001);
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Mean latency per request over time, by cause (ms)",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..end_s, 0f64..top * 1.2)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the window")
        .y_label_formatter(&|v| ms_label(*v))
        .draw()
        .map_err(plot_error)?;
    for (i, part) in Part::ALL.into_iter().enumerate() {
        let colour = rgb(part.colour());
        let bars: Vec<_> = bins
            .iter()
            .filter_map(|(t, parts)| {
                let values = parts.values();
                let y0: f64 = values[..i].iter().sum();
                (values[i] > 0.0).then(|| {
                    Rectangle::new(
                        [(*t, y0), (t + bin_s * 0.9, y0 + values[i])],
                        colour.filled(),
                    )
                })
            })
            .collect();
        if bars.is_empty() {
            continue;
        }
        chart
            .draw_series(bars)
            .map_err(plot_error)?
            .label(part.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
    }
    legend(&mut chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_carry_no_float_noise() {
        assert_eq!(ms_label(0.4000000000000001), "0.4");
        assert_eq!(ms_label(0.2), "0.2");
        assert_eq!(ms_label(1.0), "1");
        assert_eq!(ms_label(2.5), "2.5");
        assert_eq!(ms_label(12.34), "12.3");
        assert_eq!(ms_label(250.0), "250");
        assert_eq!(ms_label(0.05), "0.05");
    }

    #[test]
    fn every_chart_draws_as_svg_in_the_causes_colours() {
        let parts = Parts {
            on_cpu_ms: 5.0,
            contention_ms: 15.0,
            ..Parts::default()
        };
        let svg = svg((1100, 340), |root| {
            let (left, right) = root.split_horizontally(550);
            time_by_cause(&left, "t", &[("all", &parts), ("slowest", &parts)])?;
            latency_histogram(&right, &[(5.0, Cause::OnCpu), (20.0, Cause::CpuContention)])
        })
        .unwrap();
        let (r, g, b) = Part::Contention.colour().rgb;
        assert!(svg.contains(&format!("#{r:02X}{g:02X}{b:02X}")), "{svg}");
        assert!(
            svg.contains("\nslowest\n"),
            "the bar's label is drawn: {svg}"
        );
        let over_time = svg_of_time(&[(0.0, parts), (1.0, parts)]);
        assert!(over_time.contains("cpu.contention"));
    }

    fn svg_of_time(bins: &[(f64, Parts)]) -> String {
        svg((600, 300), |root| latency_over_time(root, 1.0, bins)).unwrap()
    }
}
