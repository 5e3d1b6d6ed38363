//! What decoding a request would cost, counted on the wire before anything is decoded. An
//! OTLP message amplifies in memory: an empty span is 2 bytes on the wire and some 300 decoded,
//! so a 4 MiB request of 2 million of them would take the agent past any pod's limit; so do
//! empty data points and log records. The scan follows each signal's schema of nested messages
//! (spans, events, links; metrics, data points, exemplars, buckets; log records; attributes and
//! their values, arrays and maps of values) and counts every message decoding would allocate,
//! without allocating; past the limit it stops.

/// Decoded messages of one trace request, or why it was not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Items {
    /// This many messages (each one allocation or more when decoded).
    Counted(usize),
    /// More than the limit: refused before decoding.
    OverLimit,
    /// Not valid protobuf wire data (decoding would fail too).
    Malformed(&'static str),
}

/// The request types a receiver decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Schema {
    Traces,
    Metrics,
    Logs,
}

/// The nested messages of the OTLP export requests that decoding allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Request,
    ResourceSpans,
    Resource,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    MetricsRequest,
    ResourceMetrics,
    ScopeMetrics,
    Metric,
    /// `Gauge`, `Sum`, `Histogram`, `ExponentialHistogram` and `Summary`: each holds its data
    /// points in field 1.
    MetricData(PointKind),
    DataPoint(PointKind),
    Exemplar,
    /// `ExponentialHistogramDataPoint.Buckets`, whose counts are packed varints.
    Buckets,
    LogsRequest,
    ResourceLogs,
    ScopeLogs,
    LogRecord,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    /// `Resource.entity_refs`: its repeated strings (id and description keys) are each an
    /// allocation, counted as one.
    EntityRef,
}

/// The kinds of data point, which keep their attributes and exemplars in different fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PointKind {
    Number,
    Histogram,
    Exponential,
    Summary,
}

/// A packed varint decodes into 8 bytes; this many of them weigh one message.
const PACKED_VARINTS_PER_ITEM: usize = 40;

impl Msg {
    /// The message field `field` of `self` holds, if it is one the scan follows.
    fn child(self, field: u64) -> Option<Msg> {
        use Msg::*;
        Some(match (self, field) {
            (MetricsRequest, 1) => ResourceMetrics,
            (ResourceMetrics | ResourceLogs, 1) => Resource,
            (ResourceMetrics, 2) => ScopeMetrics,
            (ScopeMetrics | ScopeLogs, 1) => Scope,
            (ScopeMetrics, 2) => Metric,
            (Metric, 5 | 7) => MetricData(PointKind::Number),
            (Metric, 9) => MetricData(PointKind::Histogram),
            (Metric, 10) => MetricData(PointKind::Exponential),
            (Metric, 11) => MetricData(PointKind::Summary),
            (MetricData(p), 1) => DataPoint(p),
            (DataPoint(PointKind::Number | PointKind::Summary), 7)
            | (DataPoint(PointKind::Histogram), 9)
            | (DataPoint(PointKind::Exponential), 1)
            | (Metric, 12)
            | (Exemplar, 7)
            | (LogRecord, 6) => KeyValue,
            (DataPoint(PointKind::Number), 5)
            | (DataPoint(PointKind::Histogram), 8)
            | (DataPoint(PointKind::Exponential), 11) => Exemplar,
            (DataPoint(PointKind::Exponential), 8 | 9) => Buckets,
            (LogsRequest, 1) => ResourceLogs,
            (ResourceLogs, 2) => ScopeLogs,
            (ScopeLogs, 2) => LogRecord,
            (LogRecord, 5) => AnyValue,
            (Request, 1) => ResourceSpans,
            (ResourceSpans, 1) => Resource,
            (Resource, 3) => EntityRef,
            (ResourceSpans, 2) => ScopeSpans,
            (Resource, 1) | (Scope, 3) | (Span, 9) | (Event, 3) | (Link, 4) => KeyValue,
            (ScopeSpans, 1) => Scope,
            (ScopeSpans, 2) => Span,
            (Span, 11) => Event,
            (Span, 13) => Link,
            (KeyValue, 2) | (ArrayValue, 1) => AnyValue,
            (AnyValue, 5) => ArrayValue,
            (AnyValue, 6) => KeyValueList,
            (KeyValueList, 1) => KeyValue,
            _ => return None,
        })
    }
}

/// prost's own nesting limit: deeper messages fail to decode anyway.
const MAX_DEPTH: usize = 100;

/// Counts the messages decoding `bytes` as the export request of `schema` would allocate, up
/// to `limit`.
pub(crate) fn items(bytes: &[u8], schema: Schema, limit: usize) -> Items {
    let root = match schema {
        Schema::Traces => Msg::Request,
        Schema::Metrics => Msg::MetricsRequest,
        Schema::Logs => Msg::LogsRequest,
    };
    let mut count = 0usize;
    match scan(bytes, root, 0, &mut count, limit) {
        Ok(()) => Items::Counted(count),
        Err(Stop::OverLimit) => Items::OverLimit,
        Err(Stop::Malformed(why)) => Items::Malformed(why),
    }
}

