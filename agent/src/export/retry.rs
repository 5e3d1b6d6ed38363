//! What to do after an export attempt, as the OTLP specification and the Collector's
//! exporterhelper do it: only the retryable codes are retried; the backend's own delay
//! (`Retry-After`, gRPC `RetryInfo`) comes first, else exponential backoff with jitter, and
//! retrying stops after a maximum elapsed time; a batch too large for the backend is split; a
//! partial success counts the spans the backend rejected. Unlike the specification, refused
//! credentials (HTTP 401/403, gRPC UNAUTHENTICATED/PERMISSION_DENIED) are retried too: on a node
//! they mean a token or certificate being rotated, and the spans are worth keeping for the
//! retry window while the export shows degraded.

use std::{
    hash::{BuildHasher as _, RandomState},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use tonic::Code;

use crate::otlp::rpc_status::retry_info_delay;

pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long one request is retried before it is dropped (counted): the exporterhelper's
/// default.
pub(crate) const MAX_ELAPSED: Duration = Duration::from_secs(300);
/// A backend's requested delay is honoured up to this.
const MAX_SERVER_DELAY: Duration = Duration::from_secs(60);

/// What became of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Accepted, but for `rejected` spans the backend refused (partial success).
    Sent { rejected: u64, message: String },
    /// Worth trying again: after `after` if the backend said so.
    Retry {
        why: String,
        after: Option<Duration>,
    },
    /// Too large for the backend: sent again in halves, if it can be split.
    TooLarge(String),
    /// The backend refused the data itself: retrying would not help.
    Rejected(String),
}

/// A gRPC answer; `details` is the status's `grpc-status-details-bin` (a `google.rpc.Status`).
pub(crate) fn grpc_outcome(code: Code, message: &str, details: &[u8]) -> Outcome {
    let why = format!("{code:?}: {message}");
    let retry_delay = retry_info_delay(details);
    match code {
        Code::Ok => Outcome::Sent {
            rejected: 0,
            message: String::new(),
        },
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Outcome::Retry {
            why,
            after: retry_delay,
        },
        // Retryable only with RetryInfo (the backend is throttling); without, it is a limit
        // the request breaks (gRPC's own message size limit answers so).
        Code::ResourceExhausted if retry_delay.is_some() => Outcome::Retry {
            why,
            after: retry_delay,
        },
        Code::ResourceExhausted => Outcome::TooLarge(why),
        Code::Unauthenticated | Code::PermissionDenied => Outcome::Retry { why, after: None },
        _ => Outcome::Rejected(why),
    }
}

