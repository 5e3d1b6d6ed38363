//! What the agent costs, side by side with a baseline measured in the same run:
//! - the application: the lab service's throughput and latency under a fixed load, spans going
//!   to a plain collector (agent off) or through the agent (agent on), runs alternating;
//! - the node: the agent's CPU time and peak memory under a context-switch storm, without and
//!   with 10k spans/s, and what the storm itself loses;
//! - the pipeline: how long a span takes from its end to its export.

use std::{
    fmt::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    peers::{rotel_blackhole, rotel_forwarder, start_agent},
    pipeline::load,
    usage::{cpu_seconds, peak_rss_mib},
};
use crate::{
    faults::{
        cgroup::TempCgroup,
        placement::{self, HARNESS_CPU, SERVICE_CPU},
    },
    process::{
        binaries::bin_path,
        reaped::{Reaped, spawn_workload},
    },
    scenario::accuracy::quantile,
    service::{
        launch::service_command,
        load::{self as http_load, LoadShape},
        otel::{Sink, free_port, wait_for_port},
    },
};

/// Requests per second of the fixed application load.
const APP_RATE_PER_S: f64 = 100.0;
/// Off/on pairs of application runs; their latencies are pooled per mode, so that the p99 rests
/// on thousands of requests rather than one run's ten slowest.
const APP_PAIRS: usize = 4;

/// Context switches so far on the node (`ctxt` of /proc/stat).
fn node_context_switches() -> anyhow::Result<u64> {
    std::fs::read_to_string("/proc/stat")?
        .lines()
        .find_map(|l| l.strip_prefix("ctxt "))
        .context("no ctxt line in /proc/stat")?
        .trim()
        .parse()
        .context("ctxt")
}

struct AppRun {
    agent_on: bool,
    completed_per_s: f64,
    latencies_ms: Vec<f64>,
    failed: usize,
}

impl AppRun {
    fn p99_ms(&self) -> f64 {
        quantile(&self.latencies_ms, 0.99)
    }
}

fn app_run(agent_on: bool, seconds: f64, blackhole: &str) -> anyhow::Result<AppRun> {
    let cg = TempCgroup::new_v2("culprit-bench-app")?;
    let downstream_port = free_port()?;
    let _downstream = spawn_workload(
        &cg.child("downstream")?,
        Some(HARNESS_CPU),
        seconds + 60.0,
        &["tcp-server", "--port", &downstream_port.to_string()],
    )?;
    wait_for_port(downstream_port, Duration::from_secs(10))?;
    // Agent on: spans go through the agent to the blackhole. Off: straight to a plain
    // collector (rotel), so that the service exports the same way in both.
    let (_sink_process, sink_port) = if agent_on {
        start_agent(blackhole)?
    } else {
        rotel_forwarder(blackhole)?
    };
    let sink = format!("http://127.0.0.1:{sink_port}");
    let port = free_port()?;
    let mut cmd = service_command(
        &[cg.child("service")?],
        Some(SERVICE_CPU),
        &Default::default(),
        (port, downstream_port),
        &sink,
    )?;
    cmd.stdout(Stdio::null());
    let service = Reaped::spawn("lab service", &mut cmd)?;
    wait_for_port(port, Duration::from_secs(10))?;
    let base = format!("http://127.0.0.1:{port}");
    let never = std::sync::atomic::AtomicBool::new(false);
    // Warm-up: connections, the agent's first sight of the service.
    http_load::run(
        &base,
        LoadShape::Steady { rate_per_s: 50.0 },
        Duration::from_secs(2),
        8,
        http_load::DEFAULT_ROUTES,
        &never,
    );
    let samples = http_load::run(
        &base,
        LoadShape::Steady {
            rate_per_s: APP_RATE_PER_S,
        },
        Duration::from_secs_f64(seconds),
        8,
        http_load::DEFAULT_ROUTES,
        &never,
    );
    let _ = service.terminate();
    let ms: Vec<f64> = samples
        .iter()
        .filter(|s| s.ok)
        .map(|s| s.latency.as_secs_f64() * 1e3)
        .collect();
    Ok(AppRun {
        agent_on,
        completed_per_s: ms.len() as f64 / seconds,
        latencies_ms: ms,
        failed: samples.iter().filter(|s| !s.ok).count(),
    })
}

struct NodeCost {
    storm_cs_per_s_per_core_without: f64,
    storm_cs_per_s_per_core_with: f64,
    agent_cpu_kernel_only: f64,
    /// With the span load on top: CPU share and spans/s.
    with_spans: Option<(f64, f64)>,
    peak_rss_mib: f64,
}

fn cs_rate_per_core(window: Duration) -> anyhow::Result<f64> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let c0 = node_context_switches()?;
    let t0 = Instant::now();
    std::thread::sleep(window);
    Ok((node_context_switches()? - c0) as f64 / t0.elapsed().as_secs_f64() / cores)
}

