//! The agent's metrics for clusters that scrape rather than push: the same OTLP metrics it
//! exports, in the Prometheus text exposition format, named as the OpenTelemetry specification
//! maps OTLP to Prometheus (`.` to `_`, the unit as a suffix, `_total` on counters), served on
//! `/metrics` by an opt-in listener (`--prometheus-listen`).

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{KeyValue, any_value::Value},
    metrics::v1::{Metric, metric::Data, number_data_point},
};

/// The last exposition built, served as is to every scrape.
pub(crate) type Exposition = Arc<Mutex<String>>;

/// A metric or label name as Prometheus allows it: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The metric's Prometheus name: its unit as a suffix (annotations in braces carry none),
/// `_total` for a monotonic sum.
fn metric_name(m: &Metric, counter: bool) -> String {
    let mut name = sanitize(&m.name);
    let unit = match m.unit.as_str() {
        "s" => "seconds",
        "By" => "bytes",
        "ms" => "milliseconds",
        u if u.is_empty() || u.starts_with('{') || u == "1" => "",
        u => u,
    };
    if !unit.is_empty() && !name.ends_with(unit) {
        name.push('_');
        name.push_str(&sanitize(unit));
    }
    if counter {
        name.push_str("_total");
    }
    name
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(attrs: &[KeyValue], extra: Option<(&str, String)>) -> String {
    let mut pairs: Vec<String> = attrs
        .iter()
        .filter_map(|kv| {
            let v = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                Value::DoubleValue(d) => d.to_string(),
                _ => return None,
            };
            Some(format!("{}=\"{}\"", sanitize(&kv.key), escape(&v)))
        })
        .collect();
    if let Some((k, v)) = extra {
        pairs.push(format!("{k}=\"{v}\""));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

fn number(v: Option<&number_data_point::Value>) -> f64 {
    match v {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => 0.0,
    }
}

/// A counter's or a gauge's HELP, TYPE and one line per point.
fn write_numbers(
    out: &mut String,
    m: &Metric,
    name: &str,
    kind: &str,
    points: &[opentelemetry_proto::tonic::metrics::v1::NumberDataPoint],
) {
    let _ = writeln!(out, "# HELP {name} {}", escape(&m.description));
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for p in points {
        let _ = writeln!(
            out,
            "{name}{} {}",
            labels(&p.attributes, None),
            number(p.value.as_ref())
        );
    }
}

/// The text exposition of every sum, gauge and histogram in `req`.
pub(crate) fn exposition(req: &ExportMetricsServiceRequest) -> String {
    let mut out = String::new();
    let metrics = req
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics);
    for m in metrics {
        match &m.data {
            Some(Data::Sum(sum)) => {
                let kind = if sum.is_monotonic { "counter" } else { "gauge" };
                let name = metric_name(m, sum.is_monotonic);
                write_numbers(&mut out, m, &name, kind, &sum.data_points);
            }
            Some(Data::Gauge(gauge)) => {
                let name = metric_name(m, false);
                write_numbers(&mut out, m, &name, "gauge", &gauge.data_points);
            }
            Some(Data::Histogram(h)) => {
                let name = metric_name(m, false);
                let _ = writeln!(out, "# HELP {name} {}", escape(&m.description));
                let _ = writeln!(out, "# TYPE {name} histogram");
                for p in &h.data_points {
                    // OTLP counts per bucket; Prometheus counts up to each bound.
                    let mut cumulative = 0u64;
                    for (i, count) in p.bucket_counts.iter().enumerate() {
                        cumulative += count;
                        let le = p
                            .explicit_bounds
                            .get(i)
                            .map_or("+Inf".to_string(), |b| b.to_string());
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {cumulative}",
                            labels(&p.attributes, Some(("le", le)))
                        );
                    }
                    if p.bucket_counts.len() <= p.explicit_bounds.len() {
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {}",
                            labels(&p.attributes, Some(("le", "+Inf".into()))),
                            p.count
                        );
                    }
                    let l = labels(&p.attributes, None);
                    let _ = writeln!(out, "{name}_sum{l} {}", p.sum.unwrap_or(0.0));
                    let _ = writeln!(out, "{name}_count{l} {}", p.count);
                }
            }
            _ => {}
        }
    }
    out
}

