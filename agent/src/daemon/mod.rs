//! `culprit agent`: the event loop that wires the stages together. Kernel records go to the
//! signals; received spans go to the join, whose new senders the signals start watching; released
//! spans go to the live view, stdout and the export queue; every interval a report. Shutdown runs
//! in order: receivers, held spans, export queue, probes.

mod budget;
mod shutdown;
mod start;

pub(crate) use start::probe_config;
mod supervise;

use std::time::Duration;

use anyhow::Context as _;
use culprit_common::{
    maps,
    oom::OomRecord,
    tcp::{QueueRecord, RetransmitRecord},
    thread::SchedRecord,
};

use self::{
    shutdown::stop_requested,
    supervise::{Stage, Supervisor},
};
use crate::{
    cli::AgentOpts,
    export::{self, ExportQueue, queue::Item},
    host::{clock::realtime_ns, k8s, membership, memory_limit},
    join::Joiner,
    kernel::{connections::ConnectionOwners, ring_reader::RingReader},
    live::{
        api,
        view::Placement,
        vitals::{Heartbeat, Vitals},
    },
    otlp::{Inbound, Ingress, Payload},
    report::{self, OtlpCounts, Report, metrics::AgentMetrics},
    signals::Signals,
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
/// Times the threads' states are re-read for one report while records keep arriving.
const LIVE_READ_TRIES: usize = 3;
/// How long the exporter may take to finish its current request once the queue is drained.
const EXPORTER_STOP: Duration = Duration::from_secs(1);

pub(crate) fn run(opts: AgentOpts) -> anyhow::Result<()> {
    // Before the runtime starts its threads: they inherit the policy.
    crate::host::sched_policy::yield_to_applications();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(opts))
}

/// Where released spans go.
struct Outputs<'a> {
    opts: &'a AgentOpts,
    live: api::Shared,
    export_queue: ExportQueue,
    exporting: bool,
    print_spans: bool,
    slow_ns: u64,
    metrics: AgentMetrics,
    /// The text `/metrics` serves, when `--prometheus-listen` asked for it.
    exposition: Option<report::prometheus::Exposition>,
}

impl Outputs<'_> {
    /// Releases the held spans whose time has come (all with `force`) to every output.
    fn emit(&mut self, signals: &Signals, joiner: &mut Joiner, force: bool) -> anyhow::Result<()> {
        for released in joiner.release(signals, force) {
            let lines = &released.lines;
            lines.iter().for_each(|l| self.metrics.on_span(l));
            self.live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .on_spans(lines, realtime_ns() / 1_000_000, placement_of);
            if self.print_spans {
                for line in lines
                    .iter()
                    .filter(|l| l.duration_ms * 1e6 >= self.slow_ns as f64)
                {
                    report::print_span(line, self.opts.output).context("writing to stdout")?;
                }
            }
            if self.exporting {
                self.export_queue
                    .push(Item::traces(released.encode(), released.spans));
            }
        }
        Ok(())
    }

    fn report(&mut self, report: &Report, signals: &mut Signals) -> anyhow::Result<()> {
        report::print(report, self.opts.output, self.opts.top)
            .context("writing the report to stdout")?;
        self.metrics.on_report(report);
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .on_report(report);
        if self.exporting || self.exposition.is_some() {
            let runq = signals.runq_cumulative();
            let request = self.metrics.export(report, &runq, realtime_ns());
            if let Some(text) = &self.exposition {
                let fresh = report::prometheus::exposition(&request);
                *text.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
            }
            if self.exporting {
                self.export_queue
                    .push(Item::new(&Payload::Metrics(request)));
            }
        }
        if self.exporting && !report.oom_kills.is_empty() {
            // The report's clocks, read together: a kill's monotonic time on the wall.
            let offset_ns = (report.unix_time_ms * 1_000_000).saturating_sub(report.mono_ns);
            let logs = report::oom_logs::request(
                &report.oom_kills,
                report::metrics::agent_resource(),
                |mono_ns| mono_ns + offset_ns,
            );
            self.export_queue.push(Item::new(&Payload::Logs(logs)));
        }
        Ok(())
    }
}

