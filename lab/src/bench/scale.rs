//! The agent at scale: many span senders of many threads, each in its own cgroup, a paced
//! switch storm from processes in many more cgroups, and a steady span rate, next to the same
//! storm and span rate from a single sender. Per case: the agent's CPU, its peak resident
//! memory, the spans it joined, and what it lost in the kernel or evicted from its store.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use anyhow::Context as _;

use super::{
    peers::rotel_blackhole,
    usage::{cpu_seconds, peak_rss_mib},
};
use crate::{
    faults::cgroup::TempCgroup,
    process::reaped::{Reaped, spawn_workload},
    run::agent::RunningAgent,
    service::otel::{free_port, wait_for_port},
};

/// The load of a run.
#[derive(Debug, Clone, clap::Args)]
pub struct Scale {
    #[arg(long, default_value_t = 200)]
    pub senders: usize,
    /// Threads per sender.
    #[arg(long, default_value_t = 50)]
    pub threads: usize,
    /// Cgroups in all: one per sender, the rest each holding one storm process.
    #[arg(long, default_value_t = 1000)]
    pub cgroups: usize,
    /// Spans per second over all senders.
    #[arg(long, default_value_t = 10000.0)]
    pub spans_per_s: f64,
    /// Context switches per second per CPU the storm processes add.
    #[arg(long, default_value_t = 20000.0)]
    pub switches_per_s_per_cpu: f64,
    /// Measured seconds per case (after the warm-up).
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Write the results as Markdown here too.
    #[arg(long)]
    pub markdown: Option<std::path::PathBuf>,
}

/// Work each storm process does per wakeup.
const STORM_WORK_US: u64 = 20;
/// Seconds the agent runs before the measured ones: the senders found, their threads watched.
const WARM_UP_SECONDS: u64 = 10;

struct Measured {
    senders: usize,
    /// Reports the agent printed in the measured window (one a second when it keeps up).
    reports: usize,
    threads_reported: usize,
    /// `None`: the agent did not answer `culprit status`.
    spans_joined_per_s: Option<f64>,
    cpu_share: f64,
    peak_rss_mib: f64,
    losses: BTreeMap<String, u64>,
    lag_ms: Option<u64>,
    /// The node's CPUs' idle share over the window.
    idle_share: f64,
}

