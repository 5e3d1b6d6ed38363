//! The harness of the sender identity tests: an agent with every receiver (TCP on a chosen
//! address, both unix sockets) exporting through rotel to a sink, the stock SDK apps, and what
//! came out, by service.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use culprit_lab::{
    process::{binaries::bin_path, reaped::Reaped},
    run::agent::RunningAgent,
    service::otel::{Sink, free_port, rotel},
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value::Value,
    resource::v1::Resource, trace::v1::Span,
};

use crate::{attr, spans_of};

/// An agent exporting through rotel to a sink, its TCP receivers on `host`, its unix sockets in
/// a fresh directory.
pub struct Setup {
    sink: Sink,
    _rotel: Reaped,
    pub agent: RunningAgent,
    pub grpc: u16,
    pub http: u16,
    dir: PathBuf,
}

impl Setup {
    pub fn start(tag: &str, host: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let sink = Sink::start(free_port()?)?;
        let (rotel_grpc, rotel_http) = (free_port()?, free_port()?);
        let rotel = rotel(rotel_grpc, rotel_http, &sink.endpoint())?;
        let (grpc, http) = (free_port()?, free_port()?);
        let dir =
            std::env::temp_dir().join(format!("culprit-identity-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut args: Vec<String> = vec![
            "--otlp-grpc".into(),
            format!("{host}:{grpc}"),
            "--otlp-http".into(),
            format!("{host}:{http}"),
            "--otlp-grpc-unix".into(),
            dir.join("grpc.sock").display().to_string(),
            "--otlp-http-unix".into(),
            dir.join("http.sock").display().to_string(),
            "--export-endpoint".into(),
            format!("http://127.0.0.1:{rotel_grpc}"),
            "--export-protocol".into(),
            "grpc".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut agent = RunningAgent::start(Duration::from_secs(1), &args)?;
        agent.next_report()?;
        Ok(Self {
            sink,
            _rotel: rotel,
            agent,
            grpc,
            http,
            dir,
        })
    }

    pub fn record(&self, name: &str) -> String {
        self.dir.join(format!("{name}.json")).display().to_string()
    }

    pub fn socket(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Collects until every span the apps recorded came out.
    pub fn collect(&self, records: &[String]) -> anyhow::Result<Vec<ExportTraceServiceRequest>> {
        let mut want = std::collections::BTreeSet::new();
        for r in records {
            let spans: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(r)?)?;
            want.extend(
                spans
                    .iter()
                    .map(|s| s["spanId"].as_str().unwrap_or("").to_string()),
            );
        }
        let got = self.sink.collect(Duration::from_secs(30), |reqs| {
            let seen: std::collections::BTreeSet<String> = spans_of(reqs)
                .iter()
                .map(|(_, _, _, s)| crate::hex(&s.span_id))
                .collect();
            want.is_subset(&seen)
        });
        Ok(got)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

pub fn resource_str<'a>(r: &'a Option<Resource>, key: &str) -> Option<&'a str> {
    match culprit::otlp::attribute(&r.as_ref()?.attributes, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

pub fn resource_int(r: &Option<Resource>, key: &str) -> Option<i64> {
    match culprit::otlp::attribute(&r.as_ref()?.attributes, key)? {
        Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

pub fn span_str<'a>(s: &'a Span, key: &str) -> Option<&'a str> {
    match attr(s, key)? {
        Value::StringValue(v) => Some(v),
        _ => None,
    }
}

pub fn span_f64(s: &Span, key: &str) -> Option<f64> {
    match attr(s, key)? {
        Value::DoubleValue(v) => Some(*v),
        _ => None,
    }
}

/// The spans that came out, by service.
pub fn by_service(
    got: &[ExportTraceServiceRequest],
) -> BTreeMap<String, Vec<(Option<Resource>, Span)>> {
    let mut out: BTreeMap<String, Vec<(Option<Resource>, Span)>> = BTreeMap::new();
    for (resource, _, _, span) in spans_of(got) {
        let service = resource_str(&resource, "service.name")
            .unwrap_or("?")
            .to_string();
        out.entry(service).or_default().push((resource, span));
    }
    out
}

/// Asserts that at least 99% of a service's spans are joined and verified.
pub fn assert_verified(services: &BTreeMap<String, Vec<(Option<Resource>, Span)>>, service: &str) {
    let spans = services.get(service).map_or(&[][..], Vec::as_slice);
    assert!(
        !spans.is_empty(),
        "no span of {service} came out: {:?}",
        services.keys()
    );
    let verified = spans
        .iter()
        .filter(|(r, s)| {
            attr(s, "culprit.cause").is_some()
                && resource_str(r, "culprit.identity") == Some("verified")
        })
        .count();
    assert!(
        verified * 100 >= spans.len() * 99,
        "{service}: {verified} of {} spans joined and verified; identities {:?}",
        spans.len(),
        spans
            .iter()
            .map(|(r, _)| resource_str(r, "culprit.identity"))
            .collect::<Vec<_>>()
    );
}

pub fn rust_app(lab_args: &[String], endpoint: &str, record: &str) -> anyhow::Result<Reaped> {
    let mut cmd = std::process::Command::new(bin_path("culprit-lab")?);
    cmd.args(lab_args)
        .args([
            "rust-otel-app",
            "--stock",
            "--count",
            "10",
            "--endpoint",
            endpoint,
        ])
        .args(["--record", record])
        .stdin(std::process::Stdio::null());
    Reaped::spawn("rust-otel-app", &mut cmd)
}
