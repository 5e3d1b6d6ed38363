//! The outgoing trace request, encoded straight from the received one with each span's culprit
//! attributes appended as ready-made protobuf fields. Building them as OTLP objects first cost
//! 13 small allocations per span and as many frees; here a span's attributes are bytes in one
//! shared buffer.
//!
//! A protobuf parser appends the entries of a repeated field in the order it meets them, and
//! fields may come in any order: a span's encoding followed by more `attributes` entries is that
//! span with the extra attributes last.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::{
    Message,
    encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len, message, string},
};

use super::attribution::{AttrValue, Attribution, attribute_pairs};

const REQUEST_RESOURCE_SPANS: u32 = 1;
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
const RESOURCE_SPANS_SCHEMA_URL: u32 = 3;
const SCOPE_SPANS_SCOPE: u32 = 1;
const SCOPE_SPANS_SPANS: u32 = 2;
const SCOPE_SPANS_SCHEMA_URL: u32 = 3;
const SPAN_ATTRIBUTES: u32 = 9;
const KEY_VALUE_KEY: u32 = 1;
const KEY_VALUE_VALUE: u32 = 2;
const ANY_VALUE_STRING: u32 = 1;
const ANY_VALUE_INT: u32 = 3;
const ANY_VALUE_DOUBLE: u32 = 4;

/// The encoded extra attributes of every span of a request, in the request's span order.
#[derive(Debug, Default)]
pub(crate) struct SpanExtras {
    bytes: Vec<u8>,
    /// End of each span's bytes in `bytes`.
    ends: Vec<usize>,
    /// How many spans the request has.
    spans: usize,
}

impl SpanExtras {
    pub(crate) fn with_capacity(spans: usize) -> Self {
        Self {
            // About 420 bytes of attributes per span.
            bytes: Vec::with_capacity(spans * 448),
            ends: Vec::with_capacity(spans),
            spans,
        }
    }

    /// The next span gets the attribution's attributes.
    pub(crate) fn push(&mut self, a: &Attribution) {
        let start = self.bytes.len();
        for (key, value) in attribute_pairs(a) {
            encode_attribute(key, value, &mut self.bytes);
        }
        self.ends.push(self.bytes.len());
        // The first attributed span's size foretells the others' (the same attributes, values
        // of similar lengths): one reservation for all, not a doubling every few spans.
        if start == 0 {
            let left = self.spans.saturating_sub(self.ends.len());
            self.bytes
                .reserve(left * (self.bytes.len() + self.bytes.len() / 8));
        }
    }

    /// The next span goes out unchanged.
    pub(crate) fn push_none(&mut self) {
        self.ends.push(self.bytes.len());
    }

    /// A span's bytes; none for a span past the last pushed.
    fn of(&self, span: usize) -> &[u8] {
        let start = span
            .checked_sub(1)
            .and_then(|i| self.ends.get(i))
            .copied()
            .unwrap_or(0);
        let end = self.ends.get(span).copied().unwrap_or(start);
        self.bytes.get(start..end).unwrap_or_default()
    }
}

