//! The hand-off from the receivers to the agent: a bounded queue (a full queue is back-pressure:
//! the receivers answer 429 / UNAVAILABLE, which SDKs retry), a cap on requests in flight, and a
//! memory budget: a trace request is weighed on the wire before it is decoded (`work_limit`),
//! refused past a per-request limit, and holds its share of the budget until the join releases
//! it, so that what senders make the agent hold is bounded whatever they send.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::{
    receiver_security::ReceiverSecurity,
    work_limit::{Items, Schema, items, json_items},
};

/// Where a request came from, as the kernel knows it: the connection's two ends (whose opener
/// the kernel recorded), or on a unix socket the sending process itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Origin {
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    /// The peer process of a unix socket connection (`SO_PEERCRED`), in the agent's pid
    /// namespace.
    pub peer_pid: Option<u32>,
}

#[derive(Debug)]
pub enum Payload {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
}

#[derive(Debug)]
pub struct Inbound {
    pub payload: Payload,
    pub origin: Origin,
    /// A trace request's share of the memory budget, held until the join releases it.
    pub budget: Option<OwnedSemaphorePermit>,
}

/// Counters of the receivers, shared with the report.
#[derive(Debug, Default)]
pub struct IngressStats {
    pub requests: AtomicU64,
    pub spans_received: AtomicU64,
    pub rejected_malformed: AtomicU64,
    pub rejected_too_large: AtomicU64,
    pub rejected_unsupported_type: AtomicU64,
    pub rejected_busy: AtomicU64,
    /// Trace requests that would decode into more messages than one request may.
    pub rejected_too_many_items: AtomicU64,
    /// Connections closed at once: the receiver had as many open as it takes.
    pub rejected_connections: AtomicU64,
    /// Connections closed for sending nothing (idle, or a request's headers trickled in).
    pub connections_timed_out: AtomicU64,
    /// Connections whose TLS handshake failed (no or an untrusted client certificate, plain
    /// text to a TLS receiver).
    pub rejected_tls: AtomicU64,
    /// Requests without the bearer token the receivers require.
    pub rejected_unauthenticated: AtomicU64,
    /// The receivers listening, as `protocol address`.
    bound: std::sync::Mutex<Vec<String>>,
}

/// A snapshot of [`IngressStats`] for reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressCounts {
    pub requests: u64,
    pub spans_received: u64,
    pub rejected_malformed: u64,
    pub rejected_too_large: u64,
    pub rejected_unsupported_type: u64,
    pub rejected_busy: u64,
    #[serde(default)]
    pub rejected_too_many_items: u64,
    #[serde(default)]
    pub rejected_connections: u64,
    #[serde(default)]
    pub connections_timed_out: u64,
    #[serde(default)]
    pub rejected_tls: u64,
    #[serde(default)]
    pub rejected_unauthenticated: u64,
}

impl IngressStats {
    pub fn snapshot(&self) -> IngressCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IngressCounts {
            requests: get(&self.requests),
            spans_received: get(&self.spans_received),
            rejected_malformed: get(&self.rejected_malformed),
            rejected_too_large: get(&self.rejected_too_large),
            rejected_unsupported_type: get(&self.rejected_unsupported_type),
            rejected_busy: get(&self.rejected_busy),
            rejected_too_many_items: get(&self.rejected_too_many_items),
            rejected_connections: get(&self.rejected_connections),
            connections_timed_out: get(&self.connections_timed_out),
            rejected_tls: get(&self.rejected_tls),
            rejected_unauthenticated: get(&self.rejected_unauthenticated),
        }
    }

    /// A receiver listens on `what` (`OTLP/gRPC 0.0.0.0:4317`).
    pub(crate) fn on_bound(&self, what: String) {
        self.bound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(what);
    }

    pub(crate) fn bound(&self) -> Vec<String> {
        self.bound.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Why a request was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not a valid OTLP message.
    Malformed(String),
    /// Larger than the configured limit.
    TooLarge { limit_bytes: usize },
    /// Would decode into more messages than one request may (or than the whole budget).
    TooManyItems { limit: usize },
    /// Too many requests in flight or the agent's queue is full: retry later.
    Busy,
}

/// What one decoded message costs in memory, at most, beyond its wire bytes (an empty span is
/// about 300 bytes decoded; an attribute 60 to 100).
const DECODED_BYTES_PER_ITEM: usize = 320;

#[derive(Clone)]
pub struct Ingress {
    tx: mpsc::Sender<Inbound>,
    in_flight: Arc<Semaphore>,
    pub stats: Arc<IngressStats>,
    pub max_message_bytes: usize,
    /// Messages one trace request may decode into.
    pub max_items: usize,
    /// The memory budget of decoded trace requests, in KiB permits.
    budget: Arc<Semaphore>,
    budget_kib: usize,
    /// The TLS and token the TCP receivers require.
    pub security: ReceiverSecurity,
}

/// The default memory budget of decoded trace requests.
pub(crate) const DEFAULT_BUDGET_BYTES: usize = 64 << 20;
/// The default limit of messages per trace request: 200 times an SDK's default batch of 512
/// spans with a few attributes each.
pub(crate) const DEFAULT_MAX_ITEMS: usize = 100_000;

