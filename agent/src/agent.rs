//! `culprit agent`: load the probes, report on an interval, stop cleanly.

use anyhow::Context as _;

use crate::{
    cgroup_paths::{CgroupPaths, find_cgroup2_mount},
    cli::AgentOpts,
    drops::DropCounters,
    probes::{self, Signal},
    report::{self, Report},
    runqueue::RunqCollector,
    shutdown::stop_requested,
};

pub fn run(opts: AgentOpts) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(opts))
}

async fn run_async(opts: AgentOpts) -> anyhow::Result<()> {
    let cgroup_root = match &opts.cgroup_root {
        Some(root) => root.clone(),
        None => find_cgroup2_mount()?,
    };
    let mut probes = probes::load(&opts.btf)?;
    let attached = probes.hooks.iter().filter(|h| h.attached).count();
    log::info!(
        "probes attached: {attached}/{}; cgroup v2 root {}",
        probes.hooks.len(),
        cgroup_root.display()
    );
    let mut runq = RunqCollector::new(&mut probes.ebpf)?;
    let drops = DropCounters::new(&mut probes.ebpf)?;
    let mut paths = CgroupPaths::new(cgroup_root);
    let degraded: Vec<String> = probes
        .hooks
        .iter()
        .filter(|h| !h.attached)
        .map(|h| format!("{:?}: {} not attached", h.signal, h.program))
        .collect();
    if !probes.signal_ok(Signal::RunQueueDelay) {
        log::warn!("run-queue delay is degraded; its figures will be incomplete");
    }

    let stop = stop_requested(opts.duration);
    tokio::pin!(stop);
    let mut ticker = tokio::time::interval(opts.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick fires at once: it sets the baseline the first report is measured from.
    ticker.tick().await;
    let _ = runq.collect(&mut paths);
    let reason = loop {
        tokio::select! {
            reason = &mut stop => break reason?,
            _ = ticker.tick() => {
                let mut report = Report::new(opts.interval);
                report.cgroups = runq.collect(&mut paths);
                if let Some(prefix) = &opts.cgroup_prefix {
                    report.cgroups.retain(|c| c.cgroup.starts_with(prefix.as_str()));
                }
                report.drops = drops.read();
                report.degraded.clone_from(&degraded);
                report::print(&report, opts.output, opts.top)
                    .context("writing the report to stdout")?;
            }
        }
    };
    log::info!("stopping ({reason:?}); detaching probes");
    // Dropping `probes` detaches every program and frees the maps.
    drop(probes);
    Ok(())
}
