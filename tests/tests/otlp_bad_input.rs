//! Bad OTLP input gets the status the specification asks for, and the agent keeps serving:
//! malformed protobuf, a wrong content type, an oversized body, a flood beyond the limits.

use std::time::Duration;

use culprit::otlp::raw_codec::RawCodec;
use culprit_lab::{
    run::agent::RunningAgent,
    service::otel::{AgentPorts, wait_for_port},
};
use culprit_tests::{
    otlp_http::{post, post_to},
    require_root,
};
use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric},
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message as _;

fn valid_request(spans: usize, attr_bytes: usize) -> Vec<u8> {
    let span = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "x".repeat(attr_bytes),
        ..Span::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span; spans],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
    .encode_to_vec()
}

/// The peak resident memory of process `pid` so far (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM for {pid}"))?;
    Ok(kib / 1024.0)
}

async fn grpc_export(port: u16, body: Vec<u8>) -> anyhow::Result<tonic::Code> {
    grpc_call(
        port,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        body,
    )
    .await
}

async fn grpc_call(port: u16, path: &'static str, body: Vec<u8>) -> anyhow::Result<tonic::Code> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect()
        .await?;
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(64 << 20);
    grpc.ready().await?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    Ok(
        match grpc
            .unary(tonic::Request::new(body.into()), path, RawCodec)
            .await
        {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        },
    )
}

#[test]
fn bad_input_gets_the_right_status_and_the_agent_keeps_serving() -> anyhow::Result<()> {
    require_root()?;
    let ports = AgentPorts::fresh()?;
    let mut args = ports.args();
    args.extend([
        "--max-message-mib".into(),
        "1".into(),
        "--max-in-flight".into(),
        "1".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = RunningAgent::start(Duration::from_secs(1), &args)?;
    agent.next_report()?;
    wait_for_port(ports.http, Duration::from_secs(10))?;

    let good = valid_request(3, 10);
    assert_eq!(post(ports.http, "application/x-protobuf", &good)?, 200);
    assert_eq!(
        post(
            ports.http,
            "application/x-protobuf",
            b"\xff\xff\xff not protobuf"
        )?,
        400
    );
    assert_eq!(
        post(ports.http, "application/json", b"{\"resourceSpans\": 7}")?,
        400
    );
    assert_eq!(post(ports.http, "text/plain", &good)?, 415);
    assert_eq!(
        post(ports.http, "application/x-protobuf", &vec![0u8; 3 << 20])?,
        413
    );
    assert_eq!(
        post(ports.http, "application/x-protobuf", &good)?,
        200,
        "still serving"
    );

    // A flood: many large requests at once with one allowed in flight.
    let big = valid_request(2000, 300);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..24)
            .map(|_| s.spawn(|| post(ports.http, "application/x-protobuf", &big).unwrap_or(0)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
    });
    eprintln!("flood statuses: {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "the flood was never pushed back: {statuses:?}"
    );
    assert!(
        statuses.contains(&200),
        "nothing of the flood got through: {statuses:?}"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        assert_eq!(
            grpc_export(ports.grpc, good.clone()).await?,
            tonic::Code::Ok
        );
        assert_eq!(
            grpc_export(ports.grpc, b"\xff\xff\xff".to_vec()).await?,
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            grpc_export(ports.grpc, valid_request(1, 3 << 19)).await?,
            tonic::Code::ResourceExhausted
        );
        assert_eq!(
            grpc_export(ports.grpc, good.clone()).await?,
            tonic::Code::Ok,
            "still serving"
        );
        anyhow::Ok(())
    })?;
    assert_eq!(
        post(ports.http, "application/x-protobuf", &good)?,
        200,
        "still serving"
    );

    let report = agent.fresh_report()?;
    let ingress = &report.otlp.ingress;
    assert!(ingress.rejected_malformed >= 3, "{ingress:?}");
    assert!(ingress.rejected_unsupported_type >= 1, "{ingress:?}");
    assert!(ingress.rejected_busy >= 1, "{ingress:?}");
    agent.stop()?;
    Ok(())
}

/// What a sender can make the agent hold is bounded by construction, with its default limits:
/// a request of millions of empty spans, data points or log records (4 MB on the wire, some
/// 600 MB decoded) is refused before it is decoded, and a flood of large requests is answered "busy" before its bodies
/// are read, while the agent's peak memory stays far below a pod's limit.
#[test]
fn what_a_sender_makes_the_agent_hold_is_bounded() -> anyhow::Result<()> {
    require_root()?;
    let ports = AgentPorts::fresh()?;
    let args = ports.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = RunningAgent::start(Duration::from_secs(1), &args)?;
    agent.next_report()?;
    wait_for_port(ports.http, Duration::from_secs(10))?;
    let pid = agent.pid();

    let empty = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span::default(); 2_000_000],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
    .encode_to_vec();
    assert!(empty.len() < 4 << 20, "{} bytes", empty.len());
    assert_eq!(post(ports.http, "application/x-protobuf", &empty)?, 413);
    let json = format!(
        "{{\"resourceSpans\":[{{\"scopeSpans\":[{{\"spans\":[{}{{}}]}}]}}]}}",
        "{},".repeat(1_200_000)
    );
    assert_eq!(post(ports.http, "application/json", json.as_bytes())?, 413);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    assert_eq!(
        rt.block_on(grpc_export(ports.grpc, empty))?,
        tonic::Code::ResourceExhausted
    );
    // The same of metrics and logs, which the agent passes through: 2 million empty data
    // points, 2 million empty log records.
    let points = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint::default(); 2_000_000],
                    })),
                    ..Metric::default()
                }],
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
    .encode_to_vec();
    let records = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord::default(); 2_000_000],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
    .encode_to_vec();
    for (path, body, service) in [
        (
            "/v1/metrics",
            &points,
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        ),
        (
            "/v1/logs",
            &records,
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        ),
    ] {
        assert!(body.len() < 4 << 20, "{path}: {} bytes", body.len());
        assert_eq!(
            post_to(ports.http, path, "application/x-protobuf", body)?,
            413,
            "{path}"
        );
        assert_eq!(
            rt.block_on(grpc_call(ports.grpc, service, body.clone()))?,
            tonic::Code::ResourceExhausted,
            "{service}"
        );
    }
    let after_empty = peak_rss_mib(pid)?;

    // 64 requests of 4 MB at once, each a thousand real spans.
    let big = valid_request(1000, 4000);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|_| s.spawn(|| post(ports.http, "application/x-protobuf", &big).unwrap_or(0)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
    });
    let busy = statuses.iter().filter(|s| **s == 429).count();
    eprintln!(
        "flood: {busy} of 64 answered busy; peak RSS {after_empty:.0} MiB after the empty spans"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
    let good = valid_request(3, 10);
    assert_eq!(
        post(ports.http, "application/x-protobuf", &good)?,
        200,
        "still serving"
    );
    let peak = peak_rss_mib(pid)?;
    eprintln!("peak RSS after the flood: {peak:.0} MiB");
    assert!(
        after_empty <= 150.0,
        "{after_empty:.0} MiB after the empty spans"
    );
    assert!(peak <= 200.0, "{peak:.0} MiB after the flood");
    let report = agent.fresh_report()?;
    assert!(
        report.otlp.ingress.rejected_too_many_items >= 7,
        "{:?}",
        report.otlp.ingress
    );
    agent.stop()?;
    Ok(())
}
