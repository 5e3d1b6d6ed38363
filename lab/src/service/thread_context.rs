//! The lab's writer of the OpenTelemetry thread context (OTEP 4947): the record layout of the
//! spec, published through `native/thread_context.c` (which owns the exported TLS variable), and
//! a future wrapper that publishes a request's context only while the request runs, as an async
//! runtime's instrumentation does. What the agent reads is checked against what this recorded.

use std::{
    future::Future,
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use opentelemetry::trace::SpanContext;

use crate::workloads::thread_cpu_ns;

unsafe extern "C" {
    fn culprit_lab_thread_ctx_set(record: *const ContextRecord);
}

/// A Thread-Local Context Record, v1: byte-packed, no attributes.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy)]
pub struct ContextRecord {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    valid: u8,
    trace_flags: u8,
    attrs_data_size: u16,
}

const _: () = assert!(std::mem::offset_of!(ContextRecord, valid) == 24);
const _: () = assert!(std::mem::offset_of!(ContextRecord, attrs_data_size) == 26);

impl ContextRecord {
    pub fn of(span: &SpanContext) -> Box<ContextRecord> {
        let mut record = Self::fixed(span.trace_id().to_bytes(), span.span_id().to_bytes());
        record.trace_flags = span.trace_flags().to_u8();
        record
    }

    /// A valid record of these ids, sampled.
    pub fn fixed(trace_id: [u8; 16], span_id: [u8; 8]) -> Box<ContextRecord> {
        Box::new(ContextRecord {
            trace_id,
            span_id,
            valid: 1,
            trace_flags: 1,
            attrs_data_size: 0,
        })
    }
}

/// Publishes `record` as the calling thread's context until [`detach`].
pub fn attach(record: &ContextRecord) {
    unsafe { culprit_lab_thread_ctx_set(record) };
}

/// The calling thread has no context any more.
pub fn detach() {
    unsafe { culprit_lab_thread_ctx_set(std::ptr::null()) };
}

/// The writer built as a shared library in a TLS dialect, for apps that load it at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `-mtls-dialect=gnu2`: TLS descriptors, the spec's recommendation.
    Tlsdesc,
    /// `-mtls-dialect=gnu`: legacy general dynamic.
    GeneralDynamic,
}

pub fn shared_library(dialect: Dialect) -> PathBuf {
    let name = match dialect {
        Dialect::Tlsdesc => "libotel_thread_ctx_tlsdesc.so",
        Dialect::GeneralDynamic => "libotel_thread_ctx_gd.so",
    };
    PathBuf::from(env!("OUT_DIR")).join(name)
}

/// A request's future that publishes the request's context while it is polled, and only then,
/// and sums the CPU time its polls took: the truth of what the request cost its thread.
pub struct Published<F> {
    record: Box<ContextRecord>,
    inner: Pin<Box<F>>,
    cpu_ns: Arc<AtomicU64>,
}

impl<F: Future> Published<F> {
    pub fn new(record: Box<ContextRecord>, inner: F, cpu_ns: Arc<AtomicU64>) -> Self {
        Self {
            record,
            inner: Box::pin(inner),
            cpu_ns,
        }
    }
}

impl<F: Future> Future for Published<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let before_ns = thread_cpu_ns();
        attach(&self.record);
        let out = self.inner.as_mut().poll(cx);
        detach();
        self.cpu_ns
            .fetch_add(thread_cpu_ns().saturating_sub(before_ns), Ordering::Relaxed);
        out
    }
}
