//! Which thread served each request, without help from the SDK: services with a thread per
//! connection or a worker pool on one CPU, computing and waiting requests in parallel, no thread
//! attribute on any span. Each service records the true serving thread; the agent must name it
//! from the kernel's timeline, or say it cannot, never name another.

use std::{collections::BTreeMap, path::Path, time::Duration};

use culprit::model::SpanLine;
use culprit_lab::{
    faults::cgroup::TempCgroup,
    process::reaped::{Reaped, spawn_workload},
    run::agent::RunningAgent,
    service::otel::{AgentPorts, free_port, python_script_with, wait_for_port, wait_success},
};
use culprit_tests::require_root;

/// What a service recorded of one span it served.
struct Served {
    span_id: String,
    /// The route, where the service records it.
    route: String,
    tid: u32,
}

fn served_from(record: &Path) -> anyhow::Result<Vec<Served>> {
    let all: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(record)?)?;
    std::fs::remove_file(record).ok();
    Ok(all
        .iter()
        .map(|v| Served {
            span_id: v["spanId"].as_str().unwrap_or_default().to_string(),
            route: v["route"].as_str().unwrap_or_default().to_string(),
            tid: v["tid"].as_u64().unwrap_or_default() as u32,
        })
        .collect())
}

/// An agent printing every span's decomposition.
fn agent() -> anyhow::Result<(RunningAgent, AgentPorts)> {
    let ports = AgentPorts::fresh()?;
    let mut args = ports.args();
    args.extend(["--slow-ms".into(), "0".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = RunningAgent::start(Duration::from_secs(1), &args)?;
    agent.next_report()?;
    Ok((agent, ports))
}

/// Runs the clients of `threaded_app.py --load` against `port` on CPU 0 for 6 s, then stops
/// the service with SIGTERM (it flushes its spans and writes what it served) and the agent.
fn load_then_stop(
    port: u16,
    load_args: &[&str],
    service: Reaped,
    agent: RunningAgent,
) -> anyhow::Result<BTreeMap<String, SpanLine>> {
    let port = port.to_string();
    let mut args = vec!["--load", "--port", &port, "--seconds", "6"];
    args.extend_from_slice(load_args);
    let load = python_script_with("threaded_app.py", &[], &args, None, Some(0))?;
    wait_success(load, Duration::from_secs(60))?;
    unsafe { libc::kill(service.pid() as i32, libc::SIGTERM) };
    wait_success(service, Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(1500));
    Ok(agent
        .stop()?
        .into_iter()
        .map(|l| (l.span_id.clone(), l))
        .collect())
}

/// How the agent joined the served requests: the right thread, another one, or none.
struct Score<'a> {
    scored: Vec<(&'a Served, &'a SpanLine)>,
    right: usize,
    wrong: Vec<(&'a str, u32, Option<u32>)>,
    ambiguous: usize,
}

impl<'a> Score<'a> {
    /// Every served request the agent printed, but those of the first second (sent before the
    /// agent watched the service).
    fn of(served: &'a [Served], lines: &'a BTreeMap<String, SpanLine>) -> anyhow::Result<Self> {
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
        let wrong = scored
            .iter()
            .filter(|(s, l)| l.tid.is_some_and(|t| t != s.tid))
            .map(|(s, l)| (s.route.as_str(), s.tid, l.tid))
            .collect();
        let ambiguous = scored
            .iter()
            .filter(|(_, l)| l.attribution.join == "process")
            .count();
        Ok(Self {
            scored,
            right,
            wrong,
            ambiguous,
        })
    }

    /// Prints the score and asserts the goals: >= 95% of requests joined with their own thread
    /// and decomposed as their route's work (`cause_right`), at most 1% with another thread.
    fn assert_goals(&self, cause_right: impl Fn(&Served, &SpanLine) -> bool) {
        let n = self.scored.len();
        let causes = self
            .scored
            .iter()
            .filter(|(s, l)| cause_right(s, l))
            .count();
        let mut by_route: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
        for (s, l) in &self.scored {
            let key = (
                if s.route.is_empty() {
                    l.name.as_str()
                } else {
                    s.route.as_str()
                },
                l.attribution.join.as_str(),
                l.attribution.cause.as_str(),
            );
            *by_route.entry(key).or_default() += 1;
        }
        eprintln!("by route, join and cause: {by_route:?}");
        eprintln!(
            "{n} requests: {} joined with their own thread, {} with another, {} ambiguous; \
             {causes} decomposed as their route's work",
            self.right,
            self.wrong.len(),
            self.ambiguous
        );
        assert!(
            self.right * 100 >= n * 95,
            "{} of {n} joined with their own thread",
            self.right
        );
        assert!(
            self.wrong.len() * 100 <= n,
            "joined with another request's thread: {:?}",
            self.wrong
        );
        assert!(
            causes * 100 >= n * 95,
            "{causes} of {n} decomposed as their route's work"
        );
    }
}

/// CPU time a computing request burns (the app's default `--cpu-ms`).
const CPU_MS: f64 = 20.0;

/// A threaded Python service (a thread per connection, the batch span processor): three clients
/// computing and three sleeping, in parallel, on one CPU.
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
        ],
        None,
        Some(1),
    )?;
    wait_for_port(port, Duration::from_secs(20))?;
    let lines = load_then_stop(port, &[], app, agent)?;
    let served = served_from(&record)?;
    // A sleeping request is off-CPU; a computing one burned CPU_MS of its thread's CPU time
    // (measured by the app with `time.thread_time`), which the join must find on its thread.
    // Its cause may be off-CPU: three computing threads take turns on the interpreter lock,
    // which the kernel sees as blocked (the lock itself is for the off-CPU explanation).
    Score::of(&served, &lines)?.assert_goals(|s, l| match s.route.as_str() {
        "/sleep" => l.attribution.cause == "off_cpu",
        _ => {
            let on_ms = l.attribution.on_cpu_s * 1e3;
            l.attribution.cause != "unknown" && (CPU_MS * 0.9..=CPU_MS * 1.3).contains(&on_ms)
        }
    });
    Ok(())
}

/// The lab's Rust service (two worker threads sharing one CPU, the `opentelemetry-otlp` SDK's
/// batch processor, no thread attribute): computing and downstream-calling requests in parallel.
#[test]
fn the_rust_services_requests_are_joined_with_their_workers() -> anyhow::Result<()> {
    require_root()?;
    let (agent, ports) = agent()?;
    let downstream_port = free_port()?;
    let cg = TempCgroup::new_v2("culprit-test-threads-rust")?;
    let _downstream = spawn_workload(
        &cg.child("downstream")?,
        Some(0),
        60.0,
        &["tcp-server", "--port", &downstream_port.to_string()],
    )?;
    wait_for_port(downstream_port, Duration::from_secs(10))?;
    let port = free_port()?;
    let record =
        std::env::temp_dir().join(format!("culprit-threads-rs-{}.json", std::process::id()));
    let service = spawn_workload(
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
    let lines = load_then_stop(
        port,
        &["--cpu-path", "/cpu", "--sleep-path", "/downstream"],
        service,
        agent,
    )?;
    let served = served_from(&record)?;
    Score::of(&served, &lines)?.assert_goals(|_, l| match l.name.as_str() {
        "GET /cpu" => ["on_cpu", "cpu.contention"].contains(&l.attribution.cause.as_str()),
        _ => l.attribution.cause != "unknown",
    });
    Ok(())
}
