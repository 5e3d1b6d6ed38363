//! The agent's own OTLP metrics, cumulative since start: time attributed per cause and service,
//! run-queue delay per cgroup, throttled time, retransmits per peer, and the pipeline's
//! self-metrics (spans in / joined / out / dropped, kernel events lost).

use std::collections::BTreeMap;

use culprit_common::{HIST_SLOTS, RunqHist, slot_lower_bound_ns};
use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{InstrumentationScope, KeyValue},
    metrics::v1::{
        AggregationTemporality, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, Sum, metric::Data, number_data_point,
    },
    resource::v1::Resource,
};

use super::series::{CappedSeries, MAX_LABEL_BYTES, bounded};
use crate::{cause::Cause, join::SpanLine, report::Report};

/// Cumulative state behind the metrics.
#[derive(Default)]
pub(crate) struct AgentMetrics {
    start_unix_ns: u64,
    /// (cause, service) -> seconds of span time. Service names come from senders and peers
    /// from anyone who reaches the node: both are capped.
    attributed_s: CappedSeries<(Cause, String), f64>,
    throttled_ns: BTreeMap<String, u64>,
    retransmits: CappedSeries<String, u64>,
    /// Attempts, calls (first attempts) and failed attempts' time by cause, per (service, client
    /// span name): a retrying edge's amplification is attempts over calls.
    retry_attempts: CappedSeries<(String, String), u64>,
    retry_calls: CappedSeries<(String, String), u64>,
    retry_failed_s: CappedSeries<(String, String, Cause), f64>,
    /// OOM kills by the victim's cgroup (`unknown` when it was gone before it could be read).
    oom_kills: CappedSeries<String, u64>,
}

impl AgentMetrics {
    pub(crate) fn new(start_unix_ns: u64) -> Self {
        Self {
            start_unix_ns,
            ..Self::default()
        }
    }

    /// Adds a released span's decomposition.
    pub(crate) fn on_span(&mut self, line: &SpanLine) {
        let a = &line.attribution;
        let service = bounded(
            line.service.as_deref().unwrap_or("unknown_service"),
            MAX_LABEL_BYTES,
        );
        *self.attributed_s.entry((a.cause, service.to_string())) += line.duration_ms / 1e3;
        if let Some(attempt) = a.retry {
            let edge = (
                service.to_string(),
                bounded(&line.name, MAX_LABEL_BYTES).to_string(),
            );
            *self.retry_attempts.entry(edge.clone()) += 1;
            if attempt.index == 0 {
                *self.retry_calls.entry(edge.clone()) += 1;
            }
            if attempt.failed {
                *self.retry_failed_s.entry((edge.0, edge.1, a.cause)) += line.duration_ms / 1e3;
            }
        }
    }

    /// Adds what a report measured over its interval.
    pub(crate) fn on_report(&mut self, report: &Report) {
        for t in &report.throttling {
            *self.throttled_ns.entry(t.cgroup.clone()).or_default() += t.cpu_stat_throttled_ns;
        }
        for k in &report.oom_kills {
            let cgroup = k.cgroup.as_deref().unwrap_or("unknown");
            *self
                .oom_kills
                .entry(bounded(cgroup, MAX_LABEL_BYTES).to_string()) += 1;
        }
        for r in &report.retransmits {
            *self
                .retransmits
                .entry(bounded(&r.remote, MAX_LABEL_BYTES).to_string()) += 1;
        }
    }