enum Stop {
    OverLimit,
    Malformed(&'static str),
}

fn scan(
    mut buf: &[u8],
    msg: Msg,
    depth: usize,
    count: &mut usize,
    limit: usize,
) -> Result<(), Stop> {
    if depth > MAX_DEPTH {
        return Err(Stop::Malformed("messages nested too deep"));
    }
    while !buf.is_empty() {
        let (field, wire_type) = key(&mut buf)?;
        match wire_type {
            LEN => {
                let inner = length_delimited(&mut buf)?;
                if msg == Msg::Buckets && field == 2 {
                    *count += inner.len().div_ceil(PACKED_VARINTS_PER_ITEM);
                    if *count > limit {
                        return Err(Stop::OverLimit);
                    }
                } else if msg == Msg::EntityRef {
                    *count += 1;
                    if *count > limit {
                        return Err(Stop::OverLimit);
                    }
                } else if let Some(child) = msg.child(field) {
                    *count += 1;
                    if *count > limit {
                        return Err(Stop::OverLimit);
                    }
                    scan(inner, child, depth + 1, count, limit)?;
                }
            }
            START_GROUP => buf = skip_group(buf, field, depth + 1)?,
            END_GROUP => return Err(Stop::Malformed("end of a group that was not started")),
            _ => buf = skip_scalar(buf, wire_type)?,
        }
    }
    Ok(())
}

const VARINT: u64 = 0;
const I64: u64 = 1;
const LEN: u64 = 2;
/// Groups (deprecated, proto2): no field of the OTLP schemas is one, but an unknown field may
/// be, and decoding skips it up to its end tag.
const START_GROUP: u64 = 3;
const END_GROUP: u64 = 4;
const I32: u64 = 5;

/// A field's key: its number and wire type, refused where decoding refuses it.
fn key(buf: &mut &[u8]) -> Result<(u64, u64), Stop> {
    let key = varint(buf)?;
    if key > u64::from(u32::MAX) {
        return Err(Stop::Malformed("invalid field key"));
    }
    let (field, wire_type) = (key >> 3, key & 7);
    if field == 0 {
        return Err(Stop::Malformed("field number 0"));
    }
    if wire_type > I32 {
        return Err(Stop::Malformed("unsupported wire type"));
    }
    Ok((field, wire_type))
}

fn length_delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], Stop> {
    let len = usize::try_from(varint(buf)?).map_err(|_| Stop::Malformed("length overflows"))?;
    if len > buf.len() {
        return Err(Stop::Malformed("length past the end"));
    }
    let (inner, rest) = buf.split_at(len);
    *buf = rest;
    Ok(inner)
}

/// Skips a value that is not a group (`wire_type` is 0, 1, 2 or 5).
fn skip_scalar(mut buf: &[u8], wire_type: u64) -> Result<&[u8], Stop> {
    match wire_type {
        VARINT => {
            varint(&mut buf)?;
            Ok(buf)
        }
        I64 => skip(buf, 8),
        LEN => length_delimited(&mut buf).map(|_| buf),
        _ => skip(buf, 4),
    }
}

/// Skips a group's fields, nested groups included, through the end tag of `field`; what follows.
/// Each step consumes at least a key, and nesting is bounded as messages are.
fn skip_group(mut buf: &[u8], field: u64, depth: usize) -> Result<&[u8], Stop> {
    if depth > MAX_DEPTH {
        return Err(Stop::Malformed("groups nested too deep"));
    }
    loop {
        if buf.is_empty() {
            return Err(Stop::Malformed("group without its end"));
        }
        let (inner, wire_type) = key(&mut buf)?;
        match wire_type {
            END_GROUP if inner == field => return Ok(buf),
            END_GROUP => return Err(Stop::Malformed("end of another group")),
            START_GROUP => buf = skip_group(buf, inner, depth + 1)?,
            _ => buf = skip_scalar(buf, wire_type)?,
        }
    }
}

fn skip(buf: &[u8], n: usize) -> Result<&[u8], Stop> {
    buf.get(n..).ok_or(Stop::Malformed("field past the end"))
}

fn varint(buf: &mut &[u8]) -> Result<u64, Stop> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Ok(value);
        }
    }
    Err(Stop::Malformed("bad varint"))
}

