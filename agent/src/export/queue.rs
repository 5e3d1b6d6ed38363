//! The bounded export queue: requests wait here while the backend is slow or down.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, atomic::Ordering},
};

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use tokio::sync::Notify;

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    trace::v1::{ResourceSpans, ScopeSpans},
};

pub(crate) use super::stats::ExportStats;
use crate::otlp::Payload;

/// Which OTLP service an encoded body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Telemetry {
    Traces,
    Metrics,
    Logs,
}

/// A request encoded once, when queued: retries resend the same bytes, and queued requests
/// take their wire size in memory instead of a tree of small allocations.
pub(crate) struct Item {
    pub signal: Telemetry,
    pub body: Bytes,
    pub spans: u64,
    /// False for the halves of a request the backend found too large: merged again, they would
    /// be refused again.
    pub mergeable: bool,
}

impl Item {
    pub(crate) fn new(payload: &Payload) -> Self {
        let (signal, body, spans) = match payload {
            Payload::Traces(r) => (
                Telemetry::Traces,
                r.encode_to_vec(),
                r.resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .map(|s| s.spans.len() as u64)
                    .sum(),
            ),
            Payload::Metrics(r) => (Telemetry::Metrics, r.encode_to_vec(), 0),
            Payload::Logs(r) => (Telemetry::Logs, r.encode_to_vec(), 0),
        };
        Self {
            signal,
            body: Bytes::from(body),
            spans,
            mergeable: true,
        }
    }

    /// An encoded trace request of `spans` spans.
    pub(crate) fn traces(body: Vec<u8>, spans: u64) -> Self {
        Self {
            signal: Telemetry::Traces,
            body: Bytes::from(body),
            spans,
            mergeable: true,
        }
    }

    fn bytes(&self) -> usize {
        self.body.len()
    }
}

struct Inner {
    items: VecDeque<Item>,
    bytes: usize,
}

/// Shared between the agent (push) and the sender task (front/pop).
#[derive(Clone)]
pub(crate) struct ExportQueue {
    inner: Arc<Mutex<Inner>>,
    pub notify: Arc<Notify>,
    pub stats: Arc<ExportStats>,
    max_items: usize,
    max_bytes: usize,
}

