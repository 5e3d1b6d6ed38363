//! A load generator's per-request results, read from what it writes:
//! - k6's `--out json=FILE`: one JSON object per line; each `http_req_duration` point carries
//!   the request's tags, among them the trace id the script tagged it with (`trace_id`, k6 1.x
//!   has no built-in tracing: the script sets `traceparent` itself) and k6's own `scenario`;
//! - JSON lines of `{"trace_id": ..., "latency_ms": ..., "group": ...}`, which a Locust hook (or
//!   any client) writes.
//!
//! A line that is not such a record is skipped and counted; a file that has none is an error.

use std::path::Path;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use super::model::ClientRequest;

#[derive(Deserialize)]
struct K6Line {
    #[serde(rename = "type")]
    kind: String,
    metric: String,
    data: K6Data,
}

#[derive(Deserialize)]
struct K6Data {
    value: f64,
    #[serde(default)]
    tags: std::collections::HashMap<String, String>,
}

#[derive(Deserialize)]
struct PlainLine {
    trace_id: String,
    latency_ms: f64,
    #[serde(default)]
    group: Option<String>,
}

/// A trace id as the agent writes it: 32 lower-case hex digits, not all zero.
fn trace_id(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0'))
        .then_some(s)
}

/// The requests in one line, if it is a request's record.
fn parse_line(line: &str) -> Option<ClientRequest> {
    if let Ok(k6) = serde_json::from_str::<K6Line>(line) {
        if k6.kind != "Point" || k6.metric != "http_req_duration" {
            return None;
        }
        let id = k6.data.tags.get("trace_id").and_then(|t| trace_id(t))?;
        let group = k6
            .data
            .tags
            .get("test_run_id")
            .or_else(|| k6.data.tags.get("scenario"))
            .cloned();
        return Some(ClientRequest {
            trace_id: id,
            latency_ms: k6.data.value,
            group,
        });
    }
    let plain: PlainLine = serde_json::from_str(line).ok()?;
    Some(ClientRequest {
        trace_id: trace_id(&plain.trace_id)?,
        latency_ms: plain.latency_ms,
        group: plain.group,
    })
    .filter(|r| r.latency_ms.is_finite() && r.latency_ms >= 0.0)
}

/// The requests of a results file, and how many of its lines were something else.
pub fn parse(text: &str) -> (Vec<ClientRequest>, usize) {
    let mut requests = Vec::new();
    let mut skipped = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match parse_line(line) {
            Some(r) if r.latency_ms.is_finite() && r.latency_ms >= 0.0 => requests.push(r),
            _ => skipped += 1,
        }
    }
    (requests, skipped)
}

pub fn read(path: &Path) -> anyhow::Result<(Vec<ClientRequest>, usize)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (requests, skipped) = parse(&text);
    if requests.is_empty() {
        bail!(
            "{}: no request with a trace id in its {} lines (k6: `--out json=FILE` with each \
             request tagged `trace_id`, its `traceparent` header set; or JSON lines of \
             trace_id and latency_ms)",
            path.display(),
            skipped
        );
    }
    Ok((requests, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn k6_points_of_request_duration_are_requests() {
        let text = format!(
            r#"{{"type":"Metric","data":{{"name":"http_req_duration","type":"trend"}},"metric":"http_req_duration"}}
{{"type":"Point","metric":"http_req_duration","data":{{"time":"2026-12-06T18:00:00Z","value":12.5,"tags":{{"trace_id":"{}","scenario":"default","name":"http://x/cpu"}}}}}}
{{"type":"Point","metric":"http_req_waiting","data":{{"time":"2026-12-06T18:00:00Z","value":12.0,"tags":{{"trace_id":"{ID}"}}}}}}
{{"type":"Point","metric":"http_req_duration","data":{{"time":"2026-12-06T18:00:00Z","value":3.0,"tags":{{"scenario":"default"}}}}}}
not json
"#,
            ID.to_uppercase()
        );
        let (requests, skipped) = parse(&text);
        assert_eq!(
            requests,
            [ClientRequest {
                trace_id: ID.to_string(),
                latency_ms: 12.5,
                group: Some("default".into())
            }]
        );
        assert_eq!(skipped, 4);
    }

    #[test]
    fn plain_lines_are_requests_and_bad_ids_are_not() {
        let text = format!(
            "{{\"trace_id\":\"{ID}\",\"latency_ms\":7.5,\"group\":\"locust\"}}\n\
             {{\"trace_id\":\"00000000000000000000000000000000\",\"latency_ms\":1}}\n\
             {{\"trace_id\":\"xyz\",\"latency_ms\":1}}\n\
             {{\"trace_id\":\"{ID}\",\"latency_ms\":-1}}\n"
        );
        let (requests, skipped) = parse(&text);
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].group.as_deref(), Some("locust"));
        assert_eq!(skipped, 3);
    }
}
