//! `/retry`: a client that retries. Each request exchanges a message with the downstream over the
//! worker's kept-alive connection, giving each attempt 300 ms, and tries again (3 attempts in
//! all) on a fresh connection after a failure. Each attempt is a client span, a retry with
//! `http.request.resend_count`; the service counts calls and attempts itself: the truth the
//! agent's amplification is scored against.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use anyhow::Context as _;
use opentelemetry::{
    Context, KeyValue,
    trace::{Span as _, SpanKind, Status, Tracer as _},
};
use opentelemetry_sdk::trace::SdkTracer;
use serde::{Deserialize, Serialize};

use super::routes::DOWNSTREAM_MESSAGE_BYTES;

/// Attempts per call, the first included.
pub(crate) const ATTEMPTS: u32 = 3;
/// What an attempt may take: a lost segment's first retransmit (200 ms on loopback) fits, a
/// second loss does not.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(300);
/// The name of each attempt's client span.
pub(crate) const ATTEMPT_SPAN: &str = "downstream attempt";

/// What the service did, counted by itself.
#[derive(Debug, Default)]
pub(crate) struct RetryTruth {
    pub(crate) calls: AtomicU64,
    pub(crate) attempts: AtomicU64,
}

/// The counts as the service prints them at exit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RetryCounts {
    pub calls: u64,
    pub attempts: u64,
}

impl RetryTruth {
    pub(crate) fn counts(&self) -> RetryCounts {
        RetryCounts {
            calls: self.calls.load(Ordering::SeqCst),
            attempts: self.attempts.load(Ordering::SeqCst),
        }
    }
}

/// One call with its retries, over `conn` (replaced after a failure).
pub(crate) fn call_with_retries(
    tracer: &SdkTracer,
    parent: &Context,
    downstream: std::net::SocketAddr,
    conn: &mut Option<TcpStream>,
    truth: &RetryTruth,
) -> anyhow::Result<()> {
    truth.calls.fetch_add(1, Ordering::SeqCst);
    let mut last = Ok(());
    for attempt in 0..ATTEMPTS {
        truth.attempts.fetch_add(1, Ordering::SeqCst);
        let mut attributes = vec![
            KeyValue::new("server.address", downstream.ip().to_string()),
            KeyValue::new("server.port", i64::from(downstream.port())),
        ];
        if attempt > 0 {
            attributes.push(KeyValue::new(
                "http.request.resend_count",
                i64::from(attempt),
            ));
        }
        let mut span = tracer
            .span_builder(ATTEMPT_SPAN)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(tracer, parent);
        last = exchange(conn, downstream);
        match &last {
            Ok(()) => {
                span.end();
                return Ok(());
            }
            Err(err) => {
                span.set_status(Status::error(format!("{err:#}")));
                span.set_attribute(KeyValue::new("error.type", "timeout"));
                span.end();
                // The connection may hold the late answer: a retry starts afresh.
                *conn = None;
            }
        }
    }
    last
}

fn exchange(conn: &mut Option<TcpStream>, downstream: std::net::SocketAddr) -> anyhow::Result<()> {
    if conn.is_none() {
        let stream = TcpStream::connect(downstream)
            .with_context(|| format!("connecting to {downstream}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(ATTEMPT_TIMEOUT))?;
        *conn = Some(stream);
    }
    let stream = conn.as_mut().context("no connection")?;
    let mut message = [7u8; DOWNSTREAM_MESSAGE_BYTES];
    stream.write_all(&message)?;
    stream.read_exact(&mut message).context("the answer")?;
    Ok(())
}
