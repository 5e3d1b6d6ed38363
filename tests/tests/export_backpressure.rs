//! A backend that pushes back, as real intakes do, in front of the rotel collector: nginx
//! throttling with `429` and `Retry-After: 3` (`limit_req`), and refusing bodies over a size
//! limit with `413` (`client_max_body_size`). The agent waits as long as the backend asks before
//! trying again, and splits a merged batch the backend finds too large until every span is
//! delivered.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use culprit_lab::{
    process::reaped::Reaped,
    run::agent::RunningAgent,
    service::{
        nginx::{access_log, nginx},
        otel::{AgentPorts, Sink, free_port, rotel, wait_for_port},
    },
};
use culprit_tests::{
    hex,
    otlp_http::{self, delivered, string_kv},
    require_root,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message as _;

/// rotel behind nginx with these `location /v1/traces` directives (and `http_directives`).
struct Backend {
    dir: PathBuf,
    sink: Sink,
    port: u16,
    _rotel: Reaped,
    _nginx: Reaped,
}

impl Backend {
    fn start(name: &str, http_directives: &str, traces: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("culprit-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let sink = Sink::start(free_port()?)?;
        let (rotel_grpc, rotel_http) = (free_port()?, free_port()?);
        let rotel = rotel(rotel_grpc, rotel_http, &sink.endpoint())?;
        let port = free_port()?;
        let servers = format!(
            "server {{ listen 127.0.0.1:{port}; \
               location /v1/traces {{ {traces} proxy_pass http://127.0.0.1:{rotel_http}; }} \
               location / {{ proxy_pass http://127.0.0.1:{rotel_http}; }} }}"
        );
        let nginx = nginx(&dir, http_directives, &servers, &[port])?;
        Ok(Self {
            dir,
            sink,
            port,
            _rotel: rotel,
            _nginx: nginx,
        })
    }

    /// The trace exports nginx logged: (unix seconds, status).
    fn trace_exports(&self) -> Vec<(f64, u16)> {
        access_log(&self.dir)
            .into_iter()
            .filter(|l| l.uri == "/v1/traces")
            .map(|l| (l.unix_s, l.status))
            .collect()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// `spans` spans with unique ids (from `first`), each with an attribute of `attr_bytes`.
fn request(first: u64, spans: u64, attr_bytes: usize) -> (Vec<u8>, BTreeSet<String>) {
    let mut ids = BTreeSet::new();
    let spans: Vec<Span> = (first..first + spans)
        .map(|i| {
            let span_id = (i + 1).to_be_bytes().to_vec();
            ids.insert(hex(&span_id));
            Span {
                trace_id: [(i + 1).to_be_bytes(), [7; 8]].concat(),
                span_id,
                name: format!("GET /item/{i}"),
                start_time_unix_nano: 1,
                end_time_unix_nano: 2,
                attributes: vec![string_kv("payload", "x".repeat(attr_bytes))],
                ..Span::default()
            }
        })
        .collect();
    let body = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_kv("service.name", "shop")],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
    .encode_to_vec();
    (body, ids)
}

fn post(port: u16, body: &[u8]) -> anyhow::Result<u16> {
    otlp_http::post(port, "application/x-protobuf", body)
}

fn agent_for(backend: &Backend) -> anyhow::Result<(RunningAgent, AgentPorts)> {
    let ports = AgentPorts::fresh()?;
    let args = ports.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let endpoint = format!("http://127.0.0.1:{}", backend.port);
    let agent = RunningAgent::start_with_env(
        Duration::from_secs(1),
        &args,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
    )?;
    wait_for_port(ports.http, Duration::from_secs(10))?;
    Ok((agent, ports))
}

#[test]
fn a_throttling_backend_is_retried_no_sooner_than_it_asks() -> anyhow::Result<()> {
    require_root()?;
    // One trace export per 5 s; the rest answered 429 with Retry-After: 3.
    let backend = Backend::start(
        "throttle",
        "limit_req_zone $binary_remote_addr zone=traces:1m rate=12r/m;",
        "limit_req zone=traces; limit_req_status 429; add_header Retry-After 3 always;",
    )?;
    let (mut agent, ports) = agent_for(&backend)?;
    agent.next_report()?;
    let mut want = BTreeSet::new();
    for batch in 0..3 {
        let (body, ids) = request(batch * 100, 20, 16);
        assert_eq!(post(ports.http, &body)?, 200);
        want.extend(ids);
        std::thread::sleep(Duration::from_millis(800));
    }
    let got = delivered(&backend.sink, &want, Duration::from_secs(40));
    let exports = backend.trace_exports();
    let report = agent.fresh_report()?;
    agent.stop()?;
    eprintln!("trace exports (unix s, status): {exports:?}");
    assert_eq!(got.len(), want.len(), "{:?}", report.otlp.export);
    assert!(
        exports.iter().any(|(_, s)| *s == 429),
        "the backend never throttled: {exports:?}"
    );
    for pair in exports.windows(2) {
        let ((at, status), (next, _)) = (pair[0], pair[1]);
        if status == 429 {
            // nginx stamps to the millisecond.
            assert!(
                next - at >= 2.99,
                "retried {:.3} s after a 429 asking for 3 s: {exports:?}",
                next - at
            );
        }
    }
    assert!(
        report.otlp.export.export_retries > 0,
        "{:?}",
        report.otlp.export
    );
    Ok(())
}

#[test]
fn a_batch_over_the_backends_limit_is_split_and_delivered() -> anyhow::Result<()> {
    require_root()?;
    // Bodies over 16 KiB are refused with 413.
    let backend = Backend::start("bodylimit", "", "client_max_body_size 16k;")?;
    let (mut agent, ports) = agent_for(&backend)?;
    agent.next_report()?;
    // About 120 KiB: merged into one export, refused, split until the halves fit.
    let (body, want) = request(0, 600, 160);
    assert_eq!(post(ports.http, &body)?, 200);
    let got = delivered(&backend.sink, &want, Duration::from_secs(30));
    let exports = backend.trace_exports();
    let report = agent.fresh_report()?;
    agent.stop()?;
    let refused = exports.iter().filter(|(_, s)| *s == 413).count();
    eprintln!(
        "{} trace exports, {refused} refused as too large",
        exports.len()
    );
    assert_eq!(got.len(), want.len(), "{:?}", report.otlp.export);
    assert!(refused > 0, "nothing was too large: {exports:?}");
    assert_eq!(report.otlp.export.spans_rejected_by_backend, 0);
    Ok(())
}
