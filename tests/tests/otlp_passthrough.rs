//! Spans from the real OpenTelemetry Python SDK (gRPC and HTTP exporters) go through the agent
//! to a real collector (rotel); what comes out of the collector is every original field,
//! unchanged, plus the culprit attributes.

use std::time::Duration;

use culprit_lab::{
    run::agent::RunningAgent,
    service::otel::{AgentPorts, Sink, free_port, python_app, rotel, rust_otel_app, wait_success},
};
use culprit_tests::{attr, hex, require_root, span_as_recorded, spans_of};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

#[test]
fn python_sdk_spans_reach_the_collector_unchanged_with_culprit_attributes() -> anyhow::Result<()> {
    require_root()?;
    let sink = Sink::start(free_port()?)?;
    let (rotel_grpc, rotel_http) = (free_port()?, free_port()?);
    let _rotel = rotel(rotel_grpc, rotel_http, &sink.endpoint())?;
    let ports = AgentPorts::fresh()?;
    let mut args = ports.args();
    args.extend([
        "--export-endpoint".into(),
        format!("http://127.0.0.1:{rotel_grpc}"),
    ]);
    args.extend(["--export-protocol".into(), "grpc".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = RunningAgent::start(Duration::from_secs(1), &args)?;
    agent.next_report()?;

    let dir = std::env::temp_dir().join(format!("culprit-passthrough-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (grpc_record, http_record) = (dir.join("grpc.json"), dir.join("http.json"));
    let grpc_app = python_app(
        &[
            "--protocol",
            "grpc",
            "--endpoint",
            &ports.grpc_url(),
            "--mode",
            "idle",
            "--count",
            "4",
            "--thread-attr",
            "--record",
            grpc_record.to_str().unwrap(),
        ],
        None,
        None,
    )?;
    let http_app = python_app(
        &[
            "--protocol",
            "http",
            "--endpoint",
            &ports.http_traces_url(),
            "--mode",
            "sleep",
            "--work-ms",
            "5",
            "--count",
            "4",
            "--no-pid",
            "--record",
            http_record.to_str().unwrap(),
        ],
        None,
        None,
    )?;
    let rust_record = dir.join("rust.json");
    let rust_app = rust_otel_app(&ports.grpc_url(), 4, &rust_record)?;
    wait_success(grpc_app, Duration::from_secs(60))?;
    wait_success(http_app, Duration::from_secs(60))?;
    wait_success(rust_app, Duration::from_secs(60))?;
    let rust_spans: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&rust_record)?)?;
    assert_eq!(rust_spans.len(), 4);

    let mut recorded: Vec<serde_json::Value> = Vec::new();
    for f in [&grpc_record, &http_record] {
        let spans: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(f)?)?;
        recorded.extend(spans);
    }
    assert_eq!(recorded.len(), 16, "each app records 4 requests of 2 spans");
    let want: std::collections::BTreeSet<String> = recorded
        .iter()
        .map(|s| s["spanId"].as_str().unwrap().to_string())
        .collect();

    let got = sink.collect(Duration::from_secs(20), |reqs| {
        let seen: std::collections::BTreeSet<String> = spans_of(reqs)
            .iter()
            .map(|(_, _, _, s)| hex(&s.span_id))
            .collect();
        want.is_subset(&seen)
    });
    // Wait for one more report: its metrics carry the attributed time of every span above.
    agent.fresh_report()?;
    std::thread::sleep(Duration::from_millis(1500));
    agent.stop()?;
    let metric_names: std::collections::BTreeSet<String> = sink
        .metrics()
        .iter()
        .flat_map(|m| &m.resource_metrics)
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| m.name.clone())
        .collect();
    for name in [
        "culprit.attributed.time",
        "culprit.sched.runqueue.delay",
        "culprit.agent.spans.received",
        "culprit.agent.spans.exported",
    ] {
        assert!(
            metric_names.contains(name),
            "metric {name} never reached the collector: {metric_names:?}"
        );
    }
    let got = spans_of(&got);
    for original in &recorded {
        let id = original["spanId"].as_str().unwrap();
        let (resource, scope, version, span) = got
            .iter()
            .find(|(_, _, _, s)| hex(&s.span_id) == id)
            .unwrap_or_else(|| panic!("span {id} never reached the collector's output"));
        let after = span_as_recorded(resource, (scope, version), span);
        assert_eq!(&after, original, "span {id} changed on the way");
        // The join's answer is on every span.
        for key in [
            "culprit.cause",
            "culprit.join",
            "culprit.coverage",
            "culprit.on_cpu.duration",
            "culprit.off_cpu.duration",
        ] {
            assert!(attr(span, key).is_some(), "{key} missing on {id}");
        }
    }
    // The Rust SDK's spans: ids, name, attributes and events intact, culprit attributes added.
    for original in &rust_spans {
        let id = original["spanId"].as_str().unwrap();
        let (resource, _, _, span) = got
            .iter()
            .find(|(_, _, _, s)| hex(&s.span_id) == id)
            .unwrap_or_else(|| panic!("Rust span {id} never reached the collector's output"));
        assert_eq!(hex(&span.trace_id), original["traceId"].as_str().unwrap());
        assert_eq!(span.name, "rust request");
        assert_eq!(
            attr(span, "request.index"),
            Some(&Value::IntValue(original["index"].as_i64().unwrap()))
        );
        assert_eq!(
            span.events.first().map(|e| e.name.as_str()),
            Some("work.start")
        );
        assert!(
            attr(span, "culprit.cause").is_some(),
            "no culprit attributes on {id}"
        );
        let service = resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"));
        assert!(format!("{service:?}").contains("culprit-rust-app"));
    }
    // The gRPC app named its thread; the HTTP app left process.pid out and was found through
    // its connection, its thread inferred from the kernel's timeline.
    let joins: Vec<String> = got
        .iter()
        .filter_map(|(_, _, _, s)| match attr(s, "culprit.join") {
            Some(Value::StringValue(j)) => Some(j.clone()),
            _ => None,
        })
        .collect();
    assert!(
        joins.iter().any(|j| j == "thread") && joins.iter().any(|j| j == "thread.inferred"),
        "{joins:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
