//! A service at scale, as a stock SDK sends its spans: `threads` worker threads, each serving one
//! request per period (a short burst of work between sleeps), and one exporter sending the
//! finished spans over OTLP/gRPC every 200 ms, as a batch span processor does. The spans name
//! no thread and no process: the agent finds the sender from the connection and the serving
//! thread from the kernel, the costly case.

use std::{
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, trace_service_client::TraceServiceClient},
    common::v1::{AnyValue, KeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};

use culprit::clock::realtime_ns;

use super::cpu::busy;

/// What a stock batch processor waits between two exports.
const EXPORT_PERIOD: Duration = Duration::from_millis(200);
/// A request's work on its thread.
const REQUEST_WORK: Duration = Duration::from_micros(20);

/// Serves `spans_per_s` requests a second over `threads` threads until `run_for` has passed,
/// exporting a span per request to the OTLP/gRPC `endpoint` as `service`.
pub fn span_sender(
    threads: usize,
    spans_per_s: f64,
    endpoint: &str,
    service: &str,
    run_for: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + run_for;
    let threads = threads.max(1);
    let period = Duration::from_secs_f64(threads as f64 / spans_per_s.max(0.01));
    // Bounded (four exports' worth): a sender whose exports stall drops spans, as an SDK's
    // full queue does, rather than grow.
    let queue = ((spans_per_s * EXPORT_PERIOD.as_secs_f64() * 4.0) as usize).max(1024);
    let (tx, rx) = mpsc::sync_channel::<(u64, u64)>(queue);
    for i in 0..threads {
        let tx = tx.clone();
        // Staggered over one period, so that the threads do not wake in step.
        let mut next = Instant::now() + period.mul_f64(i as f64 / threads as f64);
        thread::spawn(move || {
            while next < deadline {
                thread::sleep(next.saturating_duration_since(Instant::now()));
                let start_ns = realtime_ns();
                busy(REQUEST_WORK);
                let _ = tx.try_send((start_ns, realtime_ns()));
                next += period;
            }
        });
    }
    drop(tx);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut client = TraceServiceClient::connect(endpoint.to_string()).await?;
        let mut seq = 0u64;
        while Instant::now() < deadline {
            tokio::time::sleep(EXPORT_PERIOD).await;
            let finished: Vec<(u64, u64)> = rx.try_iter().collect();
            if finished.is_empty() {
                continue;
            }
            // A failed export is dropped, as an SDK drops it after its retries.
            let _ = client.export(request(service, &finished, &mut seq)).await;
        }
        anyhow::Ok(())
    })
}

/// A string attribute, as the OTLP messages the lab sends carry them.
pub(crate) fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

/// One export of `finished` requests (start and end, Unix ns), ids unique per process.
fn request(service: &str, finished: &[(u64, u64)], seq: &mut u64) -> ExportTraceServiceRequest {
    let pid = u64::from(std::process::id());
    let spans = finished
        .iter()
        .map(|&(start_ns, end_ns)| {
            *seq += 1;
            Span {
                trace_id: (u128::from(pid) << 64 | u128::from(*seq))
                    .to_be_bytes()
                    .to_vec(),
                span_id: (pid << 40 | *seq).to_be_bytes().to_vec(),
                name: "GET /item".into(),
                kind: 2,
                start_time_unix_nano: start_ns,
                end_time_unix_nano: end_ns,
                attributes: vec![string_attribute("http.route", "/item")],
                ..Span::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_attribute("service.name", service)],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}
