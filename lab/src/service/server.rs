//! The lab's HTTP service, instrumented with the official `opentelemetry-otlp` SDK: a CPU-bound
//! endpoint, one that calls a downstream TCP service, and one that reads a file past the page
//! cache. Each request is handled start to end by
//! one worker thread. Its spans are a stock SDK's, as in a cluster: no `process.pid`, no thread
//! named (the agent finds the process from the connection and infers the thread; the service
//! records the truth), unless `--thread-attr` names it in `culprit.thread.tid`.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::Context as _;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::{
    Context, KeyValue,
    trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _},
};
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider},
};

use super::{
    pool_server::ServedThreads as Served,
    retry_call::RetryTruth,
    thread_context::{self, ContextRecord},
};
use crate::workloads::{self, disk::DirectReader, lock::SharedLock, mapped::MappedPages, memory};

pub(crate) const SERVICE_NAME: &str = "lab-service";
pub(crate) use super::routes::{
    ALLOC_ROUTE, CONNECT_ROUTE, CPU_ROUTE, DISK_ROUTE, DOWNSTREAM_MESSAGE_BYTES, DOWNSTREAM_ROUTE,
    LOCK_ROUTE, MAPPED_ROUTE, RETRY_ROUTE,
};
/// Blocks one `/disk` request reads, each [`DISK_BLOCK_BYTES`], one after the other.
const DISK_READS: usize = 32;
const DISK_BLOCK_BYTES: usize = 64 << 10;

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub port: u16,
    /// The address the service listens on: loopback on the node, any address in a pod's
    /// network namespace (the load reaches it at the pod's address).
    pub listen_host: std::net::IpAddr,
    pub downstream_port: u16,
    /// Where the downstream listens: loopback, or the node's address seen from a pod.
    pub downstream_host: std::net::IpAddr,
    /// OTLP/gRPC endpoint of the agent, e.g. `http://127.0.0.1:4317`.
    pub otlp_endpoint: String,
    pub workers: usize,
    /// Busy time of one `/cpu` request.
    pub cpu_work: Duration,
    /// Name the serving thread in `culprit.thread.tid`.
    pub thread_attr: bool,
    /// Where to write, at shutdown, the thread that served each span.
    pub record: Option<std::path::PathBuf>,
    /// Publish each request's OpenTelemetry thread context (OTEP 4947) while it is served.
    pub thread_context: bool,
    /// The file `/disk` reads with `O_DIRECT`; without it `/disk` answers 404.
    pub disk_file: Option<std::path::PathBuf>,
    /// Serve `/lock`, whose requests share a lock with a thread pinned to this CPU that holds
    /// it in bursts; without it `/lock` answers 404.
    pub lock_holder_cpu: Option<usize>,
    /// Serve `/pooled` from a pool of `workers` threads that accept and read connections
    /// themselves (`pool_server`), instead of the HTTP library's reader threads.
    pub accept_pool: bool,
}