/// Round trips per second per ping-pong pair that give the condition, 20k+ context
/// switches per second per core, on this 2-core machine (about 25k).
const PACED_ROUND_TRIPS_PER_S: u64 = 10_000;

/// The agent's cost while a ping-pong storm runs (`round_trips_per_s` per pair, 0: unpaced),
/// with kernel events only, then with 10k spans/s if `spans`.
fn node_cost(
    rt: &tokio::runtime::Runtime,
    seconds: f64,
    blackhole: &str,
    round_trips_per_s: u64,
    spans: bool,
) -> anyhow::Result<NodeCost> {
    let cg = TempCgroup::new_v2("culprit-bench-storm")?;
    let storm = cg.child("storm")?;
    let _storm = spawn_workload(
        &storm,
        None,
        seconds * 4.0 + 60.0,
        &[
            "pingpong",
            "--pairs",
            "2",
            "--round-trips-per-s",
            &round_trips_per_s.to_string(),
        ],
    )?;
    std::thread::sleep(Duration::from_secs(1)); // The storm settles.
    let window = Duration::from_secs_f64(seconds);
    let without = cs_rate_per_core(window)?;
    let (agent, port) = start_agent(blackhole)?;
    std::thread::sleep(Duration::from_secs(2)); // Probes attached, maps warm.
    let pid = agent.pid();
    let cpu0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    let with = cs_rate_per_core(window)?;
    let agent_cpu_kernel_only = (cpu_seconds(pid)? - cpu0) / t0.elapsed().as_secs_f64();
    let with_spans = if spans {
        let cpu1 = cpu_seconds(pid)?;
        let t1 = Instant::now();
        let spans = rt.block_on(load(port, window, 2, 100))?;
        let elapsed = t1.elapsed().as_secs_f64();
        Some(((cpu_seconds(pid)? - cpu1) / elapsed, spans as f64 / elapsed))
    } else {
        None
    };
    Ok(NodeCost {
        storm_cs_per_s_per_core_without: without,
        storm_cs_per_s_per_core_with: with,
        agent_cpu_kernel_only,
        with_spans,
        peak_rss_mib: peak_rss_mib(pid)?,
    })
}

/// From a span's end to its arrival at the backend, through the agent (which holds spans
/// `--hold-ms`, 300 ms by default, for their kernel events).
fn export_delay(rt: &tokio::runtime::Runtime, seconds: f64) -> anyhow::Result<(f64, f64, usize)> {
    let sink = Sink::start(free_port()?)?;
    let (grpc, http) = (free_port()?, free_port()?);
    let mut cmd = Command::new(bin_path("culprit")?);
    cmd.args(["agent", "--output", "json", "--interval", "5", "--no-api"])
        .arg("--otlp-grpc")
        .arg(format!("127.0.0.1:{grpc}"))
        .arg("--otlp-http")
        .arg(format!("127.0.0.1:{http}"))
        .args([
            "--export-protocol",
            "http/protobuf",
            "--export-endpoint",
            &sink.endpoint(),
        ])
        .stdout(Stdio::null());
    let _agent = Reaped::spawn("culprit agent", &mut cmd)?;
    wait_for_port(grpc, Duration::from_secs(30))?;
    // 10 requests of 100 spans per second; each span ends when its request is sent.
    rt.block_on(load(grpc, Duration::from_secs_f64(seconds), 1, 10))?;
    // The generator stamps each span's end with its send time.
    let got = sink.collect(Duration::from_secs(5), |_| false);
    anyhow::ensure!(!got.is_empty(), "nothing reached the backend");
    let delays: Vec<f64> = sink
        .arrivals()
        .iter()
        .map(|(arrived_ns, end_ns)| arrived_ns.saturating_sub(*end_ns) as f64 / 1e6)
        .collect();
    Ok((
        quantile(&delays, 0.5),
        quantile(&delays, 0.99),
        delays.len(),
    ))
}

fn median(v: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.collect();
    quantile(&v, 0.5)
}

