//! `culprit agent`: load the probes, receive spans, drain kernel events, join, export, report on
//! an interval, and stop in order (receivers, held spans, export queue, probes).

use std::time::Duration;

use anyhow::Context as _;
use culprit_common::{ProbeConfig, maps, tcp::RetransmitRecord, thread::SchedRecord};
use tokio::sync::watch;

use crate::{
    cgroup_paths::{CgroupPaths, find_cgroup2_mount},
    cli::AgentOpts,
    clock::realtime_ns,
    collector::Collector,
    drops::DropCounters,
    export::{self, ExportQueue, queue::Item, sender::Sender},
    join::Joiner,
    live::{
        api,
        view::{AgentFacts, LiveView, Placement},
    },
    metrics::AgentMetrics,
    otlp::{self, Ingress, Payload},
    probes::{self, ProbeOptions},
    report::{self, OtlpCounts},
    ring_reader::RingReader,
    runqueue::RunqCollector,
    shutdown::stop_requested,
    thread_store::ThreadStore,
    watch::WatchSet,
};

/// How often the watch set is re-read (new threads, processes gone) and the clocks compared.
const WATCH_REFRESH: Duration = Duration::from_secs(1);
/// How often watched cgroups' `cpu.stat` is polled: the resolution of throttle episodes.
const THROTTLE_POLL: Duration = Duration::from_millis(100);
/// How often held spans are checked for release.
const RELEASE_POLL: Duration = Duration::from_millis(20);
/// The longest a span may be held, whatever `--hold-ms` says.
const MAX_HOLD: Duration = Duration::from_secs(2);
/// How long shutdown waits for OTLP clients to finish their requests.
const RECEIVER_DRAIN: Duration = Duration::from_secs(2);
/// How long shutdown waits for the export queue to drain.
const FLUSH_DEADLINE: Duration = Duration::from_secs(5);

pub fn run(opts: AgentOpts) -> anyhow::Result<()> {
    // Before the runtime starts its threads: they inherit the policy.
    crate::sched_policy::yield_to_applications();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(opts))
}

fn probe_config(opts: &AgentOpts) -> anyhow::Result<ProbeConfig> {
    let ms_to_ns = |ms: f64, what: &str| -> anyhow::Result<u64> {
        if !(ms > 0.0 && ms.is_finite()) {
            anyhow::bail!("--{what} must be a positive number of milliseconds");
        }
        Ok((ms * 1e6) as u64)
    };
    Ok(ProbeConfig {
        episode_threshold_ns: ms_to_ns(opts.episode_threshold_ms, "episode-threshold-ms")?,
        bucket_ns: ms_to_ns(opts.bucket_ms, "bucket-ms")?,
        node_summary: u32::from(!opts.no_node_summary),
        _reserved: 0,
    })
}