/// The names of every series the agent's `/metrics` can show (a histogram's `_bucket`, `_sum` and
/// `_count`), from the metrics the agent builds: what dashboards may query.
pub fn metric_names() -> Vec<String> {
    let metrics = super::metrics::AgentMetrics::new(0);
    let runq = [("/".to_string(), culprit_common::RunqHist::ZERO)];
    let text = exposition(&metrics.export(&super::Report::default(), &runq, 0));
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("# TYPE ")?.split(' ');
            Some((words.next()?.to_string(), words.next()? == "histogram"))
        })
        .flat_map(|(name, histogram)| {
            if histogram {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .map(|s| format!("{name}{s}"))
                    .collect()
            } else {
                vec![name]
            }
        })
        .collect();
    names.sort();
    names
}

async fn metrics(State(text): State<Exposition>) -> impl IntoResponse {
    let body = text.lock().map(|t| t.clone()).unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// Serves `/metrics` on `addr` until `shutdown`.
pub(crate) async fn serve(
    addr: std::net::SocketAddr,
    text: Exposition,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the Prometheus endpoint on {addr}"))?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(text);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving /metrics")
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::metrics::v1::{
        Histogram, HistogramDataPoint, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    };

    use super::*;
    use crate::otlp::string_kv;

    fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        }
    }

    #[test]
    fn counters_and_histograms_read_as_prometheus_names_them() {
        let sum = Metric {
            name: "culprit.attributed.time".into(),
            unit: "s".into(),
            description: "Span time by dominant cause".into(),
            data: Some(Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    attributes: vec![
                        string_kv("culprit.cause", "cpu.contention"),
                        string_kv("service.name", "check\"out"),
                    ],
                    value: Some(number_data_point::Value::AsDouble(1.5)),
                    ..NumberDataPoint::default()
                }],
                is_monotonic: true,
                ..Sum::default()
            })),
            ..Metric::default()
        };
        let kills = Metric {
            name: "culprit.oom.kills".into(),
            unit: "{kill}".into(),
            data: Some(Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    value: Some(number_data_point::Value::AsInt(2)),
                    ..NumberDataPoint::default()
                }],
                is_monotonic: true,
                ..Sum::default()
            })),
            ..Metric::default()
        };
        let hist = Metric {
            name: "culprit.sched.runqueue.delay".into(),
            unit: "s".into(),
            data: Some(Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: vec![string_kv("culprit.cgroup", "/a")],
                    count: 6,
                    sum: Some(0.5),
                    bucket_counts: vec![1, 2, 3],
                    explicit_bounds: vec![0.001, 0.01],
                    ..HistogramDataPoint::default()
                }],
                ..Histogram::default()
            })),
            ..Metric::default()
        };
        let text = exposition(&request(vec![sum, kills, hist]));
        assert!(
            text.contains("# TYPE culprit_attributed_time_seconds_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "culprit_attributed_time_seconds_total{culprit_cause=\"cpu.contention\",service_name=\"check\\\"out\"} 1.5\n"
            ),
            "{text}"
        );
        assert!(text.contains("culprit_oom_kills_total 2\n"), "{text}");
        assert!(text.contains("culprit_sched_runqueue_delay_seconds_bucket{culprit_cgroup=\"/a\",le=\"0.001\"} 1\n"), "{text}");
        assert!(
            text.contains(
                "culprit_sched_runqueue_delay_seconds_bucket{culprit_cgroup=\"/a\",le=\"0.01\"} 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "culprit_sched_runqueue_delay_seconds_bucket{culprit_cgroup=\"/a\",le=\"+Inf\"} 6\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("culprit_sched_runqueue_delay_seconds_count{culprit_cgroup=\"/a\"} 6\n"),
            "{text}"
        );
    }

    #[test]
    fn the_catalogue_holds_every_metric_the_agent_builds() {
        let names = metric_names();
        for name in [
            "culprit_attributed_time_seconds_total",
            "culprit_oom_kills_total",
            "culprit_sched_runqueue_delay_seconds_bucket",
            "culprit_agent_spans_received_total",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
        }
    }

    #[test]
    fn names_are_made_legal() {
        assert_eq!(sanitize("a.b-c/d"), "a_b_c_d");
        assert_eq!(sanitize("9lives"), "_9lives");
    }
}
