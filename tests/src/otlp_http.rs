//! Talking to receivers and reading back what reached the collector: a raw OTLP/HTTP POST (so
//! that a test controls every byte and sees every status), and the span ids a sink received.

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use culprit_lab::service::otel::Sink;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

use crate::{hex, spans_of};

/// POSTs `body` to `/v1/traces` on 127.0.0.1:`port` and returns the HTTP status. The body is
/// written whole unless the server answers (413) and closes first.
pub fn post(port: u16, content_type: &str, body: &[u8]) -> anyhow::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
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
