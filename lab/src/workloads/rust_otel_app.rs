//! A Rust service instrumented with the official `opentelemetry-otlp` SDK (gRPC exporter): the
//! second real span producer of the tests, next to the Python SDK.

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use opentelemetry::{
    KeyValue,
    trace::{Span as _, Tracer as _, TracerProvider as _},
};
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};

use crate::workloads;

/// How the app describes itself: the stock SDK's resource (as most apps send it: no
/// `process.pid`) or with its pid and each span's OS thread.
#[derive(Debug, Clone, Copy)]
pub struct SelfDescription {
    pub pid: bool,
    pub thread: bool,
}

pub fn run(
    endpoint: &str,
    count: usize,
    work: Duration,
    record: &Path,
    describe: SelfDescription,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // The exporter's channel lives on this runtime; the batch processor's thread drives exports.
    let _guard = rt.enter();
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .context("building the OTLP exporter")?;
    let mut resource = Resource::builder().with_service_name("culprit-rust-app");
    if describe.pid {
        resource =
            resource.with_attribute(KeyValue::new("process.pid", i64::from(std::process::id())));
    }
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("culprit.lab.rust");
    let tid = unsafe { libc::gettid() };
    let mut created = Vec::new();
    for i in 0..count {
        let mut span = tracer.start("rust request");
        span.set_attribute(KeyValue::new("request.index", i as i64));
        if describe.thread {
            span.set_attribute(KeyValue::new("culprit.thread.tid", i64::from(tid)));
        }
        span.add_event("work.start", vec![KeyValue::new("lang", "rust")]);
        workloads::busy(work);
        let ctx = span.span_context().clone();
        span.end();
        created.push(serde_json::json!({
            "traceId": ctx.trace_id().to_string(),
            "spanId": ctx.span_id().to_string(),
            "name": "rust request",
            "index": i,
        }));
        std::thread::sleep(Duration::from_millis(20));
    }
    provider.shutdown().context("flushing spans")?;
    std::fs::write(record, serde_json::to_vec(&created)?)?;
    Ok(())
}