/// An HTTP answer, with its `Retry-After` header.
pub(crate) fn http_outcome(status: u16, retry_after: Option<&str>) -> Outcome {
    let why = format!("HTTP {status}");
    match status {
        200..=299 => Outcome::Sent {
            rejected: 0,
            message: String::new(),
        },
        429 | 502 | 503 | 504 => Outcome::Retry {
            why,
            after: retry_after.and_then(parse_retry_after),
        },
        401 | 403 => Outcome::Retry {
            why: format!("{why}: credentials refused"),
            after: None,
        },
        413 => Outcome::TooLarge(why),
        _ => Outcome::Rejected(why),
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(s) = value.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// The spans a successful trace export's response says were rejected, with the backend's
/// message.
pub(crate) fn partial_rejection(response: &[u8]) -> (u64, String) {
    ExportTraceServiceResponse::decode(response)
        .ok()
        .and_then(|r| r.partial_success)
        .map_or((0, String::new()), |p| {
            (p.rejected_spans.max(0) as u64, p.error_message)
        })
}

/// The backoff of the request being retried.
#[derive(Debug)]
pub(crate) struct Backoff {
    current: Duration,
    failing_since: Option<Instant>,
    max_elapsed: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(MAX_ELAPSED)
    }
}

impl Backoff {
    /// A request is retried for up to `max_elapsed`, then dropped.
    pub(crate) fn new(max_elapsed: Duration) -> Self {
        Self {
            current: BACKOFF_MIN,
            failing_since: None,
            max_elapsed,
        }
    }

    /// The wait before the next attempt: the current backoff with jitter (50–150%), which then
    /// doubles up to its maximum, or the backend's delay if it asked for longer.
    pub(crate) fn next_delay(&mut self, now: Instant, server: Option<Duration>) -> Duration {
        self.failing_since.get_or_insert(now);
        let own = jittered(self.current);
        let delay = match server {
            // A backend asking for no delay at all does not get a tight loop.
            Some(d) => d.min(MAX_SERVER_DELAY).max(own),
            None => own,
        };
        self.current = (self.current * 2).min(BACKOFF_MAX);
        delay
    }

    /// Whether the request has been retried for longer than it may be.
    pub(crate) fn exhausted(&self, now: Instant) -> bool {
        self.failing_since
            .is_some_and(|t| now.duration_since(t) >= self.max_elapsed)
    }

    /// A request went out: the next one starts afresh.
    pub(crate) fn reset(&mut self) {
        *self = Self::new(self.max_elapsed);
    }
}

/// `d` scaled by a random factor in [0.5, 1.5): exporters that failed together do not retry
/// together.
fn jittered(d: Duration) -> Duration {
    let random = RandomState::new().hash_one(Instant::now());
    let factor = 0.5 + (random % 1000) as f64 / 1000.0;
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;

    use super::*;

    fn retry_info(seconds: u64) -> Vec<u8> {
        crate::otlp::rpc_status::retry_info(Duration::from_secs(seconds))
    }

    #[test]
    fn only_retryable_grpc_codes_are_retried() {
        assert!(matches!(
            grpc_outcome(Code::Unavailable, "down", &[]),
            Outcome::Retry { after: None, .. }
        ));
        assert_eq!(
            grpc_outcome(Code::ResourceExhausted, "slow down", &retry_info(3)),
            Outcome::Retry {
                why: "ResourceExhausted: slow down".into(),
                after: Some(Duration::from_secs(3))
            }
        );
        assert!(matches!(
            grpc_outcome(Code::ResourceExhausted, "too big", &[]),
            Outcome::TooLarge(_)
        ));
        for code in [Code::InvalidArgument, Code::Internal, Code::Unimplemented] {
            assert!(matches!(grpc_outcome(code, "", &[]), Outcome::Rejected(_)));
        }
        for code in [Code::Unauthenticated, Code::PermissionDenied] {
            assert!(matches!(
                grpc_outcome(code, "", &[]),
                Outcome::Retry { after: None, .. }
            ));
        }
    }

    #[test]
    fn http_retry_after_is_honoured() {
        assert_eq!(
            http_outcome(429, Some("3")),
            Outcome::Retry {
                why: "HTTP 429".into(),
                after: Some(Duration::from_secs(3))
            }
        );
        let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        let Outcome::Retry { after: Some(d), .. } = http_outcome(503, Some(&later)) else {
            panic!("no delay from a date");
        };
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert!(matches!(
            http_outcome(503, Some("soon")),
            Outcome::Retry { after: None, .. }
        ));
        assert!(matches!(http_outcome(413, None), Outcome::TooLarge(_)));
        assert!(matches!(http_outcome(400, None), Outcome::Rejected(_)));
        for status in [401, 403] {
            assert!(matches!(
                http_outcome(status, None),
                Outcome::Retry { after: None, .. }
            ));
        }
        assert!(matches!(http_outcome(204, None), Outcome::Sent { .. }));
    }

    #[test]
    fn backoff_jitters_doubles_and_gives_up_after_the_maximum_elapsed_time() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        let first = b.next_delay(t0, None);
        assert!(
            first >= BACKOFF_MIN / 2 && first < BACKOFF_MIN * 3 / 2,
            "{first:?}"
        );
        let second = b.next_delay(t0, None);
        assert!(
            second >= BACKOFF_MIN && second < BACKOFF_MIN * 3,
            "{second:?}"
        );
        for _ in 0..20 {
            assert!(b.next_delay(t0, None) < BACKOFF_MAX * 3 / 2);
        }
        assert_eq!(
            b.next_delay(t0, Some(Duration::from_secs(9))),
            Duration::from_secs(9)
        );
        assert!(b.next_delay(t0, Some(Duration::ZERO)) >= BACKOFF_MAX / 2);
        assert_eq!(
            b.next_delay(t0, Some(Duration::from_secs(600))),
            MAX_SERVER_DELAY
        );
        assert!(!b.exhausted(t0 + MAX_ELAPSED / 2));
        assert!(b.exhausted(t0 + MAX_ELAPSED));
        b.reset();
        assert!(!b.exhausted(t0 + MAX_ELAPSED * 2));
    }

    #[test]
    fn a_partial_success_names_the_rejected_spans() {
        let response = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 4,
                error_message: "bad ids".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(partial_rejection(&response), (4, "bad ids".to_string()));
        assert_eq!(partial_rejection(&[]), (0, String::new()));
    }
}