pub fn run(seconds: f64, markdown: Option<&Path>) -> anyhow::Result<()> {
    placement::pin_to_cpu(HARNESS_CPU)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (_blackhole, blackhole) = rotel_blackhole()?;

    let mut runs = Vec::new();
    let app_seconds = seconds * 2.0;
    for i in 0..APP_PAIRS * 2 {
        let run = app_run(i % 2 == 1, app_seconds, &blackhole)?;
        eprintln!(
            "app run {} (agent {}): {:.1} req/s, p50 {:.2} ms, p99 {:.2} ms, {} failed",
            i + 1,
            if run.agent_on { "on" } else { "off" },
            run.completed_per_s,
            quantile(&run.latencies_ms, 0.5),
            run.p99_ms(),
            run.failed
        );
        runs.push(run);
    }
    let mode = |on: bool| runs.iter().filter(move |r| r.agent_on == on);
    let pooled = |on: bool| -> Vec<f64> {
        mode(on)
            .flat_map(|r| r.latencies_ms.iter().copied())
            .collect()
    };
    let (off_ms, on_ms) = (pooled(false), pooled(true));
    let (off_tput, on_tput) = (
        median(mode(false).map(|r| r.completed_per_s)),
        median(mode(true).map(|r| r.completed_per_s)),
    );
    let (off_p50, on_p50) = (quantile(&off_ms, 0.5), quantile(&on_ms, 0.5));
    let (off_p99, on_p99) = (quantile(&off_ms, 0.99), quantile(&on_ms, 0.99));
    let spread = |on: bool| {
        let p99s: Vec<f64> = mode(on).map(AppRun::p99_ms).collect();
        let lo = p99s.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = p99s.iter().copied().fold(0.0, f64::max);
        format!("{lo:.2}–{hi:.2}")
    };
    let paced = node_cost(&rt, seconds, &blackhole, PACED_ROUND_TRIPS_PER_S, true)?;
    let full = node_cost(&rt, seconds, &blackhole, 0, false)?;
    let (delay_p50, delay_p99, delayed) = export_delay(&rt, seconds)?;

    let mut s = String::new();
    let _ = writeln!(
        s,
        "Application: the lab service (2 workers on CPU {SERVICE_CPU}, 5 ms `/cpu`, a downstream call on `/downstream`) under {APP_RATE_PER_S:.0} req/s for {app_seconds:.0} s per run, {APP_PAIRS} runs each way, alternating; latencies pooled per mode ({} and {} requests), throughput the median run.\n",
        off_ms.len(),
        on_ms.len()
    );
    let _ = writeln!(
        s,
        "| | agent off (spans to rotel) | agent on (spans through the agent) | on / off |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| completed req/s | {off_tput:.1} | {on_tput:.1} | {:.3} |",
        on_tput / off_tput.max(1e-9)
    );
    let _ = writeln!(
        s,
        "| p50 latency ms | {off_p50:.2} | {on_p50:.2} | {:.3} |",
        on_p50 / off_p50.max(1e-9)
    );
    let _ = writeln!(
        s,
        "| p99 latency ms | {off_p99:.2} | {on_p99:.2} | {:.3} |",
        on_p99 / off_p99.max(1e-9)
    );
    let _ = writeln!(
        s,
        "| p99 of single runs, ms (the noise) | {} | {} | |",
        spread(false),
        spread(true)
    );
    let _ = writeln!(
        s,
        "\nNode: a pipe ping-pong storm (2 pairs) on both CPUs, {seconds:.0} s per phase; paced at {PACED_ROUND_TRIPS_PER_S} round trips/s per pair (the goals' condition), then unpaced (the worst case).\n"
    );
    let _ = writeln!(s, "| | paced storm | unpaced storm |");
    let _ = writeln!(s, "|---|---:|---:|");
    let _ = writeln!(
        s,
        "| context switches/s per core, agent off | {:.0} | {:.0} |",
        paced.storm_cs_per_s_per_core_without, full.storm_cs_per_s_per_core_without
    );
    let ratio =
        |n: &NodeCost| n.storm_cs_per_s_per_core_with / n.storm_cs_per_s_per_core_without.max(1.0);
    let _ = writeln!(
        s,
        "| context switches/s per core, agent on | {:.0} ({:.3} of off) | {:.0} ({:.3} of off) |",
        paced.storm_cs_per_s_per_core_with,
        ratio(&paced),
        full.storm_cs_per_s_per_core_with,
        ratio(&full)
    );
    let _ = writeln!(
        s,
        "| agent CPU, kernel events only (% of one core) | {:.2}% | {:.2}% |",
        paced.agent_cpu_kernel_only * 100.0,
        full.agent_cpu_kernel_only * 100.0
    );
    if let Some((cpu, spans_per_s)) = paced.with_spans {
        let _ = writeln!(
            s,
            "| agent CPU, plus {spans_per_s:.0} spans/s (% of one core) | {:.2}% | |",
            cpu * 100.0
        );
    }
    let _ = writeln!(
        s,
        "| agent peak RSS | {:.1} MiB | {:.1} MiB |",
        paced.peak_rss_mib, full.peak_rss_mib
    );
    let _ = writeln!(
        s,
        "\nPipeline: from a span's end to its arrival at the backend through the agent ({delayed} spans at 1000/s): p50 {delay_p50:.0} ms, p99 {delay_p99:.0} ms (the agent holds each span 300 ms for its kernel events)."
    );
    print!("{s}");
    if let Some(path) = markdown {
        std::fs::write(path, &s)?;
    }
    Ok(())
}