/// Serves until SIGINT or SIGTERM, then flushes its spans and prints how many requests it served
/// (one JSON line, read by the lab).
pub fn run(config: &ServiceConfig) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    ctrlc::set_handler(move || on_signal.store(true, Ordering::SeqCst))
        .context("installing the signal handler")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // The exporter's gRPC channel lives on this runtime; the batch processor's own thread
    // drives the exports.
    let _guard = rt.enter();
    let provider = tracer_provider(&config.otlp_endpoint)?;
    let tracer = provider.tracer("culprit.lab.service");
    let served = Arc::new(AtomicU64::new(0));
    let truth: Served = Arc::default();
    if config.accept_pool {
        let pool = super::pool_server::Pool {
            tracer,
            stop: stop.clone(),
            served: served.clone(),
            cpu_work: config.cpu_work,
            thread_attr: config.thread_attr,
            truth: config.record.is_some().then(|| truth.clone()),
        };
        super::pool_server::serve(
            (config.listen_host, config.port).into(),
            config.workers,
            pool,
        )?;
        return finish(
            &provider,
            config.record.as_deref().map(|p| (p, &truth)),
            &served,
            &RetryTruth::default(),
        );
    }
    let server = Arc::new(
        tiny_http::Server::http((config.listen_host, config.port))
            .map_err(|e| anyhow::anyhow!("binding {}:{}: {e}", config.listen_host, config.port))?,
    );
    if let Some(path) = &config.disk_file {
        // Created once here, before the workers open it each.
        DirectReader::open(path, DISK_BLOCK_BYTES)?;
    }
    let lock = config
        .lock_holder_cpu
        .map(|cpu| SharedLock::start(cpu, stop.clone()))
        .transpose()?;
    let retries: Arc<RetryTruth> = Arc::default();
    let workers: Vec<_> = (0..config.workers.max(1))
        .map(|_| {
            let worker = Worker {
                server: server.clone(),
                tracer: tracer.clone(),
                stop: stop.clone(),
                served: served.clone(),
                truth: truth.clone(),
                config: config.clone(),
                downstream: None,
                disk: None,
                mapped: None,
                lock: lock.clone(),
                retries: retries.clone(),
            };
            thread::spawn(move || worker.serve())
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    finish(
        &provider,
        config.record.as_deref().map(|p| (p, &truth)),
        &served,
        &retries,
    )
}

/// Flushes the spans, writes the served spans' threads if asked, and prints how many requests
/// were served (one JSON line, read by the lab).
fn finish(
    provider: &SdkTracerProvider,
    record: Option<(&std::path::Path, &Served)>,
    served: &AtomicU64,
    retries: &RetryTruth,
) -> anyhow::Result<()> {
    provider.shutdown().context("flushing spans")?;
    if let Some((path, truth)) = record {
        let truth = truth.lock().map(|t| t.clone()).unwrap_or_default();
        let json: Vec<serde_json::Value> = truth
            .iter()
            .map(|(span_id, tid)| serde_json::json!({ "spanId": span_id, "tid": tid }))
            .collect();
        std::fs::write(path, serde_json::to_vec(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "{}",
        serde_json::json!({ "served": served.load(Ordering::SeqCst), "retries": retries.counts() })
    );
    Ok(())
}

pub(crate) fn tracer_provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .context("building the OTLP exporter")?;
    // Spans leave within 200 ms, so that the lab sees them soon after the load stops.
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_millis(200))
                .with_max_queue_size(8192)
                .build(),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(SERVICE_NAME).build())
        .with_span_processor(processor)
        .build())
}

struct Worker {
    server: Arc<tiny_http::Server>,
    tracer: SdkTracer,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    config: ServiceConfig,
    truth: Served,
    /// This worker's connection to the downstream service (a connection pool of one).
    downstream: Option<TcpStream>,
    /// This worker's handle on the `/disk` data file.
    disk: Option<DirectReader>,
    /// This worker's mapping of the data file's first pages, for `/mapped`.
    mapped: Option<MappedPages>,
    /// The lock `/lock` takes.
    lock: Option<SharedLock>,
    /// The calls and attempts of `/retry`, counted by the service.
    retries: Arc<RetryTruth>,
}

