//! The receivers as a node exposes them to its pods when it must not trust the network: TLS
//! with the agent's certificate, mutual TLS (senders present a certificate of the cluster's
//! CA) and a bearer token. Stock OpenTelemetry SDKs (Python, gRPC and HTTP exporters) configured
//! only by the standard `OTEL_EXPORTER_OTLP_*` variables get every span through to the
//! collector; a sender without the token, without a client certificate, or speaking plain text
//! gets nothing through, and each refusal is counted.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    time::{Duration, Instant},
};

use culprit_lab::{process::reaped::Reaped, service::otel::python_app_env};
use culprit_tests::{
    otlp_http::{self, ExportingAgent},
    pki, require_root,
};

const TOKEN: &str = "pod-token-7f3a";

/// The PKI and token, removed on drop.
struct Secrets(PathBuf);

impl Secrets {
    fn make() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("culprit-rtls-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        pki::make(&dir)?;
        std::fs::write(dir.join("token"), format!("{TOKEN}\n"))?;
        Ok(Self(dir))
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// Runs the Python app (2 requests) with `env`, waiting up to 60 s; the span ids it recorded.
/// A refused exporter does not fail the app: the SDK logs and drops.
fn send(env: &[(&str, &str)], protocol: &str, endpoint: &str) -> anyhow::Result<BTreeSet<String>> {
    let record = std::env::temp_dir().join(format!(
        "culprit-rtls-app-{}-{protocol}-{}.json",
        std::process::id(),
        env.len()
    ));
    let args = [
        "--protocol",
        protocol,
        "--endpoint",
        endpoint,
        "--mode",
        "idle",
        "--count",
        "2",
        "--record",
        record.to_str().unwrap_or_default(),
    ];
    let mut app: Reaped = python_app_env(env, &args)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.child.try_wait()?.is_none() {
        anyhow::ensure!(Instant::now() < deadline, "the app did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let spans: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&record)?)?;
    std::fs::remove_file(&record).ok();
    Ok(spans
        .iter()
        .filter_map(|s| s["spanId"].as_str().map(str::to_string))
        .collect())
}

#[test]
fn stock_sdks_reach_receivers_requiring_mutual_tls_and_a_token() -> anyhow::Result<()> {
    require_root()?;
    let secrets = Secrets::make()?;
    let mut args = Vec::new();
    for (flag, file) in [
        ("--otlp-tls-cert", "server.pem"),
        ("--otlp-tls-key", "server.key"),
        ("--otlp-tls-client-ca", "ca.pem"),
        ("--otlp-bearer-token-file", "token"),
    ] {
        args.extend([flag.to_string(), secrets.path(file)]);
    }
    let ExportingAgent {
        mut agent,
        ports,
        sink,
        rotel: _rotel,
    } = ExportingAgent::start(&args)?;

    let grpc = format!("https://localhost:{}", ports.grpc);
    let http = format!("https://localhost:{}/v1/traces", ports.http);
    let (ca, cert, key) = (
        secrets.path("ca.pem"),
        secrets.path("client.pem"),
        secrets.path("client.key"),
    );
    let bearer = format!("authorization=Bearer {TOKEN}");
    let full = [
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert.as_str()),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", key.as_str()),
        ("OTEL_EXPORTER_OTLP_HEADERS", bearer.as_str()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "3"),
    ];

    // Everything a sender must show: all spans arrive, over both protocols.
    let mut want = send(&full, "grpc", &grpc)?;
    want.extend(send(&full, "http", &http)?);
    anyhow::ensure!(want.len() >= 4, "the apps recorded {want:?}");
    let got = otlp_http::delivered(&sink, &want, Duration::from_secs(20));
    assert_eq!(got, want, "spans from senders with certificate and token");

    // Each refusal: no token (both protocols), no client certificate.
    let no_token = &full[..3];
    let no_cert = [full[0], full[3], full[4]];
    let mut refused = send(no_token, "grpc", &grpc)?;
    refused.extend(send(no_token, "http", &http)?);
    refused.extend(send(&no_cert, "grpc", &grpc)?);
    refused.extend(send(&no_cert, "http", &http)?);
    // Plain text to a TLS receiver.
    let plain = otlp_http::post(ports.http, "application/x-protobuf", b"").unwrap_or(0);
    anyhow::ensure!(refused.len() >= 8, "the apps recorded {refused:?}");
    let leaked = otlp_http::delivered(&sink, &refused, Duration::from_secs(5));

    let report = agent.fresh_report()?;
    let (code, health) = agent.status(&[])?;
    agent.stop()?;
    let ingress = &report.otlp.ingress;
    eprintln!("receivers {:?}; {ingress:?}", health.receivers);
    assert!(leaked.is_empty(), "refused senders got through: {leaked:?}");
    assert_ne!(plain, 200, "plain text served by a TLS receiver");
    assert!(
        ingress.rejected_unauthenticated >= 2,
        "requests without the token: {ingress:?}"
    );
    // Two senders without a certificate and the plain-text request, at least; SDKs retry.
    assert!(
        ingress.rejected_tls >= 3,
        "handshakes without a certificate: {ingress:?}"
    );
    assert_eq!(
        code, 0,
        "refused senders are not the agent's fault: {health:?}"
    );
    assert!(
        health
            .receivers
            .iter()
            .filter(|r| r.ends_with("(mTLS, bearer token)"))
            .count()
            == 2,
        "{:?}",
        health.receivers
    );
    Ok(())
}
