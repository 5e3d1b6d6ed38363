//! The hand-off from the receivers to the agent: a bounded queue (a full queue is back-pressure:
//! the receivers answer 429 / RESOURCE_EXHAUSTED) and a cap on requests in flight.

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
use tokio::sync::{Semaphore, mpsc};

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
        }
    }
}

/// Why a request was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not a valid OTLP message.
    Malformed(String),
    /// Larger than the configured limit.
    TooLarge { limit_bytes: usize },
    /// Too many requests in flight or the agent's queue is full: retry later.
    Busy,
}

#[derive(Clone)]
pub struct Ingress {
    tx: mpsc::Sender<Inbound>,
    in_flight: Arc<Semaphore>,
    pub stats: Arc<IngressStats>,
    pub max_message_bytes: usize,
}

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
            },
            rx,
        )
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

    /// Queues a decoded request for the agent.
    pub fn deliver(&self, payload: Payload, origin: Origin) -> Result<(), Rejection> {
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
        self.tx.try_send(Inbound { payload, origin }).map_err(|_| {
            self.stats.rejected_busy.fetch_add(1, Ordering::Relaxed);
            Rejection::Busy
        })
    }
}