    /// The metrics as one OTLP request, stamped `now_unix_ns`; `runq` is the kernel's cumulative
    /// run-queue histogram per cgroup path.
    pub(crate) fn export(
        &self,
        report: &Report,
        runq: &[(String, RunqHist)],
        now_unix_ns: u64,
    ) -> ExportMetricsServiceRequest {
        let start = self.start_unix_ns;
        let point = |attrs: Vec<KeyValue>, v: number_data_point::Value| NumberDataPoint {
            attributes: attrs,
            start_time_unix_nano: start,
            time_unix_nano: now_unix_ns,
            value: Some(v),
            ..NumberDataPoint::default()
        };
        let sum =
            |name: &str, unit: &str, description: &str, points: Vec<NumberDataPoint>| Metric {
                name: name.to_string(),
                unit: unit.to_string(),
                description: description.to_string(),
                data: Some(Data::Sum(Sum {
                    data_points: points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })),
                ..Metric::default()
            };
        let mut metrics =
            vec![
                sum(
                    "culprit.attributed.time",
                    "s",
                    "Span time by dominant cause",
                    self.attributed_s
                        .iter()
                        .map(|((cause, service), s)| {
                            point(
                                vec![
                                    crate::otlp::string_kv("culprit.cause", cause.as_str()),
                                    crate::otlp::string_kv("service.name", service),
                                ],
                                number_data_point::Value::AsDouble(*s),
                            )
                        })
                        .chain(self.attributed_s.overflow().map(|s| {
                            point(overflow_attrs(), number_data_point::Value::AsDouble(*s))
                        }))
                        .collect(),
                ),
                sum(
                    "culprit.cpu.throttled.time",
                    "s",
                    "CFS throttled time of watched cgroups (cpu.stat)",
                    self.throttled_ns
                        .iter()
                        .map(|(cg, ns)| {
                            point(
                                vec![crate::otlp::string_kv("culprit.cgroup", cg)],
                                number_data_point::Value::AsDouble(*ns as f64 / 1e9),
                            )
                        })
                        .collect(),
                ),
                sum(
                    "culprit.tcp.retransmits",
                    "{retransmit}",
                    "TCP retransmits by peer",
                    self.retransmits
                        .iter()
                        .map(|(peer, n)| {
                            point(
                                vec![crate::otlp::string_kv("culprit.tcp.peer", peer)],
                                number_data_point::Value::AsInt(*n as i64),
                            )
                        })
                        .chain(self.retransmits.overflow().map(|n| {
                            point(overflow_attrs(), number_data_point::Value::AsInt(*n as i64))
                        }))
                        .collect(),
                ),
                sum(
                    "culprit.retry.attempts",
                    "{attempt}",
                    "Client attempts by service and client span name (retries included)",
                    edge_points(&self.retry_attempts, &point),
                ),
                sum(
                    "culprit.retry.calls",
                    "{call}",
                    "Client calls (first attempts) by service and client span name",
                    edge_points(&self.retry_calls, &point),
                ),
                sum(
                    "culprit.retry.failed.time",
                    "s",
                    "Time in failed client attempts, by the kernel cause the agent named for each",
                    self.retry_failed_s
                        .iter()
                        .map(|((service, edge, cause), s)| {
                            point(
                                vec![
                                    crate::otlp::string_kv("service.name", service),
                                    crate::otlp::string_kv("culprit.edge", edge),
                                    crate::otlp::string_kv("culprit.cause", cause.as_str()),
                                ],
                                number_data_point::Value::AsDouble(*s),
                            )
                        })
                        .chain(self.retry_failed_s.overflow().map(|s| {
                            point(overflow_attrs(), number_data_point::Value::AsDouble(*s))
                        }))
                        .collect(),
                ),
                sum(
                    "culprit.oom.kills",
                    "{kill}",
                    "OOM kills by the victim's cgroup",
                    self.oom_kills
                        .iter()
                        .map(|(cgroup, n)| {
                            point(
                                vec![crate::otlp::string_kv("culprit.cgroup", cgroup)],
                                number_data_point::Value::AsInt(*n as i64),
                            )
                        })
                        .chain(self.oom_kills.overflow().map(|n| {
                            point(overflow_attrs(), number_data_point::Value::AsInt(*n as i64))
                        }))
                        .collect(),
                ),
            ];
        // Run-queue delay: the in-kernel histogram's slot bounds as explicit bucket bounds.
        let bounds: Vec<f64> = (1..HIST_SLOTS)
            .map(|i| slot_lower_bound_ns(i) as f64 / 1e9)
            .collect();
        metrics.push(Metric {
            name: "culprit.sched.runqueue.delay".into(),
            unit: "s".into(),
            description: "Run-queue delay per cgroup".into(),
            data: Some(Data::Histogram(
                opentelemetry_proto::tonic::metrics::v1::Histogram {
                    data_points: runq
                        .iter()
                        .map(|(cg, h)| HistogramDataPoint {
                            attributes: vec![crate::otlp::string_kv("culprit.cgroup", cg)],
                            start_time_unix_nano: start,
                            time_unix_nano: now_unix_ns,
                            count: h.count,
                            sum: Some(h.total_ns as f64 / 1e9),
                            bucket_counts: h.slots.to_vec(),
                            explicit_bounds: bounds.clone(),
                            ..HistogramDataPoint::default()
                        })
                        .collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                },
            )),
            ..Metric::default()
        });
        // Self-metrics.
        let o = &report.otlp;
        let lost: u64 = report.drops.values().sum();
        for (name, value) in [
            ("culprit.agent.spans.received", o.ingress.spans_received),
            ("culprit.agent.spans.joined", o.join.spans_joined),
            (
                "culprit.agent.spans.unidentified",
                o.join.spans_unidentified,
            ),
            ("culprit.agent.spans.exported", o.export.spans_exported),
            (
                "culprit.agent.spans.dropped",
                o.export.spans_dropped_queue_full + o.export.spans_rejected_by_backend,
            ),
            ("culprit.agent.kernel_events.lost", lost),
            (
                "culprit.agent.metric_points.overflowed",
                self.attributed_s.overflowed + self.retransmits.overflowed,
            ),
        ] {
            metrics.push(sum(
                name,
                "{item}",
                "",
                vec![point(
                    Vec::new(),
                    number_data_point::Value::AsInt(value as i64),
                )],
            ));
        }
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: agent_resource(),
                    ..Resource::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "culprit".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..InstrumentationScope::default()
                    }),
                    metrics,
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        }
    }
}

