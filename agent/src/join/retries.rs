//! Retries, from the spans themselves: a client span is one attempt of a call. Its place among
//! the call's attempts comes from `http.request.resend_count` (the HTTP semantic conventions'
//! count of earlier attempts) or, for SDKs that set nothing, from the client spans of the same
//! name under the same parent, in start order: in the same batch, after those of earlier
//! batches (`recent_calls`). An attempt failed when its status is an error, its HTTP status is
//! 5xx, or it carries `error.type`.

use std::collections::HashMap;

use opentelemetry_proto::tonic::{
    common::v1::any_value::Value,
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use serde::{Deserialize, Serialize};

use super::recent_calls::RecentCalls;
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
/// `recent` holds the attempts earlier batches brought, and learns this one's.
pub(crate) fn attempts(spans: &[&Span], recent: &mut RecentCalls) -> Vec<Option<Attempt>> {
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
    for ((parent, name), mut members) in groups {
        members.sort_unstable();
        let n = members.len();
        let first_start_ns = members[0].0;
        let last_start_ns = members[n - 1].0;
        // Siblings under an unknown parent (a root client span) are separate calls.
        let (call, earlier) = if parent.is_empty() {
            (None, 0)
        } else {
            let call = recent.id(parent, name);
            (Some(call), recent.earlier_attempts(call, first_start_ns))
        };
        for (position, (_, i)) in members.into_iter().enumerate() {
            let span = spans[i];
            let resent = int_attribute(span, "http.request.resend_count")
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(0);
            let position = match call {
                Some(_) => earlier.saturating_add(position as u32),
                None => 0,
            };
            let index = resent.max(position);
            out[i] = Some(Attempt {
                index,
                failed: failed(span),
                retried: index > 0 || (n > 1 && call.is_some()),
            });
        }
        if let Some(call) = call {
            recent.record(call, earlier.saturating_add(n as u32), last_start_ns);
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
        let a = attempts(&refs, &mut RecentCalls::new(16));
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
        let a = attempts(&spans, &mut RecentCalls::new(16));
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

    #[test]
    fn a_retry_in_a_later_batch_follows_the_attempts_of_earlier_ones() {
        let mut recent = RecentCalls::new(16);
        let first = [
            client("GET /pay", 1, 10, true),
            client("GET /cart", 1, 11, false),
        ];
        let a = attempts(&[&first[0], &first[1]], &mut recent);
        assert_eq!(a[0].map(|a| (a.index, a.retried)), Some((0, false)));
        // The retry and another failure of it, exported later, without a resend count.
        let later = [
            client("GET /pay", 1, 30, false),
            client("GET /pay", 1, 20, true),
        ];
        let a = attempts(&[&later[0], &later[1]], &mut recent);
        assert_eq!(a[1].map(|a| (a.index, a.retried)), Some((1, true)));
        assert_eq!(a[0].map(|a| (a.index, a.retried)), Some((2, true)));
        // Root client spans stay calls of their own across batches too.
        for _ in 0..2 {
            let root = client("GET /pay", 0, 40, false);
            assert_eq!(attempts(&[&root], &mut recent)[0].map(|a| a.index), Some(0));
        }
        // A call under another parent starts at 0.
        let other = client("GET /pay", 2, 50, false);
        assert_eq!(
            attempts(&[&other], &mut recent)[0].map(|a| a.index),
            Some(0)
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
