//! The lab's async service: one worker thread interleaves every request (a current-thread
//! runtime), and each request publishes its OpenTelemetry thread context (OTEP 4947) only while
//! it is polled. `/cpu` computes in slices, yielding between them; `/sleep` awaits a timer. A
//! sleeping request's window is full of other requests' computing on its thread: only the
//! context tells the agent which time is whose. Records, per span, its thread and the CPU time
//! its polls took.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::Context as _;
use axum::{Router, extract::State, routing::get};
use opentelemetry::{
    KeyValue,
    trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _},
};
use opentelemetry_sdk::trace::SdkTracer;

use super::{
    server::tracer_provider,
    thread_context::{ContextRecord, Published},
};
use crate::workloads;

pub(crate) const CPU_ROUTE: &str = "GET /cpu";
pub(crate) const SLEEP_ROUTE: &str = "GET /sleep";

#[derive(Debug, Clone)]
pub struct AsyncServiceConfig {
    pub port: u16,
    pub otlp_endpoint: String,
    /// CPU time of one `/cpu` request, computed in `slice`s with a yield between.
    pub cpu_work: Duration,
    pub slice: Duration,
    /// How long one `/sleep` request awaits its timer.
    pub sleep: Duration,
    pub record: Option<PathBuf>,
}

/// What one request cost its thread, for the record.
#[derive(Debug, Clone)]
struct Served {
    span_id: String,
    route: &'static str,
    tid: i64,
    cpu_ns: u64,
}

#[derive(Clone)]
struct App {
    tracer: SdkTracer,
    config: AsyncServiceConfig,
    served: Arc<Mutex<Vec<Served>>>,
}

/// Serves until SIGINT or SIGTERM, then flushes its spans, writes the record and prints how many
/// requests it served.
pub fn run(config: &AsyncServiceConfig) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    ctrlc::set_handler(move || on_signal.store(true, Ordering::SeqCst))
        .context("installing the signal handler")?;
    // The exporter's runtime, apart from the one serving thread.
    let export_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let provider = {
        let _guard = export_rt.enter();
        tracer_provider(&config.otlp_endpoint)?
    };
    let app = App {
        tracer: provider.tracer("culprit.lab.async-service"),
        config: config.clone(),
        served: Arc::default(),
    };
    let served = app.served.clone();
    let addr = SocketAddr::from(([127, 0, 0, 1], config.port));
    let worker = thread::Builder::new()
        .name("lab-async".into())
        .spawn(move || serve(app, addr, stop))?;
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("the serving thread panicked"))??;
    provider.shutdown().context("flushing spans")?;
    let served = served.lock().map(|s| s.clone()).unwrap_or_default();
    if let Some(path) = &config.record {
        let json: Vec<serde_json::Value> = served
            .iter()
            .map(|s| {
                serde_json::json!({
                    "spanId": s.span_id, "route": s.route, "tid": s.tid, "cpuNs": s.cpu_ns,
                })
            })
            .collect();
        std::fs::write(path, serde_json::to_vec(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{}", serde_json::json!({ "served": served.len() }));
    Ok(())
}

fn serve(app: App, addr: SocketAddr, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let router = Router::new()
            .route("/cpu", get(cpu))
            .route("/sleep", get(sleep))
            .route("/health", get(|| async { "ok" }))
            .with_state(app);
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await
            .context("serving")
    })
}

async fn cpu(State(app): State<App>) -> &'static str {
    let (work, slice) = (app.config.cpu_work, app.config.slice);
    traced(&app, CPU_ROUTE, async move {
        let mut left = work;
        while !left.is_zero() {
            let now = slice.min(left);
            workloads::busy(now);
            left -= now;
            tokio::task::yield_now().await;
        }
    })
    .await;
    "done"
}

async fn sleep(State(app): State<App>) -> &'static str {
    let pause = app.config.sleep;
    traced(&app, SLEEP_ROUTE, tokio::time::sleep(pause)).await;
    "done"
}

/// Runs `work` as the request of a server span, its context published while it runs.
async fn traced(app: &App, route: &'static str, work: impl Future<Output = ()>) {
    let mut span = app
        .tracer
        .span_builder(route)
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", route.trim_start_matches("GET ")),
        ])
        .start(&app.tracer);
    let record = ContextRecord::of(span.span_context());
    let span_id = span.span_context().span_id().to_string();
    let cpu_ns = Arc::new(AtomicU64::new(0));
    Published::new(record, work, cpu_ns.clone()).await;
    span.end();
    if let Ok(mut served) = app.served.lock() {
        served.push(Served {
            span_id,
            route,
            tid: i64::from(unsafe { libc::gettid() }),
            cpu_ns: cpu_ns.load(Ordering::Relaxed),
        });
    }
}
