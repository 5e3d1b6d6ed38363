//! Which thread served each request, without help from the SDK: a threaded Python service (a
//! thread per client connection, the batch span processor, no thread attribute) on one CPU, with
//! computing and sleeping requests in parallel. The app records the true serving thread; the
//! agent must name it from the kernel's timeline, or say it cannot, never name another.

use std::{collections::BTreeMap, time::Duration};

use culprit::model::SpanLine;
use culprit_lab::{
    run::agent::RunningAgent,
    service::otel::{AgentPorts, free_port, python_script_with, wait_for_port, wait_success},
};
use culprit_tests::require_root;

/// What the app recorded of one span.
struct Served {
    span_id: String,
    route: String,
    tid: u32,
}

fn served_from(record: &std::path::Path) -> anyhow::Result<Vec<Served>> {
    let all: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(record)?)?;
    Ok(all
        .iter()
        .map(|v| Served {
            span_id: v["spanId"].as_str().unwrap_or_default().to_string(),
            route: v["route"].as_str().unwrap_or_default().to_string(),
            tid: v["tid"].as_u64().unwrap_or_default() as u32,
        })
        .collect())
}

/// CPU time a computing request burns (the app's default `--cpu-ms`).
const CPU_MS: f64 = 20.0;

#[test]
fn concurrent_requests_are_joined_with_their_own_threads() -> anyhow::Result<()> {
    require_root()?;
    let ports = AgentPorts::fresh()?;
    let mut args = ports.args();
    args.extend(["--slow-ms".into(), "0".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = RunningAgent::start(Duration::from_secs(1), &args)?;
    agent.next_report()?;
    let port = free_port()?.to_string();
    let record = std::env::temp_dir().join(format!("culprit-threads-{}.json", std::process::id()));
    let record_str = record.display().to_string();
    let endpoint = ports.http_traces_url();
    let app = python_script_with(
        "threaded_app.py",
        &[],
        &[
            "--port",
            &port,
            "--endpoint",
            &endpoint,
            "--record",
            &record_str,
        ],
        None,
        Some(1),
    )?;
    wait_for_port(port.parse()?, Duration::from_secs(20))?;
    let load = python_script_with(
        "threaded_app.py",
        &[],
        &["--load", "--port", &port, "--seconds", "6"],
        None,
        Some(0),
    )?;
    wait_success(load, Duration::from_secs(60))?;
    // SIGTERM: the app flushes its spans and writes what it served.
    unsafe { libc::kill(app.pid() as i32, libc::SIGTERM) };
    wait_success(app, Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(1500));
    let lines: BTreeMap<String, SpanLine> = agent
        .stop()?
        .into_iter()
        .map(|l| (l.span_id.clone(), l))
        .collect();
    let served = served_from(&record)?;
    std::fs::remove_file(&record).ok();
    // The first requests were sent before the agent watched the app.
    let first = served
        .iter()
        .filter_map(|s| lines.get(&s.span_id))
        .map(|l| l.start_mono_ns)
        .min()
        .unwrap_or(0);
    let scored: Vec<(&Served, &SpanLine)> = served
        .iter()
        .filter_map(|s| lines.get(&s.span_id).map(|l| (s, l)))
        .filter(|(_, l)| l.start_mono_ns > first + 1_000_000_000)
        .collect();
    anyhow::ensure!(
        scored.len() >= 60,
        "only {} of {} requests to score ({} lines)",
        scored.len(),
        served.len(),
        lines.len()
    );
    let right = scored
        .iter()
        .filter(|(s, l)| l.tid == Some(s.tid) && l.attribution.join == "thread.inferred")
        .count();
    let wrong: Vec<_> = scored
        .iter()
        .filter(|(s, l)| l.tid.is_some_and(|t| t != s.tid))
        .map(|(s, l)| (s.route.as_str(), s.tid, l.tid))
        .collect();
    let ambiguous = scored
        .iter()
        .filter(|(_, l)| l.attribution.join == "process")
        .count();
    // A sleeping request is off-CPU; a computing one burned CPU_MS of its thread's CPU time
    // (measured by the app with `time.thread_time`), which the join must find on its thread.
    // Its cause may be off-CPU: three computing threads take turns on the interpreter lock,
    // which the kernel sees as blocked (the lock itself is for the off-CPU explanation).
    let cause_right = scored
        .iter()
        .filter(|(s, l)| match s.route.as_str() {
            "/sleep" => l.attribution.cause == "off_cpu",
            _ => {
                let on_ms = l.attribution.on_cpu_s * 1e3;
                l.attribution.cause != "unknown" && (CPU_MS * 0.9..=CPU_MS * 1.3).contains(&on_ms)
            }
        })
        .count();
    let mut by_route: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
    for (s, l) in &scored {
        *by_route
            .entry((
                s.route.as_str(),
                l.attribution.join.as_str(),
                l.attribution.cause.as_str(),
            ))
            .or_default() += 1;
    }
    eprintln!("by route, join and cause: {by_route:?}");
    eprintln!(
        "{} requests: {right} joined with their own thread, {} with another, {ambiguous} \
         ambiguous; {cause_right} decomposed as their route's work",
        scored.len(),
        wrong.len()
    );
    assert!(
        right * 100 >= scored.len() * 95,
        "{right} of {} joined with their own thread",
        scored.len()
    );
    assert!(
        wrong.len() * 100 <= scored.len(),
        "joined with another request's thread: {wrong:?}"
    );
    assert!(
        cause_right * 100 >= scored.len() * 95,
        "{cause_right} of {} decomposed as their route's work",
        scored.len()
    );
    Ok(())
}

/// The lab's Rust service (two worker threads sharing one CPU, the `opentelemetry-otlp` SDK's
/// batch processor, no thread attribute): computing and downstream-calling requests in parallel.
#[test]
fn the_rust_services_requests_are_joined_with_their_workers() -> anyhow::Result<()> {
    require_root()?;
    let ports = AgentPorts::fresh()?;
    let mut args = ports.args();
    args.extend(["--slow-ms".into(), "0".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = RunningAgent::start(Duration::from_secs(1), &args)?;
    agent.next_report()?;
    let downstream_port = free_port()?;
    let cg = culprit_lab::faults::cgroup::TempCgroup::new_v2("culprit-test-threads-rust")?;
    let _downstream = culprit_lab::process::reaped::spawn_workload(
        &cg.child("downstream")?,
        Some(0),
        60.0,
        &["tcp-server", "--port", &downstream_port.to_string()],
    )?;
    wait_for_port(downstream_port, Duration::from_secs(10))?;
    let port = free_port()?;
    let record =
        std::env::temp_dir().join(format!("culprit-threads-rs-{}.json", std::process::id()));
    let service = culprit_lab::process::reaped::spawn_workload(
        &cg.child("service")?,
        Some(1),
        60.0,
        &[
            "service",
            "--port",
            &port.to_string(),
            "--downstream-port",
            &downstream_port.to_string(),
            "--endpoint",
            &ports.grpc_url(),
            "--workers",
            "2",
            "--cpu-work-ms",
            "5",
            "--no-thread-attr",
            "--record",
            &record.display().to_string(),
        ],
    )?;
    wait_for_port(port, Duration::from_secs(20))?;
    let load = python_script_with(
        "threaded_app.py",
        &[],
        &[
            "--load",
            "--port",
            &port.to_string(),
            "--seconds",
            "6",
            "--cpu-path",
            "/cpu",
            "--sleep-path",
            "/downstream",
        ],
        None,
        Some(0),
    )?;
    wait_success(load, Duration::from_secs(60))?;
    unsafe { libc::kill(service.pid() as i32, libc::SIGTERM) };
    wait_success(service, Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(1500));
    let lines: BTreeMap<String, SpanLine> = agent
        .stop()?
        .into_iter()
        .map(|l| (l.span_id.clone(), l))
        .collect();
    let truth: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&record)?)?;
    std::fs::remove_file(&record).ok();
    let first = lines.values().map(|l| l.start_mono_ns).min().unwrap_or(0);
    let scored: Vec<(u32, &SpanLine)> = truth
        .iter()
        .filter_map(|v| {
            let line = lines.get(v["spanId"].as_str()?)?;
            Some((v["tid"].as_u64()? as u32, line))
        })
        .filter(|(_, l)| l.start_mono_ns > first + 1_000_000_000)
        .collect();
    anyhow::ensure!(
        scored.len() >= 60,
        "only {} requests to score",
        scored.len()
    );
    let right = scored
        .iter()
        .filter(|(tid, l)| l.tid == Some(*tid) && l.attribution.join == "thread.inferred")
        .count();
    let wrong = scored
        .iter()
        .filter(|(tid, l)| l.tid.is_some_and(|t| t != *tid))
        .count();
    let cause_right = scored
        .iter()
        .filter(|(_, l)| match l.name.as_str() {
            "GET /cpu" => ["on_cpu", "cpu.contention"].contains(&l.attribution.cause.as_str()),
            _ => l.attribution.cause != "unknown",
        })
        .count();
    eprintln!(
        "{} requests: {right} joined with their own worker, {wrong} with another; {cause_right} \
         with their route's cause",
        scored.len()
    );
    assert!(
        right * 100 >= scored.len() * 95,
        "{right} of {} joined right",
        scored.len()
    );
    assert!(
        wrong * 100 <= scored.len(),
        "{wrong} joined with another worker"
    );
    assert!(
        cause_right * 100 >= scored.len() * 95,
        "{cause_right} of {} with their route's cause",
        scored.len()
    );
    Ok(())
}