impl Worker {
    fn serve(mut self) {
        let tid = i64::from(unsafe { libc::gettid() });
        while !self.stop.load(Ordering::SeqCst) {
            let request = match self.server.recv_timeout(Duration::from_millis(100)) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(err) => {
                    eprintln!("lab-service: receiving a request: {err}");
                    continue;
                }
            };
            let path = request.url().split('?').next().unwrap_or("").to_string();
            let route = match path.as_str() {
                "/cpu" => CPU_ROUTE,
                "/downstream" => DOWNSTREAM_ROUTE,
                "/disk" if self.config.disk_file.is_some() => DISK_ROUTE,
                "/mapped" if self.config.disk_file.is_some() => MAPPED_ROUTE,
                "/connect" => CONNECT_ROUTE,
                "/retry" => RETRY_ROUTE,
                "/lock" if self.lock.is_some() => LOCK_ROUTE,
                "/alloc" => ALLOC_ROUTE,
                "/health" => {
                    let _ = request.respond(tiny_http::Response::from_string("ok"));
                    continue;
                }
                _ => {
                    let _ = request.respond(
                        tiny_http::Response::from_string("not found").with_status_code(404),
                    );
                    continue;
                }
            };
            let mut attributes = vec![
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("http.route", path.clone()),
                KeyValue::new("url.path", path.clone()),
            ];
            if self.config.thread_attr {
                attributes.push(KeyValue::new("culprit.thread.tid", tid));
            }
            // A client's `traceparent` (k6's, the lab's load generator's) parents the span: the
            // client's latency joins with it by trace id.
            let headers: std::collections::HashMap<String, String> = request
                .headers()
                .iter()
                .map(|h| {
                    (
                        h.field.as_str().as_str().to_ascii_lowercase(),
                        h.value.as_str().to_string(),
                    )
                })
                .collect();
            let parent = TraceContextPropagator::new().extract(&headers);
            let span = self
                .tracer
                .span_builder(route)
                .with_kind(SpanKind::Server)
                .with_attributes(attributes)
                .start_with_context(&self.tracer, &parent);
            let cx = Context::current_with_span(span);
            let record = self
                .config
                .thread_context
                .then(|| ContextRecord::of(&cx.span().span_context().clone()));
            if let Some(record) = &record {
                thread_context::attach(record);
            }
            if self.config.record.is_some()
                && let Ok(mut truth) = self.truth.lock()
            {
                truth.push((cx.span().span_context().span_id().to_string(), tid));
            }
            let outcome = match route {
                CPU_ROUTE => {
                    workloads::busy(self.config.cpu_work);
                    Ok(())
                }
                DISK_ROUTE => self.read_disk(),
                MAPPED_ROUTE => {
                    // A fifth of `/cpu`'s work, then pages of the mapped file.
                    workloads::busy(self.config.cpu_work / 5);
                    self.read_mapped()
                }
                LOCK_ROUTE => self.lock_turn(),
                ALLOC_ROUTE => {
                    // A fifth of `/cpu`'s work, then fresh memory to fault in.
                    workloads::busy(self.config.cpu_work / 5);
                    memory::alloc_touch(memory::ALLOC_BYTES)
                }
                CONNECT_ROUTE => self.call_downstream(&cx, true),
                RETRY_ROUTE => super::retry_call::call_with_retries(
                    &self.tracer,
                    &cx,
                    (self.config.downstream_host, self.config.downstream_port).into(),
                    &mut self.downstream,
                    &self.retries,
                ),
                _ => self.call_downstream(&cx, false),
            };
            let status = match &outcome {
                Ok(()) => 200,
                Err(err) => {
                    cx.span().set_status(Status::error(format!("{err:#}")));
                    502
                }
            };
            cx.span().set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            let responded =
                request.respond(tiny_http::Response::from_string("done").with_status_code(status));
            cx.span().end();
            if record.is_some() {
                thread_context::detach();
            }
            if responded.is_ok() {
                self.served.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// `/lock`: a fifth of `/cpu`'s work, then a turn with the shared lock.
    fn lock_turn(&self) -> anyhow::Result<()> {
        workloads::busy(self.config.cpu_work / 5);
        self.lock.as_ref().context("no lock")?.take_turn()
    }

    /// `/disk`: [`DISK_READS`] blocks read from the data file with `O_DIRECT`.
    fn read_disk(&mut self) -> anyhow::Result<()> {
        if self.disk.is_none() {
            let path = self.config.disk_file.as_ref().context("no data file")?;
            self.disk = Some(DirectReader::open(path, DISK_BLOCK_BYTES)?);
        }
        self.disk
            .as_mut()
            .context("no data file")?
            .read_blocks(DISK_READS)
    }

    /// `/mapped`: pages of the data file read through a mapping, a fault each.
    fn read_mapped(&mut self) -> anyhow::Result<()> {
        if self.mapped.is_none() {
            let path = self.config.disk_file.as_ref().context("no data file")?;
            self.mapped = Some(MappedPages::open(path)?);
        }
        self.mapped.as_mut().context("no data file")?.read_request()
    }

    /// One request/response exchange with the downstream service, as a client span: over the
    /// worker's kept-alive connection, or (`fresh`) over one opened for it and closed after.
    fn call_downstream(&mut self, parent: &Context, fresh: bool) -> anyhow::Result<()> {
        if fresh {
            self.downstream = None;
        }
        let mut span = self
            .tracer
            .span_builder("downstream call")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("server.address", self.config.downstream_host.to_string()),
                KeyValue::new("server.port", i64::from(self.config.downstream_port)),
            ])
            .start_with_context(&self.tracer, parent);
        let result = self.exchange();
        if let Err(err) = &result {
            span.set_status(Status::error(format!("{err:#}")));
            // A broken connection is replaced on the next call.
            self.downstream = None;
        }
        if fresh {
            self.downstream = None;
        }
        span.end();
        result
    }

    fn exchange(&mut self) -> anyhow::Result<()> {
        if self.downstream.is_none() {
            let downstream = (self.config.downstream_host, self.config.downstream_port);
            let stream = TcpStream::connect(downstream)
                .with_context(|| format!("connecting to {}:{}", downstream.0, downstream.1))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            self.downstream = Some(stream);
        }
        let stream = self
            .downstream
            .as_mut()
            .context("no downstream connection")?;
        let mut message = [7u8; DOWNSTREAM_MESSAGE_BYTES];
        stream.write_all(&message)?;
        stream.read_exact(&mut message)?;
        Ok(())
    }
}
