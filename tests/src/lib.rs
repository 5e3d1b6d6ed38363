//! Helpers for the privileged end-to-end tests in `tests/`. The tests drive the real `culprit`
//! binary, load its probes into the running kernel and inject real causes (see `culprit-lab`).
//! Run them through `cargo xtask test`, which builds the binaries first and runs them one at a
//! time (they share CPUs and the kernel).

pub mod identity;
pub mod otlp_http;
pub mod pki;
pub mod serving;

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::Span,
};
use serde_json::{Map, Value as Json, json};

/// Resident memory of `pid` now (`VmRSS`) and at its peak (`VmHWM`), in MiB.
pub fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Fails with an actionable message unless the tests can load eBPF programs.
/// A counter of the kernel's `/proc/net/snmp` or `/proc/net/netstat` text: the value under
/// `name` in the pair of lines starting with `prefix` (e.g. `"Tcp:"`, `"RetransSegs"`).
pub fn net_counter(text: &str, prefix: &str, name: &str) -> anyhow::Result<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let (names, values) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {prefix} {name} in {text}"))
}

pub fn require_root() -> anyhow::Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("the end-to-end tests load eBPF programs and create cgroups: run as root");
    }
    Ok(())
}

/// An OTLP value as the Python SDK's attribute values serialize to JSON.
pub fn any_to_json(v: &AnyValue) -> Json {
    match &v.value {
        Some(Value::StringValue(s)) => json!(s),
        Some(Value::BoolValue(b)) => json!(b),
        Some(Value::IntValue(i)) => json!(i),
        Some(Value::DoubleValue(d)) => json!(d),
        Some(Value::ArrayValue(a)) => Json::Array(a.values.iter().map(any_to_json).collect()),
        Some(Value::KvlistValue(kv)) => Json::Object(attrs_to_json(&kv.values)),
        Some(Value::BytesValue(b)) => json!(b),
        _ => Json::Null,
    }
}

pub fn attrs_to_json(kvs: &[KeyValue]) -> Map<String, Json> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map_or(Json::Null, any_to_json),
            )
        })
        .collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every span in a set of requests, with its resource and scope.
pub fn spans_of(
    requests: &[ExportTraceServiceRequest],
) -> Vec<(Option<Resource>, String, String, Span)> {
    requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| {
            rs.scope_spans.iter().flat_map(move |ss| {
                let scope = ss.scope.clone().unwrap_or_default();
                ss.spans.iter().map(move |s| {
                    (
                        rs.resource.clone(),
                        scope.name.clone(),
                        scope.version.clone(),
                        s.clone(),
                    )
                })
            })
        })
        .collect()
}

/// A span as the Python app recorded it, in the same shape: for field-by-field comparison.
pub fn span_as_recorded(resource: &Option<Resource>, scope: (&str, &str), s: &Span) -> Json {
    let original_attrs: Map<String, Json> = attrs_to_json(&s.attributes)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("culprit.") || k == "culprit.thread.tid")
        .collect();
    json!({
        "traceId": hex(&s.trace_id),
        "spanId": hex(&s.span_id),
        "parentSpanId": hex(&s.parent_span_id),
        "name": s.name,
        "kind": s.kind - 1,
        "startTimeUnixNano": s.start_time_unix_nano,
        "endTimeUnixNano": s.end_time_unix_nano,
        "attributes": original_attrs,
        "events": s.events.iter().map(|e| json!({
            "name": e.name,
            "timeUnixNano": e.time_unix_nano,
            "attributes": attrs_to_json(&e.attributes),
        })).collect::<Vec<_>>(),
        "links": s.links.iter().map(|l| json!({
            "traceId": hex(&l.trace_id),
            "spanId": hex(&l.span_id),
            "attributes": attrs_to_json(&l.attributes),
        })).collect::<Vec<_>>(),
        "status": {
            "code": s.status.as_ref().map_or(0, |st| st.code),
            "message": s.status.as_ref().map_or(String::new(), |st| st.message.clone()),
        },
        "resource": resource.as_ref().map_or(Map::new(), |r| {
            attrs_to_json(&r.attributes)
                .into_iter()
                .filter(|(k, _)| !k.starts_with("culprit."))
                .collect()
        }),
        "scope": {"name": scope.0, "version": scope.1},
    })
}

/// The value of a span attribute.
pub fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Value> {
    culprit::otlp::attribute(&s.attributes, key)
}
