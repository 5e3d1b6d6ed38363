//! The binary seed corpora of the fuzz targets (`fuzz/corpus/<target>/`), made here from real
//! OTLP messages: `CULPRIT_UPDATE_SEEDS=1 cargo test -p culprit --features fuzzing --lib seeds`
//! rewrites them, and without the variable the test checks that they are current. (The text
//! targets' seeds are copies of real /proc, tracefs and config files: docs/fuzzing.md.)

use std::io::Write as _;

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric},
    resource::v1::Resource,
    trace::v1::{
        ResourceSpans, ScopeSpans, Span, Status,
        span::{Event, Link},
    },
};
use prost::Message as _;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", Value::StringValue("checkout".into())),
            kv("process.pid", Value::IntValue(4242)),
        ],
        ..Resource::default()
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "opentelemetry-rust".into(),
        version: "0.31".into(),
        ..InstrumentationScope::default()
    })
}

/// Two spans of one trace, a server span with an event and a link and its client child.
pub(super) fn traces() -> ExportTraceServiceRequest {
    let server = Span {
        trace_id: (1..=16).collect(),
        span_id: (1..=8).collect(),
        name: "GET /checkout".into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_250_000_000,
        attributes: vec![
            kv("http.route", Value::StringValue("/checkout".into())),
            kv("culprit.thread.tid", Value::IntValue(4243)),
            kv(
                "tags",
                Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(Value::BoolValue(true)),
                    }],
                }),
            ),
        ],
        events: vec![Event {
            time_unix_nano: 1_700_000_000_100_000_000,
            name: "retry".into(),
            attributes: vec![kv("attempt", Value::DoubleValue(2.0))],
            ..Event::default()
        }],
        links: vec![Link {
            trace_id: vec![7; 16],
            span_id: vec![7; 8],
            ..Link::default()
        }],
        status: Some(Status {
            code: 2,
            message: "timeout".into(),
        }),
        ..Span::default()
    };
    let client = Span {
        span_id: (9..=16).collect(),
        parent_span_id: server.span_id.clone(),
        name: "SELECT".into(),
        kind: 3,
        ..server.clone()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                scope: scope(),
                spans: vec![server, client],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            }],
            ..ResourceSpans::default()
        }],
    }
}

fn metrics() -> ExportMetricsServiceRequest {
    let point = NumberDataPoint {
        time_unix_nano: 1_700_000_000_000_000_000,
        value: Some(
            opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(0.5),
        ),
        ..NumberDataPoint::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics: vec![Metric {
                    name: "queue.depth".into(),
                    unit: "1".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![point],
                    })),
                    ..Metric::default()
                }],
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
}

fn logs() -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records: vec![LogRecord {
                    time_unix_nano: 1_700_000_000_000_000_000,
                    severity_number: 9,
                    severity_text: "INFO".into(),
                    body: Some(AnyValue {
                        value: Some(Value::StringValue("order placed".into())),
                    }),
                    trace_id: (1..=16).collect(),
                    span_id: (1..=8).collect(),
                    ..LogRecord::default()
                }],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

fn json(message: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(message).expect("OTLP messages serialize")
}

fn with_selector(selector: u8, body: &[u8]) -> Vec<u8> {
    [&[selector][..], body].concat()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

/// Every seed: target, file name, contents.
pub(super) fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let (t, m, l) = (traces(), metrics(), logs());
    let (tp, mp, lp) = (t.encode_to_vec(), m.encode_to_vec(), l.encode_to_vec());
    let (tj, mj, lj) = (json(&t), json(&m), json(&l));
    // Field 15 as a group around a varint, then the request: wire types 3 and 4.
    let grouped = [&[0x7b, 0x08, 0x01, 0x7c][..], &tp].concat();
    // A grpc message frame as sent: not compressed, its length, the message.
    let frame = [&[0u8][..], &(tp.len() as u32).to_be_bytes(), &tp].concat();
    // The annotator's input: the request's length and encoding, no node name, a verified
    // sender in a pod whose `process.pid` it contradicts, then each span's measurements.
    let mut annotated = (tp.len() as u16).to_le_bytes().to_vec();
    annotated.extend_from_slice(&tp);
    annotated.extend_from_slice(&[0, 0x34]);
    let pod = b"kubepods/pod6b3e5f7a-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
    annotated.push(pod.len() as u8 + 1);
    annotated.extend_from_slice(pod);
    annotated.extend_from_slice(&4242u64.to_le_bytes());
    for (wall, on, runq, throttled) in [(250u64, 20, 200, 150), (90, 80, 5, 0)] {
        annotated.push(1);
        for v in [wall, on, runq, throttled, 10, 0, 0] {
            annotated.extend_from_slice(&(v * 1_000_000).to_le_bytes());
        }
        annotated.extend_from_slice(&[0, 12]);
        annotated.extend_from_slice(b"stress (42)");
        annotated.extend_from_slice(&[0, 1, 1]);
    }
    vec![
        ("otlp_http_protobuf", "traces", with_selector(0, &tp)),
        ("otlp_http_protobuf", "metrics", with_selector(1, &mp)),
        ("otlp_http_protobuf", "logs", with_selector(2, &lp)),
        (
            "otlp_http_protobuf",
            "traces_gzip",
            with_selector(4 | 8, &tp),
        ),
        ("otlp_http_json", "traces", with_selector(0, &tj)),
        ("otlp_http_json", "metrics", with_selector(1, &mj)),
        ("otlp_http_json", "logs", with_selector(2, &lj)),
        ("otlp_http_json", "traces_gzip", with_selector(4 | 8, &tj)),
        ("otlp_grpc", "traces", with_selector(1 << 2, &tp)),
        ("otlp_grpc", "metrics", with_selector(1 | 1 << 2, &mp)),
        ("otlp_grpc", "logs", with_selector(2 | 1 << 2, &lp)),
        ("otlp_grpc", "traces_gzip", with_selector(2 << 2, &tp)),
        ("otlp_grpc", "traces_framed", with_selector(0, &frame)),
        ("wire_scanner", "traces", tp.clone()),
        ("wire_scanner", "grouped", grouped),
        ("wire_scanner", "gzip", gzip(&tp)),
        ("span_annotator", "traces", annotated),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::fuzzing;

    #[test]
    fn seed_corpora_are_current() {
        let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let update = std::env::var_os("CULPRIT_UPDATE_SEEDS").is_some();
        for (target, name, bytes) in seeds() {
            let path = corpus.join(target).join(name);
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &bytes).unwrap();
                continue;
            }
            let on_disk = std::fs::read(&path).unwrap_or_default();
            assert!(
                on_disk == bytes,
                "{} is not current: rerun with CULPRIT_UPDATE_SEEDS=1",
                path.display()
            );
        }
    }

    #[test]
    fn the_seeds_pass_their_targets() {
        for (target, _, bytes) in seeds() {
            let (selector, body) = bytes.split_first().unwrap();
            let ok = axum::http::StatusCode::OK;
            match target {
                "otlp_http_protobuf" => assert_eq!(fuzzing::otlp_http(*selector, false, body), ok),
                "otlp_http_json" => assert_eq!(fuzzing::otlp_http(*selector, true, body), ok),
                "otlp_grpc" => {
                    assert_eq!(fuzzing::otlp_grpc(*selector, body).as_deref(), Some("0"));
                }
                "wire_scanner" => fuzzing::wire_scan(&bytes),
                _ => fuzzing::annotate(&bytes),
            }
        }
    }
}