fn encode_attribute(key: &str, value: AttrValue<'_>, buf: &mut Vec<u8>) {
    let any_value_len = match value {
        AttrValue::Str(s) => key_len(ANY_VALUE_STRING) + len_delimited(s.len()),
        AttrValue::I64(v) => key_len(ANY_VALUE_INT) + encoded_len_varint(v as u64),
        AttrValue::F64(_) => key_len(ANY_VALUE_DOUBLE) + 8,
    };
    let key_value_len = key_len(KEY_VALUE_KEY)
        + len_delimited(key.len())
        + key_len(KEY_VALUE_VALUE)
        + len_delimited(any_value_len);
    encode_key(SPAN_ATTRIBUTES, WireType::LengthDelimited, buf);
    encode_varint(key_value_len as u64, buf);
    encode_key(KEY_VALUE_KEY, WireType::LengthDelimited, buf);
    encode_varint(key.len() as u64, buf);
    buf.extend_from_slice(key.as_bytes());
    encode_key(KEY_VALUE_VALUE, WireType::LengthDelimited, buf);
    encode_varint(any_value_len as u64, buf);
    match value {
        AttrValue::Str(s) => {
            encode_key(ANY_VALUE_STRING, WireType::LengthDelimited, buf);
            encode_varint(s.len() as u64, buf);
            buf.extend_from_slice(s.as_bytes());
        }
        AttrValue::I64(v) => {
            encode_key(ANY_VALUE_INT, WireType::Varint, buf);
            encode_varint(v as u64, buf);
        }
        AttrValue::F64(v) => {
            encode_key(ANY_VALUE_DOUBLE, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Length of a length-delimited body of `len` bytes with its length prefix.
fn len_delimited(len: usize) -> usize {
    encoded_len_varint(len as u64) + len
}

/// Encoded lengths of every nested message, in the order they are written: each computed once
/// (a span's `encoded_len` walks all of its fields).
#[derive(Default)]
struct Lengths {
    spans: Vec<usize>,
    scopes: Vec<usize>,
    resources: Vec<usize>,
}

impl Lengths {
    fn of(request: &ExportTraceServiceRequest, extras: &SpanExtras) -> Self {
        let mut l = Self::default();
        for rs in &request.resource_spans {
            let mut scopes = 0;
            for ss in &rs.scope_spans {
                let mut spans = 0;
                for span in &ss.spans {
                    let len = span.encoded_len() + extras.of(l.spans.len()).len();
                    l.spans.push(len);
                    spans += key_len(SCOPE_SPANS_SPANS) + len_delimited(len);
                }
                let len = optional_message_len(SCOPE_SPANS_SCOPE, ss.scope.as_ref())
                    + spans
                    + schema_url_len(SCOPE_SPANS_SCHEMA_URL, &ss.schema_url);
                l.scopes.push(len);
                scopes += key_len(RESOURCE_SPANS_SCOPE_SPANS) + len_delimited(len);
            }
            l.resources.push(
                optional_message_len(RESOURCE_SPANS_RESOURCE, rs.resource.as_ref())
                    + scopes
                    + schema_url_len(RESOURCE_SPANS_SCHEMA_URL, &rs.schema_url),
            );
        }
        l
    }

    fn total(&self) -> usize {
        self.resources
            .iter()
            .map(|&l| key_len(REQUEST_RESOURCE_SPANS) + len_delimited(l))
            .sum()
    }
}

/// Encodes `request` with `extras` appended to its spans.
pub(crate) fn encode(request: &ExportTraceServiceRequest, extras: &SpanExtras) -> Vec<u8> {
    let lengths = Lengths::of(request, extras);
    let mut buf = Vec::with_capacity(lengths.total());
    let (mut span_lens, mut scope_lens) = (lengths.spans.iter(), lengths.scopes.iter());
    let mut next_span = 0;
    for (rs, len) in request.resource_spans.iter().zip(&lengths.resources) {
        write_len_prefix(REQUEST_RESOURCE_SPANS, *len, &mut buf);
        if let Some(resource) = &rs.resource {
            message::encode(RESOURCE_SPANS_RESOURCE, resource, &mut buf);
        }
        for ss in &rs.scope_spans {
            let len = scope_lens.next().copied().unwrap_or_default();
            write_len_prefix(RESOURCE_SPANS_SCOPE_SPANS, len, &mut buf);
            if let Some(scope) = &ss.scope {
                message::encode(SCOPE_SPANS_SCOPE, scope, &mut buf);
            }
            for span in &ss.spans {
                let len = span_lens.next().copied().unwrap_or_default();
                write_len_prefix(SCOPE_SPANS_SPANS, len, &mut buf);
                // A Vec grows as needed: encoding into it cannot run out of room.
                let _ = span.encode(&mut buf);
                buf.extend_from_slice(extras.of(next_span));
                next_span += 1;
            }
            if !ss.schema_url.is_empty() {
                string::encode(SCOPE_SPANS_SCHEMA_URL, &ss.schema_url, &mut buf);
            }
        }
        if !rs.schema_url.is_empty() {
            string::encode(RESOURCE_SPANS_SCHEMA_URL, &rs.schema_url, &mut buf);
        }
    }
    buf
}

fn write_len_prefix(tag: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn optional_message_len(tag: u32, m: Option<&impl Message>) -> usize {
    m.map_or(0, |m| message::encoded_len(tag, m))
}

/// proto3 leaves an empty string out.
fn schema_url_len(tag: u32, url: &String) -> usize {
    if url.is_empty() {
        0
    } else {
        string::encoded_len(tag, url)
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        common::v1::{InstrumentationScope, KeyValue},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span, Status},
    };

    use super::*;
    use crate::{join::attribution::to_attributes, otlp::string_kv};

    fn attribution(cause: &str, neighbour: Option<&str>) -> Attribution {
        Attribution {
            cause: cause.into(),
            cause_share: 0.75,
            on_cpu_s: 0.001,
            runqueue_s: 0.02,
            throttled_s: 0.0,
            off_cpu_s: 1e-9,
            waker_delay_s: 0.0,
            waker_throttled_s: 0.0,
            disk_io_s: 0.0,
            disk_device: None,
            memory_reclaim_s: 0.0,
            memory_reclaim_on_cpu_s: 0.0,
            cpu_steal_s: 0.0,
            memory_reclaim_runq_s: 0.0,
            page_fault_s: 0.0,
            lock_wait_s: 0.0,
            retransmit_wait_s: 0.0,
            connect_retransmit_wait_s: 0.0,
            retransmits: 3,
            retransmit_peer: None,
            queue_wait_s: 0.0,
            queue_runq_s: 0.0,
            queue_throttled_s: 0.0,
            retry: None,
            neighbour: neighbour.map(str::to_string),
            neighbour_container_id: None,
            waker: None,
            lock_holder: None,
            join: "thread".into(),
            coverage: 1.0,
        }
    }

    fn span(i: u8, attributes: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![i; 16],
            span_id: vec![i; 8],
            name: format!("GET /{i}"),
            start_time_unix_nano: 1_000 * u64::from(i),
            end_time_unix_nano: 2_000 * u64::from(i),
            attributes,
            status: Some(Status {
                code: 2,
                ..Status::default()
            }),
            ..Span::default()
        }
    }

    fn request() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![string_kv("service.name", "a")],
                        ..Resource::default()
                    }),
                    scope_spans: vec![
                        ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: "lib".into(),
                                ..InstrumentationScope::default()
                            }),
                            spans: vec![
                                span(1, vec![string_kv("http.route", "/1")]),
                                span(2, vec![]),
                            ],
                            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                        },
                        ScopeSpans::default(),
                    ],
                    schema_url: "https://opentelemetry.io/schemas/1.25.0".into(),
                },
                ResourceSpans {
                    resource: None,
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span(3, vec![])],
                        ..ScopeSpans::default()
                    }],
                    ..ResourceSpans::default()
                },
            ],
        }
    }

    #[test]
    fn decodes_as_the_request_with_the_attributes_appended() {
        let attributions = [
            Some(attribution("cpu.contention", Some("stress (42)"))),
            None,
            Some(attribution("on_cpu", None)),
        ];
        let mut extras = SpanExtras::with_capacity(3);
        let mut expected = request();
        let spans = expected
            .resource_spans
            .iter_mut()
            .flat_map(|rs| &mut rs.scope_spans)
            .flat_map(|ss| &mut ss.spans);
        for (span, a) in spans.zip(&attributions) {
            match a {
                Some(a) => {
                    extras.push(a);
                    span.attributes.extend(to_attributes(a));
                }
                None => extras.push_none(),
            }
        }
        let bytes = encode(&request(), &extras);
        let decoded = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn without_extras_it_is_prost_encoding() {
        let extras = SpanExtras::default();
        assert_eq!(encode(&request(), &extras), request().encode_to_vec());
        let empty = ExportTraceServiceRequest::default();
        assert!(encode(&empty, &extras).is_empty());
    }

    #[test]
    fn every_value_kind_round_trips() {
        let mut a = attribution("tcp.retransmit", Some("x"));
        a.retransmits = u64::MAX / 2;
        a.cause_share = f64::MIN_POSITIVE;
        a.retransmit_peer = Some("10.0.0.1:443".into());
        a.neighbour_container_id = Some("c".repeat(300));
        let mut extras = SpanExtras::default();
        extras.push(&a);
        let mut req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(9, vec![])],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        };
        let bytes = encode(&req, &extras);
        req.resource_spans[0].scope_spans[0].spans[0]
            .attributes
            .extend(to_attributes(&a));
        assert_eq!(ExportTraceServiceRequest::decode(&bytes[..]).unwrap(), req);
    }
}