async fn run_async(opts: AgentOpts) -> anyhow::Result<()> {
    let config = probe_config(&opts)?;
    for warning in crate::capabilities::check_self().map_err(anyhow::Error::msg)? {
        log::warn!("{warning}");
    }
    let export_config = export::config::resolve(
        |k| std::env::var(k).ok(),
        opts.export_endpoint.as_deref(),
        opts.export_protocol.as_deref(),
    )?;
    let cgroup_root = match &opts.cgroup_root {
        Some(root) => root.clone(),
        None => find_cgroup2_mount()?,
    };
    let mut probes = probes::load(&ProbeOptions {
        btf: opts.btf.clone(),
        tracefs: opts.tracefs.clone(),
        config,
    })?;
    let attached = probes.hooks.iter().filter(|h| h.attached).count();
    log::info!(
        "probes attached: {attached}/{}; cgroup v2 root {}",
        probes.hooks.len(),
        cgroup_root.display()
    );
    let degraded = probes
        .signals
        .iter()
        .filter(|s| !s.ok)
        .map(|s| format!("{:?}: {}", s.signal, s.reason.as_deref().unwrap_or("")))
        .collect();
    let live = std::sync::Arc::new(std::sync::Mutex::new(LiveView::new(AgentFacts {
        version: env!("CARGO_PKG_VERSION").to_string(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        started_unix_ms: realtime_ns() / 1_000_000,
        probes: probes.hooks.clone(),
        signals: probes.signals.clone(),
    })));
    let ebpf = &mut probes.ebpf;
    let watch = WatchSet::new(
        ebpf,
        opts.watch_pids.clone(),
        opts.watch_cgroups.clone(),
        cgroup_root.clone(),
    )?;
    let mut collector = Collector::new(
        RunqCollector::new(ebpf)?,
        DropCounters::new(ebpf)?,
        CgroupPaths::new(cgroup_root),
        ThreadStore::new(
            opts.retention.as_nanos() as u64,
            opts.store_max_records,
            config.bucket_ns,
        ),
        watch,
        opts.cgroup_prefix.clone(),
        degraded,
    );
    let mut sched_events = RingReader::<SchedRecord>::new(ebpf, maps::SCHED_EVENTS)?;
    let mut tcp_events = RingReader::<RetransmitRecord>::new(ebpf, maps::TCP_EVENTS)?;

    // OTLP in.
    let (ingress, mut inbound) = Ingress::new(1024, opts.max_in_flight, opts.max_message_mib << 20);
    let (stop_receivers, receivers_stopped) = watch::channel(false);
    let mut receivers = Vec::new();
    if !opts.no_otlp {
        for serve in [
            ServeKind::Grpc(opts.otlp_grpc),
            ServeKind::Http(opts.otlp_http),
        ] {
            let mut stopped = receivers_stopped.clone();
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            let ingress = ingress.clone();
            receivers.push(tokio::spawn(async move {
                let result = match serve {
                    ServeKind::Grpc(addr) => otlp::grpc::serve(addr, ingress, shutdown).await,
                    ServeKind::Http(addr) => otlp::http::serve(addr, ingress, shutdown).await,
                };
                if let Err(err) = &result {
                    log::error!("{err:#}");
                }
                result
            }));
        }
    }
    // The local API: the tools read it; a failure to serve it costs only the API.
    if !opts.no_api {
        match api::bind_unix(&opts.api_socket) {
            Ok(listener) => {
                let mut stopped = receivers_stopped.clone();
                receivers.push(tokio::spawn(api::serve_unix(
                    opts.api_socket.clone(),
                    listener,
                    live.clone(),
                    async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    },
                )));
                log::info!("local API on {}", opts.api_socket.display());
            }
            Err(err) => log::warn!("no local API (culprit top/explain/status): {err:#}"),
        }
        if let Some(addr) = opts.api_listen {
            let mut stopped = receivers_stopped.clone();
            let view = live.clone();
            receivers.push(tokio::spawn(async move {
                let result = api::serve_tcp(addr, view, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
                if let Err(err) = &result {
                    log::warn!("{err:#}");
                }
                result
            }));
        }
    }
    // OTLP out.
    let export_queue = ExportQueue::new(opts.export_queue, 256 << 20);
    let exporting = export_config.is_some();
    if let Some(cfg) = export_config {
        log::info!("exporting to {} ({:?})", cfg.traces_endpoint, cfg.protocol);
        let sender = Sender::new(cfg, export_queue.clone())?;
        tokio::spawn(sender.run());
    } else {
        log::info!("no OTLP export endpoint: printing span decompositions");
    }
    let print_spans = !exporting || opts.print_spans;
    let slow_ns = (opts.slow_ms.max(0.0) * 1e6) as u64;
    let mut agent_metrics = AgentMetrics::new(realtime_ns());
    let mut joiner = Joiner::new(Duration::from_millis(opts.hold_ms).min(MAX_HOLD), MAX_HOLD)
        .with_node_name(opts.node_name.clone());

    let stop = stop_requested(opts.duration);
    tokio::pin!(stop);
    let mut report_tick = interval(opts.interval);
    let mut watch_tick = interval(WATCH_REFRESH);
    let mut throttle_tick = interval(THROTTLE_POLL);
    let mut release_tick = interval(RELEASE_POLL);
    // The first ticks fire at once; the reports are measured from here.
    report_tick.tick().await;
    watch_tick.tick().await;
    throttle_tick.tick().await;
    collector.start();

    let emit = |collector: &Collector,
                joiner: &mut Joiner,
                agent_metrics: &mut AgentMetrics,
                force: bool|
     -> anyhow::Result<()> {
        for released in joiner.release(collector, force) {
            let lines = &released.lines;
            lines.iter().for_each(|l| agent_metrics.on_span(l));
            live.lock().unwrap_or_else(|p| p.into_inner()).on_spans(
                lines,
                realtime_ns() / 1_000_000,
                placement_of,
            );
            if print_spans {
                for line in lines
                    .iter()
                    .filter(|l| l.duration_ms * 1e6 >= slow_ns as f64)
                {
                    report::print_span(line, opts.output).context("writing to stdout")?;
                }
            }
            if exporting {
                export_queue.push(Item::traces(released.encode(), released.spans));
            }
        }
        Ok(())
    };

    let reason = loop {
        tokio::select! {
            reason = &mut stop => break reason?,
            r = sched_events.readable() => {
                r?;
                sched_events.drain(|rec| collector.on_sched(rec));
            }
            r = tcp_events.readable() => {
                r?;
                tcp_events.drain(|rec| collector.on_retransmit(rec));
            }
            Some(msg) = inbound.recv() => match msg.payload {
                Payload::Traces(req) => joiner.accept(req, msg.origin, &mut collector),
                // Metrics and logs pass through untouched.
                other if exporting => export_queue.push(Item::new(&other)),
                _ => {}
            },
            _ = release_tick.tick() => {
                sched_events.drain(|rec| collector.on_sched(rec));
                tcp_events.drain(|rec| collector.on_retransmit(rec));
                emit(&collector, &mut joiner, &mut agent_metrics, false)?;
            }
            _ = watch_tick.tick() => {
                collector.refresh_watch();
                collector.refresh_endpoints();
                joiner.remeasure_clock();
            }
            _ = throttle_tick.tick() => collector.poll_throttling(),
            _ = report_tick.tick() => {
                // Whatever the kernel has streamed up to now belongs in this report.
                sched_events.drain(|rec| collector.on_sched(rec));
                tcp_events.drain(|rec| collector.on_retransmit(rec));
                let mut report = collector.report(opts.interval);
                let malformed = sched_events.malformed + tcp_events.malformed;
                report.drops.insert("ring_records_malformed".into(), malformed);
                report.otlp = OtlpCounts {
                    ingress: ingress.stats.snapshot(),
                    join: joiner.counts(),
                    export: export_queue.stats.snapshot(),
                    exporting,
                };
                report::print(&report, opts.output, opts.top)
                    .context("writing the report to stdout")?;
                agent_metrics.on_report(&report);
                live.lock().unwrap_or_else(|p| p.into_inner()).on_report(&report);
                if exporting {
                    let runq = collector.runq_cumulative();
                    let request = agent_metrics.export(&report, &runq, realtime_ns());
                    export_queue.push(Item::new(&Payload::Metrics(request)));
                }
            }
        }
    };
    log::info!("stopping ({reason:?}): closing receivers, releasing held spans, flushing exports");
    let _ = stop_receivers.send(true);
    // Graceful shutdown waits for clients to close their connections: not for ever.
    for r in receivers {
        let abort = r.abort_handle();
        if tokio::time::timeout(RECEIVER_DRAIN, r).await.is_err() {
            abort.abort();
        }
    }
    while let Ok(msg) = inbound.try_recv() {
        match msg.payload {
            Payload::Traces(req) => joiner.accept(req, msg.origin, &mut collector),
            other if exporting => export_queue.push(Item::new(&other)),
            _ => {}
        }
    }
    sched_events.drain(|rec| collector.on_sched(rec));
    emit(&collector, &mut joiner, &mut agent_metrics, true)?;
    if exporting {
        let deadline = tokio::time::Instant::now() + FLUSH_DEADLINE;
        while !export_queue.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = export_queue.len();
        if left > 0 {
            log::warn!("{left} export requests still queued at shutdown: dropped");
        }
    }
    log::info!("detaching probes");
    // Dropping the maps and `probes` detaches every program and frees the kernel objects.
    drop(sched_events);
    drop(tcp_events);
    drop(collector);
    drop(probes);
    Ok(())
}

/// A process's cgroup v2 path and the container id in it.
fn placement_of(pid: u32) -> Placement {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|text| {
            crate::procfs::parse_proc_cgroup(&text)
                .into_iter()
                .find(|m| m.hierarchy == 0)
                .map(|m| m.path)
        });
    Placement {
        container_id: cgroup
            .as_deref()
            .and_then(|c| crate::k8s_identity::parse(c).container_id),
        cgroup,
    }
}

enum ServeKind {
    Grpc(std::net::SocketAddr),
    Http(std::net::SocketAddr),
}

fn interval(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}