impl Ingress {
    pub fn new(
        queue: usize,
        max_in_flight: usize,
        max_message_bytes: usize,
    ) -> (Self, mpsc::Receiver<Inbound>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        (
            Self {
                tx,
                in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
                stats: Arc::new(IngressStats::default()),
                max_message_bytes,
                max_items: DEFAULT_MAX_ITEMS,
                budget: Arc::new(Semaphore::new(DEFAULT_BUDGET_BYTES >> 10)),
                budget_kib: DEFAULT_BUDGET_BYTES >> 10,
                security: ReceiverSecurity::default(),
            },
            rx,
        )
    }

    /// Per-request message limit and memory budget of decoded trace requests.
    pub fn with_work_limits(mut self, max_items: usize, budget_bytes: usize) -> Self {
        let kib = (budget_bytes >> 10).clamp(1, u32::MAX as usize);
        self.max_items = max_items.max(1);
        self.budget = Arc::new(Semaphore::new(kib));
        self.budget_kib = kib;
        self
    }

    /// The TCP receivers require what `security` says.
    pub fn with_security(mut self, security: ReceiverSecurity) -> Self {
        self.security = security;
        self
    }

    /// Reserves budget for a body of `bytes` before it is read: a flood of large bodies is
    /// answered "busy" instead of being buffered.
    pub fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit, Rejection> {
        self.acquire(bytes.div_ceil(1024).max(1))
    }

    fn acquire(&self, kib: usize) -> Result<OwnedSemaphorePermit, Rejection> {
        // More than the whole budget is never admitted, whatever the load: refused for good.
        if kib > self.budget_kib {
            return Err(self.too_many_items());
        }
        self.budget
            .clone()
            .try_acquire_many_owned(kib as u32)
            .map_err(|_| {
                self.stats.rejected_busy.fetch_add(1, Ordering::Relaxed);
                Rejection::Busy
            })
    }

    fn too_many_items(&self) -> Rejection {
        self.stats
            .rejected_too_many_items
            .fetch_add(1, Ordering::Relaxed);
        Rejection::TooManyItems {
            limit: self.max_items,
        }
    }

    /// Weighs a trace request's body, as [`Ingress::weigh`] does.
    pub fn weigh_traces(
        &self,
        body: &[u8],
        json: bool,
        reserved: Option<OwnedSemaphorePermit>,
    ) -> Result<OwnedSemaphorePermit, Rejection> {
        self.weigh(body, Schema::Traces, json, reserved)
    }

    /// Weighs a request's body (protobuf of `schema`, or JSON when `json`) before it is
    /// decoded: its share of the memory budget (topping up what was `reserved` for the body),
    /// or why it is refused.
    pub(crate) fn weigh(
        &self,
        body: &[u8],
        schema: Schema,
        json: bool,
        reserved: Option<OwnedSemaphorePermit>,
    ) -> Result<OwnedSemaphorePermit, Rejection> {
        let items = if json {
            json_items(body, self.max_items)
        } else {
            items(body, schema, self.max_items)
        };
        let n = match items {
            Items::Counted(n) => n,
            Items::OverLimit => return Err(self.too_many_items()),
            Items::Malformed(why) => return Err(self.malformed(why)),
        };
        // The body and what it decodes into live together until the body is dropped
        // (`release_body`); decoded strings and bytes take about their wire size.
        let kib = (2 * body.len() + n * DECODED_BYTES_PER_ITEM)
            .div_ceil(1024)
            .max(1);
        let Some(mut held) = reserved else {
            return self.acquire(kib);
        };
        let have = held.num_permits();
        if kib > have {
            held.merge(self.acquire(kib - have)?);
        } else {
            // The body decodes into less than it weighed: give the rest back now.
            drop(held.split(have - kib));
        }
        Ok(held)
    }

    /// Gives back the share of a decoded request's budget its dropped body of `body_bytes` held.
    pub fn release_body(budget: &mut OwnedSemaphorePermit, body_bytes: usize) {
        let kib = body_bytes
            .div_ceil(1024)
            .min(budget.num_permits().saturating_sub(1));
        drop(budget.split(kib));
    }

    /// A permit to process one request, or `Busy`.
    pub fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Rejection> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.clone().try_acquire_owned().map_err(|_| {
            self.stats.rejected_busy.fetch_add(1, Ordering::Relaxed);
            Rejection::Busy
        })
    }

    pub fn check_size(&self, len: usize) -> Result<(), Rejection> {
        if len > self.max_message_bytes {
            self.stats
                .rejected_too_large
                .fetch_add(1, Ordering::Relaxed);
            return Err(Rejection::TooLarge {
                limit_bytes: self.max_message_bytes,
            });
        }
        Ok(())
    }

    pub fn malformed(&self, why: impl std::fmt::Display) -> Rejection {
        self.stats
            .rejected_malformed
            .fetch_add(1, Ordering::Relaxed);
        Rejection::Malformed(why.to_string())
    }

    /// Queues a decoded request for the agent, with its share of the memory budget.
    pub fn deliver(
        &self,
        payload: Payload,
        origin: Origin,
        budget: Option<OwnedSemaphorePermit>,
    ) -> Result<(), Rejection> {
        if let Payload::Traces(req) = &payload {
            let spans: usize = req
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            self.stats
                .spans_received
                .fetch_add(spans as u64, Ordering::Relaxed);
        }
        let inbound = Inbound {
            payload,
            origin,
            budget,
        };
        self.tx.try_send(inbound).map_err(|_| {
            self.stats.rejected_busy.fetch_add(1, Ordering::Relaxed);
            Rejection::Busy
        })
    }
}
