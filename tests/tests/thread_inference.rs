//! Which thread served each request, without help from the SDK: services with a thread per
//! connection or a worker pool on one CPU, computing and waiting requests in parallel, no thread
//! attribute on any span. Each service records the true serving thread; the agent must name it
//! from the kernel's timeline, or say it cannot, never name another.

use std::time::Duration;

use culprit_lab::service::otel::{free_port, python_script_with, wait_for_port};
use culprit_tests::{
    require_root,
    serving::{Score, agent, load_then_stop, run_worker_pool, served_from},
};

/// CPU time a computing request burns (the app's default `--cpu-ms`).
const CPU_MS: f64 = 20.0;

/// A threaded Python service (a thread per connection, the batch span processor): three clients
/// computing (in C code that releases the interpreter lock, as hashlib does) and three
/// sleeping, in parallel, on one CPU.
#[test]
fn concurrent_requests_are_joined_with_their_own_threads() -> anyhow::Result<()> {
    require_root()?;
    let (agent, ports) = agent()?;
    let port = free_port()?;
    let record = std::env::temp_dir().join(format!("culprit-threads-{}.json", std::process::id()));
    let (port_str, record_str) = (port.to_string(), record.display().to_string());
    let endpoint = ports.http_traces_url();
    let app = python_script_with(
        "threaded_app.py",
        &[],
        &[
            "--port",
            &port_str,
            "--endpoint",
            &endpoint,
            "--record",
            &record_str,
            "--cpu-kind",
            "native",
        ],
        None,
        Some(1),
    )?;
    wait_for_port(port, Duration::from_secs(20))?;
    let lines = load_then_stop(port, 6, &[], app, agent)?;
    let served = served_from(&record)?;
    // A sleeping request is off-CPU; a computing one burned CPU_MS of its thread's CPU time
    // (measured by the app with `time.thread_time`), which the join must find on its thread,
    // waiting for the CPU the other two hold. (Pure-Python computing threads instead take turns
    // on the interpreter lock, which the kernel sees as blocked: a lock wait, for the off-CPU
    // explanation to name.)
    Score::of(&served, &lines, &["thread.inferred"], 60)?.assert_goals(95, |s, l| {
        match s.route.as_str() {
            "/sleep" => l.attribution.cause == "off_cpu",
            _ => {
                let on_ms = l.attribution.on_cpu_s * 1e3;
                ["on_cpu", "cpu.contention"].contains(&l.attribution.cause.as_str())
                    && (CPU_MS * 0.9..=CPU_MS * 1.3).contains(&on_ms)
            }
        }
    });
    Ok(())
}

/// The lab's Rust service (two worker threads sharing one CPU, the `opentelemetry-otlp` SDK's
/// batch processor, no thread attribute): computing and downstream-calling requests in parallel.
#[test]
fn the_rust_services_requests_are_joined_with_their_workers() -> anyhow::Result<()> {
    require_root()?;
    let run = run_worker_pool("culprit-test-threads-rust", &[])?;
    Score::of(&run.served, &run.lines, &["thread.inferred"], 60)?.assert_goals(95, |_, l| match l
        .name
        .as_str()
    {
        "GET /cpu" => ["on_cpu", "cpu.contention"].contains(&l.attribution.cause.as_str()),
        _ => l.attribution.cause != "unknown",
    });
    Ok(())
}
