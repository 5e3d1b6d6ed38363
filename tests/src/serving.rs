//! Scoring the join of concurrent requests with the threads that served them: services record
//! the truth the agent cannot read (each span's serving thread, and for some its CPU time), the
//! agent prints every span's decomposition, and the score says how many it joined right, with
//! another request's thread, or not at all.

use std::{collections::BTreeMap, path::Path, time::Duration};

use culprit::model::SpanLine;
use culprit_lab::{
    faults::cgroup::TempCgroup,
    process::reaped::{Reaped, spawn_workload},
    run::agent::RunningAgent,
    service::otel::{AgentPorts, free_port, python_script_with, wait_for_port, wait_success},
};

/// What a service recorded of one span it served.
pub struct Served {
    pub span_id: String,
    /// The route, where the service records it.
    pub route: String,
    pub tid: u32,
    /// The CPU time the request took, where the service measures it.
    pub cpu_ns: Option<u64>,
}

pub fn served_from(record: &Path) -> anyhow::Result<Vec<Served>> {
    let all: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(record)?)?;
    std::fs::remove_file(record).ok();
    Ok(all
        .iter()
        .map(|v| Served {
            span_id: v["spanId"].as_str().unwrap_or_default().to_string(),
            route: v["route"].as_str().unwrap_or_default().to_string(),
            tid: v["tid"].as_u64().unwrap_or_default() as u32,
            cpu_ns: v["cpuNs"].as_u64(),
        })
        .collect())
}

/// An agent printing every span's decomposition.
pub fn agent() -> anyhow::Result<(RunningAgent, AgentPorts)> {
    let ports = AgentPorts::fresh()?;
    let mut args = ports.args();
    args.extend(["--slow-ms".into(), "0".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = RunningAgent::start(Duration::from_secs(1), &args)?;
    agent.next_report()?;
    Ok((agent, ports))
}

/// Runs the clients of `threaded_app.py --load` against `port` on CPU 0 for `seconds`, then
/// stops the service with SIGTERM (it flushes its spans and writes what it served) and the
/// agent. Returns the agent's lines by span id.
pub fn load_then_stop(
    port: u16,
    seconds: u32,
    load_args: &[&str],
    service: Reaped,
    agent: RunningAgent,
) -> anyhow::Result<BTreeMap<String, SpanLine>> {
    let (port, seconds) = (port.to_string(), seconds.to_string());
    let mut args = vec!["--load", "--port", &port, "--seconds", &seconds];
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

/// How the agent joined the served requests: the right thread by the expected join, another
/// thread, or none.
pub struct Score<'a> {
    pub scored: Vec<(&'a Served, &'a SpanLine)>,
    pub right: usize,
    pub wrong: Vec<(&'a str, u32, Option<u32>)>,
    pub ambiguous: usize,
}

impl<'a> Score<'a> {
    /// Every served request the agent printed, but those of the first second (sent before the
    /// agent watched the service); right when joined with its own thread by one of `joins`.
    pub fn of(
        served: &'a [Served],
        lines: &'a BTreeMap<String, SpanLine>,
        joins: &[&str],
        min_requests: usize,
    ) -> anyhow::Result<Self> {
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
            scored.len() >= min_requests,
            "only {} of {} requests to score ({} lines)",
            scored.len(),
            served.len(),
            lines.len()
        );
        let right = scored
            .iter()
            .filter(|(s, l)| l.tid == Some(s.tid) && joins.contains(&l.attribution.join.as_str()))
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

    /// Prints the score and asserts the goals: at least `right_pct` of requests joined with
    /// their own thread and decomposed as their route's work (`cause_right`), at most 1% with
    /// another thread.
    pub fn assert_goals(&self, right_pct: usize, cause_right: impl Fn(&Served, &SpanLine) -> bool) {
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
            self.right * 100 >= n * right_pct,
            "{} of {n} joined with their own thread",
            self.right
        );
        assert!(
            self.wrong.len() * 100 <= n,
            "joined with another request's thread: {:?}",
            self.wrong
        );
        assert!(
            causes * 100 >= n * right_pct,
            "{causes} of {n} decomposed as their route's work"
        );
    }
}

/// What a run of a service under load left: what it served, and the agent's lines by span id.
pub struct Run {
    pub served: Vec<Served>,
    pub lines: BTreeMap<String, SpanLine>,
}

/// A lab service subcommand (`service_args`, to which the OTLP endpoint and `--record` are
/// added) on CPU 1 in cgroup `cg`, driven for `seconds` by the clients of `threaded_app.py
/// --load` (`load_args`) on CPU 0, with an agent printing every span.
pub fn run_lab_service(
    cg: &TempCgroup,
    port: u16,
    service_args: &[&str],
    seconds: u32,
    load_args: &[&str],
) -> anyhow::Result<Run> {
    let (agent, ports) = agent()?;
    let record =
        std::env::temp_dir().join(format!("culprit-served-{}-{port}.json", std::process::id()));
    let (endpoint, record_arg) = (ports.grpc_url(), record.display().to_string());
    let mut args = service_args.to_vec();
    args.extend(["--endpoint", &endpoint, "--record", &record_arg]);
    let service = spawn_workload(&cg.child("service")?, Some(1), 60.0, &args)?;
    wait_for_port(port, Duration::from_secs(20))?;
    let lines = load_then_stop(port, seconds, load_args, service, agent)?;
    Ok(Run {
        served: served_from(&record)?,
        lines,
    })
}

/// The lab's Rust worker pool (two workers sharing CPU 1, no thread attribute, `extra` flags)
/// calling a downstream TCP service on CPU 0, under computing and downstream-calling clients.
pub fn run_worker_pool(tag: &str, extra: &[&str]) -> anyhow::Result<Run> {
    let cg = TempCgroup::new_v2(tag)?;
    let downstream_port = free_port()?;
    let _downstream = spawn_workload(
        &cg.child("downstream")?,
        Some(0),
        60.0,
        &["tcp-server", "--port", &downstream_port.to_string()],
    )?;
    wait_for_port(downstream_port, Duration::from_secs(10))?;
    let port = free_port()?;
    let (port_arg, downstream_arg) = (port.to_string(), downstream_port.to_string());
    let mut args = vec![
        "service",
        "--port",
        &port_arg,
        "--downstream-port",
        &downstream_arg,
        "--workers",
        "2",
        "--cpu-work-ms",
        "5",
        "--no-thread-attr",
    ];
    args.extend_from_slice(extra);
    run_lab_service(
        &cg,
        port,
        &args,
        5,
        &["--cpu-path", "/cpu", "--sleep-path", "/downstream"],
    )
}
