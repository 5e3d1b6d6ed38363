//! `culprit agent`: load the probes, drain their events, report on an interval, stop cleanly.

use std::time::Duration;

use anyhow::Context as _;
use culprit_common::{ProbeConfig, maps, tcp::RetransmitRecord, thread::SchedRecord};

use crate::{
    cgroup_paths::{CgroupPaths, find_cgroup2_mount},
    cli::AgentOpts,
    collector::Collector,
    drops::DropCounters,
    probes::{self, ProbeOptions},
    report,
    ring_reader::RingReader,
    runqueue::RunqCollector,
    shutdown::stop_requested,
    thread_store::ThreadStore,
    watch::WatchSet,
};

/// How often the watch set is re-read (new threads, processes gone).
const WATCH_REFRESH: Duration = Duration::from_secs(1);
/// How often watched cgroups' `cpu.stat` is polled: the resolution of throttle episodes.
const THROTTLE_POLL: Duration = Duration::from_millis(100);

pub fn run(opts: AgentOpts) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
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
    let ebpf = &mut probes.ebpf;
    let watch = WatchSet::new(
        ebpf,
        opts.watch_pids.clone(),
        opts.watch_cgroups.clone(),
        cgroup_root.clone(),
    )?;
    if watch.is_empty() {
        log::info!("no --watch-pid/--watch-cgroup: node-wide per-cgroup summaries only");
    }
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

    let stop = stop_requested(opts.duration);
    tokio::pin!(stop);
    let mut report_tick = interval(opts.interval);
    let mut watch_tick = interval(WATCH_REFRESH);
    let mut throttle_tick = interval(THROTTLE_POLL);
    // The first ticks fire at once; the reports are measured from here.
    report_tick.tick().await;
    watch_tick.tick().await;
    throttle_tick.tick().await;
    collector.start();
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
            _ = watch_tick.tick() => collector.refresh_watch(),
            _ = throttle_tick.tick() => collector.poll_throttling(),
            _ = report_tick.tick() => {
                // Whatever the kernel has streamed up to now belongs in this report.
                sched_events.drain(|rec| collector.on_sched(rec));
                tcp_events.drain(|rec| collector.on_retransmit(rec));
                let mut report = collector.report(opts.interval);
                let malformed = sched_events.malformed + tcp_events.malformed;
                report.drops.insert("ring_records_malformed".into(), malformed);
                report::print(&report, opts.output, opts.top)
                    .context("writing the report to stdout")?;
            }
        }
    };
    log::info!("stopping ({reason:?}); detaching probes");
    // Dropping the maps and `probes` detaches every program and frees the kernel objects.
    drop(sched_events);
    drop(tcp_events);
    drop(collector);
    drop(probes);
    Ok(())
}

fn interval(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}