impl ExportQueue {
    pub(crate) fn new(max_items: usize, max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                items: VecDeque::new(),
                bytes: 0,
            })),
            notify: Arc::new(Notify::new()),
            stats: Arc::new(ExportStats::default()),
            max_items: max_items.max(1),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the queue inconsistent: every update is one step.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends; when full, drops the oldest requests (counted).
    pub(crate) fn push(&self, item: Item) {
        let mut q = self.lock();
        q.bytes += item.bytes();
        q.items.push_back(item);
        while q.items.len() > self.max_items || (q.bytes > self.max_bytes && q.items.len() > 1) {
            let Some(old) = q.items.pop_front() else {
                break;
            };
            q.bytes -= old.bytes();
            self.stats
                .spans_dropped_queue_full
                .fetch_add(old.spans, Ordering::Relaxed);
            self.stats.requests_dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.stats
            .queue_depth
            .store(q.items.len() as u64, Ordering::Relaxed);
        drop(q);
        self.notify.notify_one();
    }

    #[cfg(test)]
    /// Takes the oldest request out to send it.
    pub(crate) fn pop(&self) -> Option<Item> {
        let mut q = self.lock();
        let item = q.items.pop_front()?;
        q.bytes -= item.bytes();
        self.stats
            .queue_depth
            .store(q.items.len() as u64, Ordering::Relaxed);
        Some(item)
    }

    /// Takes the oldest request out, merged with the trace requests right behind it up to
    /// `max_spans` spans and `max_bytes`: one export call instead of many. Order is kept.
    /// Encoded protobuf messages merge by concatenation (repeated fields append), so merging
    /// copies bytes only.
    pub(crate) fn pop_batch(&self, max_spans: u64, max_bytes: usize) -> Option<Item> {
        let mut q = self.lock();
        let mut first = q.items.pop_front()?;
        q.bytes -= first.bytes();
        if first.signal == Telemetry::Traces && first.mergeable {
            // How many follow, then one allocation for all of them.
            let (mut n, mut spans, mut len) = (0, first.spans, first.body.len());
            for next in q.items.iter() {
                if next.signal != Telemetry::Traces
                    || !next.mergeable
                    || spans + next.spans > max_spans
                    || len + next.body.len() > max_bytes
                {
                    break;
                }
                n += 1;
                spans += next.spans;
                len += next.body.len();
            }
            if n > 0 {
                let mut merged = BytesMut::with_capacity(len);
                merged.extend_from_slice(&first.body);
                for next in q.items.drain(..n) {
                    merged.extend_from_slice(&next.body);
                }
                q.bytes -= len - first.body.len();
                first.body = merged.freeze();
                first.spans = spans;
            }
        }
        self.stats
            .queue_depth
            .store(q.items.len() as u64, Ordering::Relaxed);
        Some(first)
    }

    /// Puts a request that could not be sent back at the front, unless newer ones filled the
    /// queue meanwhile (then it is the oldest, and dropped).
    pub(crate) fn requeue(&self, item: Item) {
        let mut q = self.lock();
        if q.items.len() >= self.max_items {
            self.stats
                .spans_dropped_queue_full
                .fetch_add(item.spans, Ordering::Relaxed);
            self.stats.requests_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.bytes += item.bytes();
        q.items.push_front(item);
        self.stats
            .queue_depth
            .store(q.items.len() as u64, Ordering::Relaxed);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A trace request in two halves (by resource, else by spans of its largest scope), for a
/// backend that refused it as too large; `None` when it is one span, or not traces.
pub(crate) fn split(item: &Item) -> Option<(Item, Item)> {
    if item.signal != Telemetry::Traces {
        return None;
    }
    let mut request = ExportTraceServiceRequest::decode(&item.body[..]).ok()?;
    let second = if request.resource_spans.len() > 1 {
        let half = request.resource_spans.len() / 2;
        ExportTraceServiceRequest {
            resource_spans: request.resource_spans.split_off(half),
        }
    } else if request.resource_spans.first()?.scope_spans.len() > 1 {
        let rs = request.resource_spans.first_mut()?;
        let half = rs.scope_spans.len() / 2;
        let moved = rs.scope_spans.split_off(half);
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: moved,
                ..rs.clone()
            }],
        }
    } else {
        let rs = request.resource_spans.first_mut()?;
        let scope = rs.scope_spans.iter_mut().max_by_key(|s| s.spans.len())?;
        if scope.spans.len() < 2 {
            return None;
        }
        let half = scope.spans.len() / 2;
        let moved = ScopeSpans {
            spans: scope.spans.split_off(half),
            ..scope.clone()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![moved],
                ..rs.clone()
            }],
        }
    };
    let item_of = |r: &ExportTraceServiceRequest| Item {
        mergeable: false,
        ..Item::new(&Payload::Traces(r.clone()))
    };
    Some((item_of(&request), item_of(&second)))
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::Span;

    use super::*;

    fn traces(spans: usize) -> Item {
        Item::new(&Payload::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span::default(); spans],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }))
    }

    #[test]
    fn full_queue_drops_oldest_and_counts_spans() {
        let q = ExportQueue::new(2, usize::MAX);
        q.push(traces(3));
        q.push(traces(5));
        q.push(traces(7));
        assert_eq!(q.len(), 2);
        let s = q.stats.snapshot();
        assert_eq!(
            (
                s.spans_dropped_queue_full,
                s.requests_dropped,
                s.queue_depth
            ),
            (3, 1, 2)
        );
        assert_eq!(q.pop().unwrap().spans, 5);
    }

    #[test]
    fn requeued_items_go_first_unless_full() {
        let q = ExportQueue::new(2, usize::MAX);
        q.push(traces(1));
        let first = q.pop().unwrap();
        q.push(traces(2));
        q.requeue(first);
        assert_eq!(q.pop().unwrap().spans, 1);
        q.push(traces(3));
        q.push(traces(4));
        // Pushing 4 dropped the oldest (2 spans); the requeue finds the queue full.
        q.requeue(traces(9));
        assert_eq!(q.stats.snapshot().spans_dropped_queue_full, 2 + 9);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn batches_merge_consecutive_traces_up_to_the_cap() {
        let q = ExportQueue::new(100, usize::MAX);
        q.push(traces(3));
        q.push(traces(4));
        q.push(traces(5));
        let b = q.pop_batch(8, usize::MAX).unwrap();
        assert_eq!(b.spans, 7);
        // The concatenated bodies decode as one request holding both.
        let r = ExportTraceServiceRequest::decode(b.body.clone()).unwrap();
        assert_eq!(r.resource_spans.len(), 2);
        assert_eq!(
            r.resource_spans
                .iter()
                .map(|rs| rs.scope_spans[0].spans.len())
                .collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!(q.pop_batch(8, usize::MAX).unwrap().spans, 5);
        assert!(q.pop_batch(8, usize::MAX).is_none());
        // Capped in bytes too.
        q.push(traces(3));
        q.push(traces(4));
        let one = traces(3).body.len();
        assert_eq!(q.pop_batch(100, one + 1).unwrap().spans, 3);
    }

    #[test]
    fn a_request_too_large_for_the_backend_splits_in_halves() {
        let q = ExportQueue::new(100, usize::MAX);
        q.push(traces(3));
        q.push(traces(4));
        let merged = q.pop_batch(100, usize::MAX).unwrap();
        // By resource first.
        let (a, b) = split(&merged).unwrap();
        assert_eq!((a.spans, b.spans), (3, 4));
        // Then by spans.
        let (c, d) = split(&b).unwrap();
        assert_eq!((c.spans, d.spans), (2, 2));
        let (e, f) = split(&traces(2)).unwrap();
        assert_eq!((e.spans, f.spans), (1, 1));
        assert!(split(&traces(1)).is_none());
        // By scope, when one resource holds several.
        let scopes = Item::new(&Payload::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![
                    ScopeSpans {
                        spans: vec![Span::default()],
                        ..ScopeSpans::default()
                    };
                    3
                ],
                ..ResourceSpans::default()
            }],
        }));
        let (g, h) = split(&scopes).unwrap();
        assert_eq!((g.spans, h.spans), (1, 2));
        // Halves are never merged back into what was refused.
        q.requeue(d);
        q.requeue(c);
        assert_eq!(q.pop_batch(100, usize::MAX).unwrap().spans, 2);
        assert_eq!(q.pop_batch(100, usize::MAX).unwrap().spans, 2);
    }

    #[test]
    fn byte_cap_keeps_at_least_one() {
        let q = ExportQueue::new(100, 1);
        q.push(traces(1));
        q.push(traces(2));
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop().unwrap().spans, 2);
        assert!(q.is_empty());
    }
}