pub fn run(scale: &Scale) -> anyhow::Result<()> {
    let (_blackhole, downstream) = rotel_blackhole()?;
    let root = TempCgroup::new_v2("culprit-scale")?;
    let one = measure(&root, "one", 1, scale, &downstream)?;
    let many = measure(&root, "many", scale.senders, scale, &downstream)?;
    let text = render(scale, &[one, many]);
    print!("{text}");
    if let Some(path) = &scale.markdown {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn measure(
    root: &TempCgroup,
    case: &str,
    senders: usize,
    scale: &Scale,
    downstream: &str,
) -> anyhow::Result<Measured> {
    let (grpc, http) = (free_port()?, free_port()?);
    let (grpc_addr, http_addr) = (format!("127.0.0.1:{grpc}"), format!("127.0.0.1:{http}"));
    let agent = RunningAgent::start(
        Duration::from_secs(1),
        &[
            "--otlp-grpc",
            &grpc_addr,
            "--otlp-http",
            &http_addr,
            "--export-protocol",
            "grpc",
            "--export-endpoint",
            downstream,
        ],
    )?;
    wait_for_port(grpc, Duration::from_secs(60))?;
    let lifetime_s = scale.seconds + WARM_UP_SECONDS as f64 + 30.0;
    let mut processes: Vec<Reaped> = Vec::new();

    // The storm: one process per remaining cgroup, paced so that together they add the
    // asked-for switches per CPU (a wakeup is two switches: in and out).
    let storm = scale.cgroups.saturating_sub(senders).max(1);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let wakeups_per_s = scale.switches_per_s_per_cpu * cpus / 2.0;
    let period_us = (1e6 * storm as f64 / wakeups_per_s.max(1.0)).max(100.0) as u64;
    let (period, work) = (period_us.to_string(), STORM_WORK_US.to_string());
    for i in 0..storm {
        let cg = root.child(&format!("{case}-storm-{i}"))?;
        processes.push(spawn_workload(
            &cg,
            None,
            lifetime_s,
            &["wakeups", "--period-us", &period, "--work-us", &work],
        )?);
    }
    let endpoint = format!("http://{grpc_addr}");
    let (threads, per_sender) = (
        scale.threads.to_string(),
        (scale.spans_per_s / senders.max(1) as f64).to_string(),
    );
    for i in 0..senders {
        let cg = root.child(&format!("{case}-sender-{i}"))?;
        let service = format!("scale-{i}");
        processes.push(spawn_workload(
            &cg,
            None,
            lifetime_s,
            &[
                "span-sender",
                "--threads",
                &threads,
                "--spans-per-s",
                &per_sender,
                "--endpoint",
                &endpoint,
                "--service",
                &service,
            ],
        )?);
    }

    // Wall-clock windows, not reports: an agent that falls behind at scale reports late or
    // not at all, and that is a result too.
    std::thread::sleep(Duration::from_secs(WARM_UP_SECONDS));
    agent.take_reports();
    let pid = agent.pid();
    let (cpu0, health0) = (cpu_seconds(pid)?, agent.status(&[]).ok().map(|h| h.1));
    let idle0 = idle_ticks()?;
    let started = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs_f64(scale.seconds));
    let (cpu1, health1) = (cpu_seconds(pid)?, agent.status(&[]).ok().map(|h| h.1));
    let wall_s = started.elapsed().as_secs_f64();
    let idle_share = (idle_ticks()? - idle0) as f64
        / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
        / (wall_s * cpus);
    let peak_rss_mib = peak_rss_mib(pid)?;
    let reports = agent.take_reports();
    drop(processes);
    agent.stop()?;

    let (joined, losses, lag_ms) = match (&health0, &health1) {
        (Some(h0), Some(h1)) => (
            Some(h1.otlp.join.spans_joined - h0.otlp.join.spans_joined),
            h1.events_lost
                .iter()
                .map(|(k, v)| {
                    let before = h0.events_lost.get(k).copied().unwrap_or(0);
                    (k.clone(), v.saturating_sub(before))
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
            Some(h1.event_loop_lag_ms),
        ),
        _ => (None, BTreeMap::new(), None),
    };
    Ok(Measured {
        senders,
        reports: reports.len(),
        threads_reported: reports.last().map_or(0, |r| r.threads.len()),
        spans_joined_per_s: joined.map(|n| n as f64 / wall_s),
        cpu_share: (cpu1 - cpu0) / wall_s,
        peak_rss_mib,
        losses,
        lag_ms,
        idle_share,
    })
}

/// The node's idle ticks so far (all CPUs, `/proc/stat`): whether the load left the agent a
/// CPU to run on.
fn idle_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().context("/proc/stat is empty")?;
    cpu.split_whitespace()
        .nth(4)
        .context("no idle column in /proc/stat")?
        .parse()
        .context("idle ticks")
}

fn render(scale: &Scale, cases: &[Measured]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} cgroups in all (one per sender, one storm process in each of the others, together \
         {:.0} switches/s per CPU), {:.0} spans/s over all senders ({} threads each, spans \
         naming no thread and no process), {:.0} s measured per case after {WARM_UP_SECONDS} s.\n",
        scale.cgroups,
        scale.switches_per_s_per_cpu,
        scale.spans_per_s,
        scale.threads,
        scale.seconds
    );
    let _ = writeln!(
        s,
        "| senders | reports in {:.0} s | watched threads with activity (last report) | spans joined/s | agent CPU (share of a core) | CPU per span joined | event-loop lag | agent peak RSS | node idle | kernel losses and store evictions |",
        scale.seconds
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let unanswered = || "no answer".to_string();
    for m in cases {
        let losses = if m.losses.is_empty() {
            "none".to_string()
        } else {
            m.losses
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1}% | {} | {} | {:.1} MiB | {:.0}% | {losses} |",
            m.senders,
            m.reports,
            m.threads_reported,
            m.spans_joined_per_s
                .map_or_else(unanswered, |n| format!("{n:.0}")),
            m.cpu_share * 100.0,
            m.spans_joined_per_s
                .filter(|n| *n > 0.0)
                .map_or_else(unanswered, |n| format!("{:.1} us", m.cpu_share / n * 1e6)),
            m.lag_ms.map_or_else(unanswered, |ms| format!("{ms} ms")),
            m.peak_rss_mib,
            m.idle_share * 100.0,
        );
    }
    if let [one, many] = cases
        && one.cpu_share > 0.0
    {
        let _ = writeln!(
            s,
            "\n{} senders / 1 sender, agent CPU: {:.2}x; peak RSS: {:.2}x.",
            many.senders,
            many.cpu_share / one.cpu_share,
            many.peak_rss_mib / one.peak_rss_mib.max(1e-9),
        );
    }
    s
}
