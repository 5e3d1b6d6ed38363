//! The OpenTelemetry thread context (OTEP 4947): services that publish each request's trace and
//! span id in the TLS variable `otel_thread_ctx_v1` have every interval of their threads tagged
//! with the span it was for, read by the kernel as the thread leaves a CPU or is sampled on one.
//! Each access model the spec requires is exercised: the lab's Rust service defines the variable
//! in its executable (local-exec), the Python app loads it from a shared library built with TLS
//! descriptors or the legacy general-dynamic dialect (`dlopen`: dynamic TLS). The async service
//! interleaves requests on one thread, where no other join can tell whose time is whose.

use std::time::Duration;

use culprit::model::SpanLine;
use culprit_lab::{
    faults::cgroup::TempCgroup,
    service::{
        otel::{free_port, python_script_with, wait_for_port},
        thread_context::{Dialect, shared_library},
    },
};
use culprit_tests::{
    require_root,
    serving::{
        Score, Served, agent, load_then_stop, run_lab_service, run_worker_pool, served_from,
    },
};

const CPU_MS: f64 = 20.0;

fn record_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("culprit-ctx-{tag}-{}.json", std::process::id()))
}

/// A computing request is on a CPU or waiting for one; a sleeping one is off CPU.
fn route_cause_right(route: &str, l: &SpanLine) -> bool {
    if route.ends_with("/sleep") {
        l.attribution.cause == "off_cpu"
    } else {
        ["on_cpu", "cpu.contention"].contains(&l.attribution.cause.as_str())
    }
}

/// The threaded Python app, its contexts published through the writer built in `dialect`:
/// `cpu` and `sleep` clients in parallel on one CPU for `seconds`.
fn python_app_publishing(
    dialect: Dialect,
    seconds: u32,
    cpu: &str,
    sleep: &str,
) -> anyhow::Result<()> {
    require_root()?;
    let (agent, ports) = agent()?;
    let port = free_port()?;
    let record = record_path(&format!("{dialect:?}"));
    let library = shared_library(dialect);
    anyhow::ensure!(library.exists(), "{} not built", library.display());
    let app = python_script_with(
        "threaded_app.py",
        &[],
        &[
            "--port",
            &port.to_string(),
            "--endpoint",
            &ports.http_traces_url(),
            "--record",
            &record.display().to_string(),
            "--cpu-kind",
            "native",
            "--thread-context",
            &library.display().to_string(),
        ],
        None,
        Some(1),
    )?;
    wait_for_port(port, Duration::from_secs(20))?;
    let lines = load_then_stop(
        port,
        seconds,
        &["--cpu-clients", cpu, "--sleep-clients", sleep],
        app,
        agent,
    )?;
    let served = served_from(&record)?;
    Score::of(&served, &lines, &["context"], 40)?.assert_goals(99, |s, l| {
        route_cause_right(&s.route, l)
            && (s.route != "/cpu"
                || (CPU_MS * 0.9..=CPU_MS * 1.3).contains(&(l.attribution.on_cpu_s * 1e3)))
    });
    Ok(())
}

/// TLS descriptors (`-mtls-dialect=gnu2`), the spec's recommended model.
#[test]
fn a_thread_pools_requests_are_joined_by_their_published_context() -> anyhow::Result<()> {
    python_app_publishing(Dialect::Tlsdesc, 6, "3", "3")
}

/// Legacy general dynamic (`__tls_get_addr`), which readers must support too.
#[test]
fn contexts_published_by_a_general_dynamic_library_are_read() -> anyhow::Result<()> {
    python_app_publishing(Dialect::GeneralDynamic, 4, "2", "2")
}

/// The lab's Rust worker pool, the variable in its executable (local-exec): computing and
/// downstream-calling requests in parallel, no thread attribute.
#[test]
fn contexts_published_by_an_executable_are_read() -> anyhow::Result<()> {
    require_root()?;
    let run = run_worker_pool("culprit-test-ctx-rust", &["--thread-context"])?;
    let (served, lines) = (run.served, run.lines);
    Score::of(&served, &lines, &["context"], 60)?.assert_goals(99, |_, l| match l.name.as_str() {
        "GET /cpu" => route_cause_right("/cpu", l),
        _ => l.attribution.cause != "unknown",
    });
    Ok(())
}

/// One thread interleaves a computing request with sleeping ones: each sleeping request's
/// window is full of the computing one's time on its very thread, and only the context says
/// whose it is. Each must get its own CPU time (the service measures what its polls took) to
/// within a few sampling periods, and nothing of the others'.
#[test]
fn an_async_runtimes_requests_each_get_only_their_own_time() -> anyhow::Result<()> {
    require_root()?;
    let cg = TempCgroup::new_v2("culprit-test-ctx-async")?;
    let port = free_port()?;
    let (port_arg, cpu_ms) = (port.to_string(), CPU_MS.to_string());
    let run = run_lab_service(
        &cg,
        port,
        &[
            "async-service",
            "--port",
            &port_arg,
            "--cpu-work-ms",
            &cpu_ms,
            "--sleep-ms",
            "50",
        ],
        6,
        &["--cpu-clients", "1", "--sleep-clients", "3"],
    )?;
    let (served, lines) = (run.served, run.lines);
    let own_time_right = |s: &Served, l: &SpanLine| {
        let agent_ms = l.attribution.on_cpu_s * 1e3;
        let truth_ms = s.cpu_ns.unwrap_or_default() as f64 / 1e6;
        // Two sampling periods of slack (1 ms each): where a change of request fell.
        (agent_ms - truth_ms).abs() <= 2.0 + truth_ms * 0.1
    };
    // A sleeping request runs for microseconds: no read may ever see its context, and it is
    // joined with the thread inferred from kernel facts, less what the context tags as other
    // requests' time.
    let score = Score::of(&served, &lines, &["context", "thread.inferred"], 60)?;
    let computing: Vec<_> = score
        .scored
        .iter()
        .filter(|(s, _)| s.route.ends_with("/cpu"))
        .collect();
    let by_span_id = computing
        .iter()
        .filter(|(s, l)| l.attribution.join == "context" && l.tid == Some(s.tid))
        .count();
    eprintln!(
        "{by_span_id} of {} computing requests joined by span id",
        computing.len()
    );
    assert!(by_span_id * 100 >= computing.len() * 99);
    let far: Vec<(f64, f64)> = score
        .scored
        .iter()
        .filter(|(s, l)| !own_time_right(s, l))
        .map(|(s, l)| {
            (
                s.cpu_ns.unwrap_or_default() as f64 / 1e6,
                l.attribution.on_cpu_s * 1e3,
            )
        })
        .take(10)
        .collect();
    eprintln!("own CPU time off (truth ms, agent ms): {far:?}");
    score.assert_goals(99, |s, l| {
        route_cause_right(&s.route, l) && own_time_right(s, l)
    });
    Ok(())
}
