//! Retries, from the spans themselves: a client span is one attempt of a call. Its place among
//! the call's attempts comes from `http.request.resend_count` (the HTTP semantic conventions'
//! count of earlier attempts) or, for SDKs that set nothing, from the client spans of the same
//! name under the same parent in the same batch, in start order. An attempt failed when its
//! status is an error, its HTTP status is 5xx, or it carries `error.type`.

use std::collections::HashMap;

use opentelemetry_proto::tonic::{
    common::v1::any_value::Value,
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use serde::{Deserialize, Serialize};

use crate::otlp;

/// A client span's place among its call's attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 0 for the first attempt.
    pub index: u32,
    pub failed: bool,
    /// Whether the call was retried (this attempt is a retry, or others followed it).
    pub retried: bool,
}

fn int_attribute(span: &Span, key: &str) -> Option<i64> {
    match otlp::attribute(&span.attributes, key) {
        Some(Value::IntValue(v)) => Some(*v),
        Some(Value::StringValue(s)) => s.parse().ok(),
        _ => None,
    }
}

fn failed(span: &Span) -> bool {
    span.status
        .as_ref()
        .is_some_and(|s| s.code == StatusCode::Error as i32)
        || int_attribute(span, "http.response.status_code").is_some_and(|c| c >= 500)
        || otlp::attribute(&span.attributes, "error.type").is_some()
}

/// A call: its parent span id and its client spans' name.
type CallKey<'a> = (&'a [u8], &'a str);

/// The attempt of each span of a batch, in order: `None` for spans that are not clients.
pub(crate) fn attempts(spans: &[&Span]) -> Vec<Option<Attempt>> {
    // Client spans of one name under one parent: the attempts of one call, in start order.
    let mut groups: HashMap<CallKey<'_>, Vec<(u64, usize)>> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        if s.kind == SpanKind::Client as i32 {
            groups
                .entry((s.parent_span_id.as_slice(), s.name.as_str()))
                .or_default()
                .push((s.start_time_unix_nano, i));
        }
    }
    let mut out = vec![None; spans.len()];
    for mut members in groups.into_values() {
        members.sort_unstable();
        let n = members.len();
        for (position, (_, i)) in members.into_iter().enumerate() {
            let span = spans[i];
            let resent = int_attribute(span, "http.request.resend_count")
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(0);
            // Siblings under an unknown parent (a root client span) are separate calls.
            let position = if span.parent_span_id.is_empty() {
                0
            } else {
                position as u32
            };
            let index = resent.max(position);
            out[i] = Some(Attempt {
                index,
                failed: failed(span),
                retried: index > 0 || (n > 1 && !span.parent_span_id.is_empty()),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::Status;

    use super::*;
    use crate::otlp::string_kv;

    fn client(name: &str, parent: u8, start: u64, error: bool) -> Span {
        Span {
            name: name.into(),
            kind: SpanKind::Client as i32,
            parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
            start_time_unix_nano: start,
            status: error.then(|| Status {
                code: StatusCode::Error as i32,
                ..Status::default()
            }),
            ..Span::default()
        }
    }

    #[test]
    fn siblings_of_one_name_are_a_calls_attempts_in_start_order() {
        let spans = [
            client("GET /pay", 1, 30, false),
            client("GET /pay", 1, 10, true),
            client("GET /pay", 1, 20, true),
            client("GET /cart", 1, 5, false),
            Span {
                kind: SpanKind::Server as i32,
                ..client("GET /checkout", 0, 0, false)
            },
        ];
        let refs: Vec<&Span> = spans.iter().collect();
        let a = attempts(&refs);
        assert_eq!(
            a[1],
            Some(Attempt {
                index: 0,
                failed: true,
                retried: true
            })
        );
        assert_eq!(
            a[2],
            Some(Attempt {
                index: 1,
                failed: true,
                retried: true
            })
        );
        assert_eq!(
            a[0],
            Some(Attempt {
                index: 2,
                failed: false,
                retried: true
            })
        );
        // Another call of the same parent, not retried; the server span is no attempt.
        assert_eq!(
            a[3],
            Some(Attempt {
                index: 0,
                failed: false,
                retried: false
            })
        );
        assert_eq!(a[4], None);
    }

    #[test]
    fn the_resend_count_names_an_attempt_alone_in_its_batch() {
        let mut retry = client("GET", 2, 50, false);
        retry.attributes = vec![
            KeyValueInt::kv("http.request.resend_count", 2),
            string_kv("error.type", "timeout"),
        ];
        let roots = [client("GET", 0, 1, false), client("GET", 0, 2, false)];
        let spans = [&retry, &roots[0], &roots[1]];
        let a = attempts(&spans);
        assert_eq!(
            a[0],
            Some(Attempt {
                index: 2,
                failed: true,
                retried: true
            })
        );
        // Root client spans are calls of their own.
        assert_eq!(
            a[1],
            Some(Attempt {
                index: 0,
                failed: false,
                retried: false
            })
        );
        assert_eq!(
            a[2],
            Some(Attempt {
                index: 0,
                failed: false,
                retried: false
            })
        );
    }

    struct KeyValueInt;
    impl KeyValueInt {
        fn kv(key: &str, v: i64) -> opentelemetry_proto::tonic::common::v1::KeyValue {
            opentelemetry_proto::tonic::common::v1::KeyValue {
                key: key.into(),
                value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                    value: Some(Value::IntValue(v)),
                }),
                ..Default::default()
            }
        }
    }
}
