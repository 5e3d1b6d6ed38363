//! Export to a "managed backend" the way one is reached in production: over TLS to a
//! certificate signed by a private CA (`OTEL_EXPORTER_OTLP_CERTIFICATE`), with a bearer token
//! (`OTEL_EXPORTER_OTLP_HEADERS`) and gzip. The backend is nginx terminating TLS and checking the
//! token (gRPC through `grpc_pass`, HTTP through `proxy_pass`) in front of the rotel collector.
//! A wrong token or a CA the agent does not trust delivers nothing: the export shows degraded,
//! retries, and drops what it cannot deliver, counted.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use culprit_lab::{
    process::reaped::Reaped,
    run::agent::RunningAgent,
    service::{
        nginx::nginx,
        otel::{AgentPorts, Sink, free_port, rotel, rust_otel_app, wait_success},
    },
};
use culprit_tests::{otlp_http::delivered, pki, require_root};

const TOKEN: &str = "s3cret-token";

/// nginx terminating TLS on `grpc_port` (HTTP/2, to rotel's gRPC) and `http_port` (to rotel's
/// HTTP), refusing requests without the bearer token.
fn front(dir: &Path, ports: (u16, u16), rotel_ports: (u16, u16)) -> anyhow::Result<Reaped> {
    let d = dir.display();
    let check = format!("if ($http_authorization != \"Bearer {TOKEN}\") {{ return 401; }}");
    let tls = format!("ssl_certificate {d}/server.pem;\n  ssl_certificate_key {d}/server.key;");
    let servers = format!(
        "server {{ listen 127.0.0.1:{} ssl http2; location / {{ {check} grpc_pass grpc://127.0.0.1:{}; }} }}\n\
         server {{ listen 127.0.0.1:{} ssl; location / {{ {check} proxy_pass http://127.0.0.1:{}; }} }}",
        ports.0, rotel_ports.0, ports.1, rotel_ports.1
    );
    nginx(dir, &tls, &servers, &[ports.0, ports.1])
}

/// The managed backend: rotel behind nginx, what it receives arriving at a sink.
struct Backend {
    dir: PathBuf,
    sink: Sink,
    grpc: u16,
    http: u16,
    _rotel: Reaped,
    _nginx: Reaped,
}

impl Backend {
    fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("culprit-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        pki::make(&dir)?;
        let sink = Sink::start(free_port()?)?;
        let rotel_ports = (free_port()?, free_port()?);
        let rotel = rotel(rotel_ports.0, rotel_ports.1, &sink.endpoint())?;
        let (grpc, http) = (free_port()?, free_port()?);
        let nginx = front(&dir, (grpc, http), rotel_ports)?;
        Ok(Self {
            dir,
            sink,
            grpc,
            http,
            _rotel: rotel,
            _nginx: nginx,
        })
    }

    fn ca(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// An agent exporting with `env` (and `extra` flags), and the span ids of 4 requests the lab's
/// Rust app sent it.
fn export_through(
    env: &[(&str, &str)],
    extra: &[&str],
) -> anyhow::Result<(RunningAgent, BTreeSet<String>)> {
    let ports = AgentPorts::fresh()?;
    let args = ports.args();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(extra);
    let mut agent = RunningAgent::start_with_env(Duration::from_secs(1), &args, env)?;
    agent.next_report()?;
    let record = std::env::temp_dir().join(format!(
        "culprit-tls-app-{}-{}.json",
        std::process::id(),
        ports.grpc
    ));
    wait_success(
        rust_otel_app(&ports.grpc_url(), 4, &record)?,
        Duration::from_secs(60),
    )?;
    let spans: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&record)?)?;
    std::fs::remove_file(&record).ok();
    let ids = spans
        .iter()
        .filter_map(|s| s["spanId"].as_str().map(str::to_string))
        .collect();
    Ok((agent, ids))
}

#[test]
fn spans_reach_a_tls_backend_with_a_private_ca_and_a_token() -> anyhow::Result<()> {
    require_root()?;
    let backend = Backend::start()?;
    let ca = backend.ca();
    let headers = format!("authorization=Bearer%20{TOKEN}");
    for (protocol, port) in [("grpc", backend.grpc), ("http/protobuf", backend.http)] {
        let endpoint = format!("https://localhost:{port}");
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
            ("OTEL_EXPORTER_OTLP_HEADERS", headers.as_str()),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ];
        let (mut agent, want) = export_through(&env, &[])?;
        anyhow::ensure!(want.len() >= 4, "the app recorded {want:?}");
        let got = delivered(&backend.sink, &want, Duration::from_secs(20));
        let report = agent.fresh_report()?;
        agent.stop()?;
        assert_eq!(got, want, "{protocol}: {:?}", report.otlp.export);
        assert_eq!(
            report.otlp.export.spans_rejected_by_backend, 0,
            "{protocol}"
        );
    }
    Ok(())
}

/// A refused token or an untrusted certificate is a configuration fault an operator fixes (a
/// secret being rotated): the spans stay queued and are retried, the export shows degraded in
/// `culprit status` with the backend's reason (the agent itself still alive), and what the
/// retry window cannot save is dropped and counted.
#[test]
fn a_wrong_token_or_an_untrusted_ca_shows_degraded_and_is_retried() -> anyhow::Result<()> {
    require_root()?;
    let backend = Backend::start()?;
    let ca = backend.ca();
    let endpoint = format!("https://localhost:{}", backend.http);
    let cases = [
        (
            "wrong token",
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
                ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20wrong"),
            ],
            "401",
        ),
        // The private CA not given: the backend's certificate is not trusted.
        (
            "untrusted CA",
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
            "certificate",
        ),
    ];
    for (case, env, reason) in cases {
        let (agent, want) = export_through(&env, &["--export-max-elapsed", "4"])?;
        assert!(
            delivered(&backend.sink, &want, Duration::from_secs(3)).is_empty(),
            "{case}"
        );
        let (code, health) = agent.status(&[])?;
        let export = &health.otlp.export;
        assert_eq!(code, 2, "{case}: status exits degraded: {health:?}");
        assert!(health.degraded && export.failing(), "{case}: {export:?}");
        assert!(
            export
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains(reason)),
            "{case}: {export:?}"
        );
        assert_eq!(export.spans_exported, 0, "{case}: {export:?}");
        assert!(export.export_retries > 0, "{case}: {export:?}");
        let (live_code, _) = agent.status(&["--liveness"])?;
        assert_eq!(live_code, 0, "{case}: the agent itself is alive");
        // Past the retry window the spans are dropped, and counted.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let dropped = loop {
            let (_, h) = agent.status(&[])?;
            let e = h.otlp.export;
            if e.spans_dropped_retries_exhausted >= want.len() as u64 {
                break e.spans_dropped_retries_exhausted;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{case}: nothing dropped after the retry window: {e:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        };
        eprintln!("{case}: {dropped} spans dropped after the retry window");
        agent.stop()?;
    }
    Ok(())
}