/// An upper bound of the objects decoding a JSON body would allocate: each one opens a brace,
/// and each element of an array of strings ends at a comma.
pub(crate) fn json_items(bytes: &[u8], limit: usize) -> Items {
    let braces = bytes.iter().filter(|&&b| b == b'{' || b == b',').count();
    if braces > limit {
        Items::OverLimit
    } else {
        Items::Counted(braces)
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        collector::trace::v1::ExportTraceServiceRequest,
        common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value},
        trace::v1::{ResourceSpans, ScopeSpans, Span, span::Event},
    };
    use prost::Message as _;

    use super::*;

    fn trace_items(bytes: &[u8], limit: usize) -> Items {
        items(bytes, Schema::Traces, limit)
    }

    fn request(spans: Vec<Span>) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
        .encode_to_vec()
    }

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    #[test]
    fn every_allocated_message_is_counted() {
        let span = Span {
            name: "x".into(),
            attributes: vec![
                kv("a", Value::IntValue(1)),
                kv(
                    "b",
                    Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue::default(), AnyValue::default()],
                    }),
                ),
            ],
            events: vec![Event::default()],
            ..Span::default()
        };
        // resource_spans, scope_spans, span, 2 key-values with their values, the array and its
        // 2 values, the event.
        assert_eq!(trace_items(&request(vec![span]), 100), Items::Counted(11));
        assert_eq!(trace_items(&request(vec![]), 100), Items::Counted(2));
        assert_eq!(trace_items(&[], 100), Items::Counted(0));
    }

    #[test]
    fn empty_spans_are_refused_past_the_limit_without_decoding() {
        let body = request(vec![Span::default(); 10_000]);
        assert_eq!(trace_items(&body, 20_000), Items::Counted(10_002));
        assert_eq!(trace_items(&body, 5_000), Items::OverLimit);
    }

    #[test]
    fn broken_wire_data_is_malformed() {
        let mut body = request(vec![Span::default()]);
        body.truncate(body.len() - 1);
        assert!(matches!(trace_items(&body, 100), Items::Malformed(_)));
        assert!(matches!(
            trace_items(&[0x0a, 0xff], 100),
            Items::Malformed(_)
        ));
        assert!(matches!(trace_items(&[0x0b], 100), Items::Malformed(_)));
        assert!(matches!(trace_items(&[0x0e], 100), Items::Malformed(_)));
        // Unknown fields are skipped, as decoding skips them.
        assert_eq!(
            trace_items(&[0x10, 0x01, 0x1d, 0, 0, 0, 0], 100),
            Items::Counted(0)
        );
    }

    #[test]
    fn unknown_groups_are_skipped_as_decoding_skips_them() {
        let span = request(vec![Span::default()]);
        // Field 15 as a group holding a varint, a nested group (field 2) and a fixed32.
        let group = [0x7b, 0x08, 0x01, 0x13, 0x14, 0x0d, 1, 2, 3, 4, 0x7c];
        let body = [&group[..], &span].concat();
        assert!(ExportTraceServiceRequest::decode(&body[..]).is_ok());
        assert_eq!(trace_items(&body, 100), Items::Counted(3));
        // A group left open, closed by another field's end tag, or an end without a start.
        for bad in [
            &[0x7b, 0x08, 0x01][..],
            &[0x7b, 0x14],
            &[0x7c],
            &[0x7b, 0x7b, 0x7c],
        ] {
            assert!(
                matches!(trace_items(bad, 100), Items::Malformed(_)),
                "{bad:x?}"
            );
            assert!(ExportTraceServiceRequest::decode(bad).is_err(), "{bad:x?}");
        }
        // Groups nested past the limit stop, without overflowing the stack.
        let deep = [vec![0x7b; 10_000], vec![0x7c; 10_000]].concat();
        assert!(matches!(trace_items(&deep, 100), Items::Malformed(_)));
    }

    #[test]
    fn keys_decoding_refuses_are_malformed() {
        // Field number 0, and a key past 32 bits.
        assert!(matches!(
            trace_items(&[0x00, 0x01], 100),
            Items::Malformed(_)
        ));
        let big = [0x80, 0x80, 0x80, 0x80, 0x10, 0x00];
        assert!(matches!(trace_items(&big, 100), Items::Malformed(_)));
    }

    #[test]
    fn values_nested_past_prosts_limit_are_malformed() {
        let mut value = AnyValue::default();
        for _ in 0..60 {
            value = AnyValue {
                value: Some(Value::ArrayValue(ArrayValue {
                    values: vec![value],
                })),
            };
        }
        let span = Span {
            attributes: vec![KeyValue {
                key: "deep".into(),
                value: Some(value),
                ..KeyValue::default()
            }],
            ..Span::default()
        };
        assert!(matches!(
            trace_items(&request(vec![span]), 1_000),
            Items::Malformed(_)
        ));
    }

    #[test]
    fn json_bodies_are_bounded_by_their_braces() {
        assert_eq!(json_items(br#"{"a":{"b":1}}"#, 10), Items::Counted(2));
        assert_eq!(json_items(&b"{}".repeat(11), 10), Items::OverLimit);
        assert_eq!(
            json_items(br#"{"idKeys":["","",""]}"#, 10),
            Items::Counted(3)
        );
    }

    #[test]
    fn entity_references_are_counted_with_their_strings() {
        // ResourceSpans { resource: Resource { entity_refs: [EntityRef { id_keys: ["a", "b"] }] } }
        let entity = [0x1a, 0x06, 0x1a, 0x01, b'a', 0x1a, 0x01, b'b'];
        let mut resource = vec![0x0a, entity.len() as u8];
        resource.extend_from_slice(&entity);
        let mut request = vec![0x0a, resource.len() as u8];
        request.extend_from_slice(&resource);
        // resource_spans, resource, the entity reference, its two keys.
        assert_eq!(trace_items(&request, 100), Items::Counted(5));
    }
}

#[cfg(test)]
#[path = "work_limit_signal_tests.rs"]
mod signal_tests;