/// Counts per (service, edge) as points.
fn edge_points(
    series: &CappedSeries<(String, String), u64>,
    point: &dyn Fn(Vec<KeyValue>, number_data_point::Value) -> NumberDataPoint,
) -> Vec<NumberDataPoint> {
    series
        .iter()
        .map(|((service, edge), n)| {
            point(
                vec![
                    crate::otlp::string_kv("service.name", service),
                    crate::otlp::string_kv("culprit.edge", edge),
                ],
                number_data_point::Value::AsInt(*n as i64),
            )
        })
        .chain(
            series
                .overflow()
                .map(|n| point(overflow_attrs(), number_data_point::Value::AsInt(*n as i64))),
        )
        .collect()
}

/// The agent's own resource: what it exports about the node comes from it.
pub(crate) fn agent_resource() -> Vec<KeyValue> {
    vec![
        crate::otlp::string_kv("service.name", "culprit-agent"),
        crate::otlp::string_kv("host.name", &hostname()),
    ]
}

/// The attribute of the series values past the cardinality limit go to.
fn overflow_attrs() -> Vec<KeyValue> {
    vec![KeyValue {
        key: "otel.metric.overflow".into(),
        value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
            value: Some(opentelemetry_proto::tonic::common::v1::any_value::Value::BoolValue(true)),
        }),
        ..KeyValue::default()
    }]
}

fn hostname() -> String {
    crate::host::procfs::hostname().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{join::attribution::attribute, signals::Measured};

    #[test]
    fn attributed_time_accumulates_by_cause_and_service() {
        let mut m = AgentMetrics::new(1);
        let line = SpanLine {
            trace_id: String::new(),
            span_id: String::new(),
            name: "x".into(),
            service: Some("shop".into()),
            pid: 1,
            tid: None,
            start_mono_ns: 0,
            duration_ms: 250.0,
            attribution: attribute(&Measured {
                wall_ns: 250_000_000,
                on_cpu_ns: 250_000_000,
                join: "thread",
                threads: 1,
                ..Measured::default()
            }),
        };
        m.on_span(&line);
        m.on_span(&line);
        let req = m.export(&Report::default(), &[("/a".into(), RunqHist::ZERO)], 2);
        let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
        let attributed = metrics
            .iter()
            .find(|x| x.name == "culprit.attributed.time")
            .unwrap();
        let Some(Data::Sum(s)) = &attributed.data else {
            panic!()
        };
        assert_eq!(s.data_points.len(), 1);
        assert_eq!(
            s.data_points[0].value,
            Some(number_data_point::Value::AsDouble(0.5))
        );
        assert!(
            metrics
                .iter()
                .any(|x| x.name == "culprit.agent.spans.received")
        );
        assert!(
            metrics
                .iter()
                .any(|x| x.name == "culprit.sched.runqueue.delay")
        );
    }
}
