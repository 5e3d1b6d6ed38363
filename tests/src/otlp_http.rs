//! Talking to receivers and reading back what reached the collector: a raw OTLP/HTTP POST (so
//! that a test controls every byte and sees every status), requests built to measure, a
//! well-behaved sender, and the span ids a sink received.

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use culprit_lab::{
    process::reaped::Reaped,
    run::agent::RunningAgent,
    service::otel::{AgentPorts, Sink, free_port, rotel, wait_for_port},
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message as _;

use crate::{hex, spans_of};

/// POSTs `body` to `/v1/traces` on 127.0.0.1:`port` and returns the HTTP status. The body is
/// written whole unless the server answers (413) and closes first.
pub fn post(port: u16, content_type: &str, body: &[u8]) -> anyhow::Result<u16> {
    post_to(port, "/v1/traces", content_type, body)
}

/// POSTs `body` to `path` (`/v1/metrics`), as [`post`] does.
pub fn post_to(port: u16, path: &str, content_type: &str, body: &[u8]) -> anyhow::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no HTTP status in {text:?}"))
}

/// The span ids of `want` that reached `sink`, waiting up to `timeout` for all of them.
pub fn delivered(sink: &Sink, want: &BTreeSet<String>, timeout: Duration) -> BTreeSet<String> {
    let got = sink.collect(timeout, |reqs| {
        let seen: BTreeSet<String> = spans_of(reqs)
            .iter()
            .map(|(_, _, _, s)| hex(&s.span_id))
            .collect();
        want.is_subset(&seen)
    });
    spans_of(&got)
        .iter()
        .map(|(_, _, _, s)| hex(&s.span_id))
        .filter(|id| want.contains(id))
        .collect()
}

/// A string attribute.
pub fn string_kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

/// A trace request with one resource per `(service, span_id, name_bytes)`: a span with that id
/// and a name that long, from that service.
pub fn trace_request(spans: impl Iterator<Item = (String, u64, usize)>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: spans
            .map(|(service, id, name_bytes)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string_kv("service.name", service)],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: [id.to_be_bytes(), [9; 8]].concat(),
                        span_id: id.to_be_bytes().to_vec(),
                        name: "n".repeat(name_bytes),
                        start_time_unix_nano: 1,
                        end_time_unix_nano: 2,
                        ..Span::default()
                    }],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            })
            .collect(),
    }
    .encode_to_vec()
}

/// A well-behaved sender, running until stopped: five spans every 100 ms to the OTLP/HTTP
/// receiver on 127.0.0.1:`port`, each batch retried until accepted, as SDKs do when told "busy".
pub struct GoodSender {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<BTreeSet<String>>>,
    thread: std::thread::JoinHandle<u32>,
}

impl GoodSender {
    pub fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(BTreeSet::new()));
        let thread = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut next_id = 1u64 << 40;
                let mut busy = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<u64> = (next_id..next_id + 5).collect();
                    next_id += 5;
                    let body = trace_request(ids.iter().map(|id| ("good".to_string(), *id, 12)));
                    while post(port, "application/x-protobuf", &body).ok() != Some(200) {
                        busy += 1;
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    let mut sent = sent.lock().unwrap_or_else(|p| p.into_inner());
                    sent.extend(ids.iter().map(|id| hex(&id.to_be_bytes())));
                    drop(sent);
                    std::thread::sleep(Duration::from_millis(100));
                }
                busy
            })
        };
        Self { stop, sent, thread }
    }

    /// Stops the sender: the span ids it got accepted, and how many times it was told "busy".
    pub fn stop(self) -> (BTreeSet<String>, u32) {
        self.stop.store(true, Ordering::Relaxed);
        let busy = self.thread.join().unwrap_or(u32::MAX);
        let sent = self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (sent, busy)
    }
}

/// An agent on fresh ports (reports every second) exporting over OTLP/HTTP to a rotel
/// collector, whose output arrives at `sink`.
pub struct ExportingAgent {
    pub agent: RunningAgent,
    pub ports: AgentPorts,
    pub sink: Sink,
    /// The collector, stopped on drop: keep it (`rotel: _rotel`) while spans should flow.
    pub rotel: Reaped,
}

impl ExportingAgent {
    /// Starts the collector and the agent (with `extra_args`), once both receivers listen.
    pub fn start(extra_args: &[String]) -> anyhow::Result<Self> {
        let sink = Sink::start(free_port()?)?;
        let (rotel_grpc, rotel_http) = (free_port()?, free_port()?);
        let rotel = rotel(rotel_grpc, rotel_http, &sink.endpoint())?;
        let export_to = format!("http://127.0.0.1:{rotel_http}");
        let ports = AgentPorts::fresh()?;
        let mut args = ports.args();
        args.extend_from_slice(extra_args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut agent = RunningAgent::start_with_env(
            Duration::from_secs(1),
            &args,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", export_to.as_str()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
        )?;
        agent.next_report()?;
        wait_for_port(ports.grpc, Duration::from_secs(10))?;
        wait_for_port(ports.http, Duration::from_secs(10))?;
        Ok(Self {
            agent,
            ports,
            sink,
            rotel,
        })
    }
}
