//! The collector stopped for 10 s and restarted: the agent loses no span within its queue bound;
//! beyond the bound the loss is counted, never silent.

use std::time::Duration;

use culprit_lab::{
    run::agent::RunningAgent,
    service::otel::{AgentPorts, Sink, free_port, python_app, rotel, wait_success},
};
use culprit_tests::{hex, require_root, spans_of};

fn span_ids(record: &std::path::Path) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let spans: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(record)?)?;
    Ok(spans
        .iter()
        .map(|s| s["spanId"].as_str().unwrap_or_default().to_string())
        .collect())
}

fn run_app(ports: &AgentPorts, count: &str, record: &std::path::Path) -> anyhow::Result<()> {
    let app = python_app(
        &[
            "--protocol",
            "http",
            "--endpoint",
            &ports.http_traces_url(),
            "--mode",
            "idle",
            "--count",
            count,
            "--gap-ms",
            "400",
            "--record",
            record.to_str().unwrap(),
        ],
        None,
        None,
    )?;
    wait_success(app, Duration::from_secs(60))
}

#[test]
fn a_collector_outage_loses_nothing_within_the_queue_bound_and_counts_beyond() -> anyhow::Result<()>
{
    require_root()?;
    let dir = std::env::temp_dir().join(format!("culprit-outage-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sink = Sink::start(free_port()?)?;
    let (rotel_grpc, rotel_http) = (free_port()?, free_port()?);
    let collector = rotel(rotel_grpc, rotel_http, &sink.endpoint())?;

    // Within the bound: 10 s of outage, everything arrives after the restart.
    let ports = AgentPorts::fresh()?;
    let mut args = ports.args();
    args.extend([
        "--export-endpoint".into(),
        format!("http://127.0.0.1:{rotel_http}"),
    ]);
    args.extend(["--export-protocol".into(), "http/protobuf".into()]);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = RunningAgent::start(Duration::from_secs(1), &arg_refs)?;
    agent.next_report()?;
    drop(collector);
    let during = dir.join("during.json");
    let started = std::time::Instant::now();
    run_app(&ports, "12", &during)?;
    std::thread::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()));
    let queued = agent.fresh_report()?.otlp.export;
    assert!(
        queued.queue_depth > 0,
        "nothing waited for the collector: {queued:?}"
    );
    let _collector = rotel(rotel_grpc, rotel_http, &sink.endpoint())?;
    let want = span_ids(&during)?;
    let got = sink.collect(Duration::from_secs(30), |reqs| {
        let seen: std::collections::BTreeSet<String> = spans_of(reqs)
            .iter()
            .map(|(_, _, _, s)| hex(&s.span_id))
            .collect();
        want.is_subset(&seen)
    });
    let seen: std::collections::BTreeSet<String> = spans_of(&got)
        .iter()
        .map(|(_, _, _, s)| hex(&s.span_id))
        .collect();
    let missing: Vec<&String> = want.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "{} of {} spans lost across the outage: {missing:?}",
        missing.len(),
        want.len()
    );
    let report = agent.fresh_report()?;
    assert_eq!(
        report.otlp.export.spans_dropped_queue_full, 0,
        "{:?}",
        report.otlp.export
    );
    agent.stop()?;

    // Beyond the bound: a queue of 3 requests, the collector down; the overflow is counted.
    let ports = AgentPorts::fresh()?;
    let dead = free_port()?;
    let mut args = ports.args();
    args.extend([
        "--export-endpoint".into(),
        format!("http://127.0.0.1:{dead}"),
    ]);
    args.extend([
        "--export-protocol".into(),
        "http/protobuf".into(),
        "--export-queue".into(),
        "3".into(),
    ]);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = RunningAgent::start(Duration::from_secs(1), &arg_refs)?;
    agent.next_report()?;
    run_app(&ports, "8", &dir.join("beyond.json"))?;
    std::thread::sleep(Duration::from_millis(1500));
    let otlp = agent.fresh_report()?.otlp;
    eprintln!("{otlp:?}");
    let export = otlp.export;
    // 16 spans in (8 requests of 2 spans), at most 3 requests queued: the rest dropped, counted.
    assert!(export.spans_dropped_queue_full >= 10, "{export:?}");
    assert!(export.queue_depth <= 3, "{export:?}");
    agent.stop()?;
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