/// A received message to its stage: traces to the join (whose new senders get watched),
/// metrics and logs straight to export.
fn route(msg: Inbound, joiner: &mut Joiner, signals: &mut Signals, outputs: &Outputs<'_>) {
    match msg.payload {
        Payload::Traces(req) => {
            for pid in joiner.accept(req, msg.origin, msg.budget) {
                signals.watch_pid(pid);
            }
        }
        // Metrics and logs pass through untouched.
        other if outputs.exporting => outputs.export_queue.push(Item::new(&other)),
        _ => {}
    }
}

async fn run_async(opts: AgentOpts) -> anyhow::Result<()> {
    let config = start::probe_config(&opts)?;
    // Refused before anything starts.
    opts.api_tcp_address()?;
    let receiver_security = crate::otlp::receiver_security::ReceiverSecurity::from_files(
        opts.receiver_security_files(),
    )
    .context("the OTLP receivers' TLS or token")?;
    for warning in crate::host::capabilities::check_self().map_err(anyhow::Error::msg)? {
        log::warn!("{warning}");
    }
    let mut export_config = export::config::resolve(
        |k| std::env::var(k).ok(),
        opts.export_endpoint.as_deref(),
        opts.export_protocol.as_deref(),
    )?;
    if let Some(c) = &mut export_config {
        c.max_elapsed = opts.export_max_elapsed;
    }
    let cgroup_root = start::cgroup_root(&opts)?;
    let limit_bytes = opts
        .memory_limit_mib
        .map(|m| m << 20)
        .or_else(|| memory_limit::own_limit_bytes(&cgroup_root));
    let budgets = budget::budgets(limit_bytes, opts.max_decoded_mib << 20)?;
    log::info!(
        "memory: limit {}, export queue up to {} MiB, decoded requests up to {} MiB",
        limit_bytes.map_or("none".to_string(), |l| format!("{} MiB", l >> 20)),
        budgets.export_queue_bytes >> 20,
        budgets.decoded_bytes >> 20
    );
    let mut probes = start::load_probes(&opts, config, &cgroup_root)?;
    let live = start::live_view(&probes);
    let mut signals = start::signals(&opts, config, cgroup_root, &mut probes)?;
    let mut sched_events = RingReader::<SchedRecord>::new(&mut probes.ebpf, maps::SCHED_EVENTS)?;
    let mut tcp_events = RingReader::<RetransmitRecord>::new(&mut probes.ebpf, maps::TCP_EVENTS)?;
    let mut queue_events = RingReader::<QueueRecord>::new(&mut probes.ebpf, maps::QUEUE_EVENTS)?;
    let mut oom_events = RingReader::<OomRecord>::new(&mut probes.ebpf, maps::OOM_EVENTS)?;

    let mut tasks = Supervisor::new();
    // OTLP in, and the local API.
    let (ingress, mut inbound) = Ingress::new(1024, opts.max_in_flight, opts.max_message_mib << 20);
    let ingress = ingress
        .with_work_limits(opts.max_items_per_request, budgets.decoded_bytes)
        .with_security(receiver_security);
    start::receivers(&opts, &ingress, &mut tasks);
    start::local_api(&opts, &live, &mut tasks);
    // OTLP out.
    let export_queue = ExportQueue::new(opts.export_queue, budgets.export_queue_bytes);
    let exporting = export_config.is_some();
    let heartbeat = Heartbeat::default();
    live.lock()
        .unwrap_or_else(|p| p.into_inner())
        .set_vitals(Vitals {
            heartbeat: heartbeat.clone(),
            ingress: ingress.stats.clone(),
            export: exporting.then(|| export_queue.stats.clone()),
        });
    match export_config {
        Some(cfg) => start::exporter(cfg, &export_queue, &mut tasks)?,
        None => log::info!("no OTLP export endpoint: printing span decompositions"),
    }
    let mut outputs = Outputs {
        opts: &opts,
        live: live.clone(),
        export_queue: export_queue.clone(),
        exporting,
        print_spans: !exporting || opts.print_spans,
        slow_ns: (opts.slow_ms.max(0.0) * 1e6) as u64,
        metrics: AgentMetrics::new(realtime_ns()),
        exposition: start::prometheus(&opts, &mut tasks),
    };
    let mut joiner = Joiner::new(Duration::from_millis(opts.hold_ms).min(MAX_HOLD), MAX_HOLD)
        .with_node_name(opts.node_name.clone());
    // Without the map the senders are identified through /proc and their claims.
    match ConnectionOwners::new(&mut probes.ebpf) {
        Ok(owners) => joiner = joiner.with_connection_openers(Box::new(owners)),
        Err(err) => log::warn!("senders are not verified by the kernel: {err:#}"),
    }

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
    signals.start();

    let reason = loop {
        tokio::select! {
            reason = &mut stop => break reason?,
            ended = tasks.next_ended() => {
                live.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .on_task_ended(ended.task, &ended.error);
            }
            r = sched_events.readable() => {
                r?;
                sched_events.drain(|rec| signals.on_sched(rec));
            }
            r = tcp_events.readable() => {
                r?;
                tcp_events.drain(|rec| signals.on_retransmit(rec));
            }
            r = queue_events.readable() => {
                r?;
                queue_events.drain(|rec| signals.on_queue_read(rec));
            }
            r = oom_events.readable() => {
                r?;
                oom_events.drain(|rec| signals.on_oom(rec));
            }
            Some(msg) = inbound.recv() => route(msg, &mut joiner, &mut signals, &outputs),
            _ = release_tick.tick() => {
                heartbeat.beat(realtime_ns() / 1_000_000);
                sched_events.drain(|rec| signals.on_sched(rec));
                tcp_events.drain(|rec| signals.on_retransmit(rec));
                queue_events.drain(|rec| signals.on_queue_read(rec));
                outputs.emit(&signals, &mut joiner, false)?;
            }
            _ = watch_tick.tick() => {
                signals.refresh_watch();
                signals.refresh_endpoints();
                joiner.remeasure_clock();
            }
            _ = throttle_tick.tick() => signals.poll_throttling(),
            _ = report_tick.tick() => {
                // Whatever the kernel has streamed up to now belongs in this report.
                tcp_events.drain(|rec| signals.on_retransmit(rec));
                sched_events.drain(|rec| signals.on_sched(rec));
                // A thread's current state and the records of its closed intervals are read
                // apart: an interval that closes in between would be in neither. Read the
                // states again until no record came in meanwhile (a few tries on a busy node,
                // then as before: nothing is counted twice, an interval may be late).
                let mut live = signals.live_snapshot();
                for _ in 0..LIVE_READ_TRIES {
                    if sched_events.drain(|rec| signals.on_sched(rec)) == 0 {
                        break;
                    }
                    live = signals.live_snapshot();
                }
                let interval = signals.interval(&live);
                let otlp = OtlpCounts {
                    ingress: ingress.stats.snapshot(),
                    join: joiner.counts(),
                    export: export_queue.stats.snapshot(),
                    exporting,
                };
                let mut report = Report::of(opts.interval, interval, otlp);
                oom_events.drain(|rec| signals.on_oom(rec));
                let malformed = sched_events.malformed
                    + tcp_events.malformed
                    + queue_events.malformed
                    + oom_events.malformed;
                report.drops.insert("ring_records_malformed".into(), malformed);
                let (dropped, rejected) = signals.queue_read_losses();
                report.drops.insert("queue_reads_dropped".into(), dropped);
                report.drops.insert("queue_reads_rejected".into(), rejected);
                outputs.report(&report, &mut signals)?;
            }
        }
    };
    log::info!("stopping ({reason:?}): closing receivers, releasing held spans, flushing exports");
    // Graceful shutdown waits for clients to close their connections: not for ever.
    tasks.stop(Stage::Inbound, RECEIVER_DRAIN).await;
    while let Ok(msg) = inbound.try_recv() {
        route(msg, &mut joiner, &mut signals, &outputs);
    }
    sched_events.drain(|rec| signals.on_sched(rec));
    queue_events.drain(|rec| signals.on_queue_read(rec));
    outputs.emit(&signals, &mut joiner, true)?;
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
    tasks.stop(Stage::Outbound, EXPORTER_STOP).await;
    log::info!("detaching probes");
    // Dropping the maps and `probes` detaches every program and frees the kernel objects.
    drop(sched_events);
    drop(tcp_events);
    drop(queue_events);
    drop(oom_events);
    drop(signals);
    drop(probes);
    Ok(())
}

/// A process's cgroup v2 path and the container id in it.
fn placement_of(pid: u32) -> Placement {
    let cgroup = membership::v2_path_of(pid);
    Placement {
        container_id: cgroup.as_deref().and_then(|c| k8s::parse(c).container_id),
        cgroup,
    }
}

fn interval(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}
