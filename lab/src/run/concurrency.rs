//! The `concurrency` scenario: services serving computing and waiting requests in parallel with
//! no thread attribute on any span, each recording the thread that truly served each request,
//! and the agent's join scored against it (`scenario::join_score`). Without a published thread
//! context the agent must infer the thread from the kernel's timeline; with one (OTEP 4947) it
//! joins by span id, down to an async runtime interleaving requests on one thread.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use culprit::model::SpanLine;

use super::agent::RunningAgent;
use crate::{
    faults::cgroup::TempCgroup,
    process::reaped::{Reaped, spawn_workload},
    scenario::join_score::{JoinRow, Score, Served, served_from},
    service::{
        otel::{AgentPorts, free_port, python_script_with, wait_for_port, wait_success},
        thread_context::{Dialect, shared_library},
    },
};

/// CPU time of a Python or async computing request.
pub const CPU_MS: f64 = 20.0;

/// What a run of a service under load left: what it served, and the agent's lines by span id.
pub struct Run {
    pub served: Vec<Served>,
    pub lines: BTreeMap<String, SpanLine>,
}

/// The services the scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// The threaded Python app (`tests/python/threaded_app.py`), no context.
    Python,
    /// The same, publishing its context through the writer built in a dialect.
    PythonContext(Dialect),
    /// The lab's Rust worker pool, no context.
    WorkerPool,
    /// The same, publishing its context (the variable in its executable).
    WorkerPoolContext,
    /// The lab's async service: one thread, its context published per poll.
    Async,
}

impl Case {
    pub const ALL: [Case; 5] = [
        Case::Python,
        Case::PythonContext(Dialect::Tlsdesc),
        Case::WorkerPool,
        Case::WorkerPoolContext,
        Case::Async,
    ];

    pub fn app(self) -> &'static str {
        match self {
            Case::Python => "Python `http.server`, a thread per connection, OTel SDK",
            Case::PythonContext(Dialect::Tlsdesc) => {
                "the same, publishing its thread context (TLSDESC library)"
            }
            Case::PythonContext(Dialect::GeneralDynamic) => {
                "the same, publishing its thread context (general-dynamic library)"
            }
            Case::WorkerPool => "the lab's Rust service, 2 workers, `opentelemetry-otlp`",
            Case::WorkerPoolContext => "the same, publishing its thread context (executable)",
            Case::Async => "the lab's async service: one thread, context published per poll",
        }
    }

    pub fn load(self) -> &'static str {
        match self {
            Case::Python | Case::PythonContext(_) => {
                "3 clients on `/cpu` (20 ms of CPU in hashlib), 3 on `/sleep` (50 ms), one CPU"
            }
            Case::WorkerPool | Case::WorkerPoolContext => {
                "3 clients on `/cpu` (5 ms), 3 on `/downstream`, one CPU"
            }
            Case::Async => "1 client on `/cpu` (20 ms in 0.5 ms slices), 3 on `/sleep` (50 ms)",
        }
    }

    /// The joins that are right for this case's requests.
    pub fn joins(self) -> &'static [&'static str] {
        match self {
            Case::Python | Case::WorkerPool => &["thread.inferred"],
            Case::PythonContext(_) | Case::WorkerPoolContext => &["context"],
            // A sleeping request runs microseconds: no read sees its context, and it is joined
            // with its inferred thread, less the time the context tags as other requests'.
            Case::Async => &["context", "thread.inferred"],
        }
    }

    /// Whether a request was decomposed as its route's work: a sleeping request off CPU, a
    /// computing one on a CPU or waiting for one (with its CPU time, where it is known), a
    /// downstream call with any cause but `unknown`.
    pub fn cause_right(self, s: &Served, l: &SpanLine) -> bool {
        let cause = l.attribution.cause;
        let on_ms = l.attribution.on_cpu_s * 1e3;
        let computing = cause == "on_cpu" || cause == "cpu.contention";
        let route = if s.route.is_empty() {
            l.name.as_str()
        } else {
            s.route.as_str()
        };
        match self {
            Case::Python | Case::PythonContext(_) if route.ends_with("/cpu") => {
                computing && (CPU_MS * 0.9..=CPU_MS * 1.3).contains(&on_ms)
            }
            Case::Async => {
                // Its own CPU time, measured by the service, to within two sampling periods.
                let truth_ms = s.cpu_ns.unwrap_or_default() as f64 / 1e6;
                let own = (on_ms - truth_ms).abs() <= 2.0 + truth_ms * 0.1;
                own && if route.ends_with("/cpu") {
                    computing
                } else {
                    cause == "off_cpu"
                }
            }
            _ if route.ends_with("/cpu") => computing,
            _ if route.ends_with("/sleep") => cause == "off_cpu",
            _ => cause != "unknown",
        }
    }

    /// Runs the case for `seconds` under its load, with an agent printing every span.
    pub fn run(self, seconds: u32) -> anyhow::Result<Run> {
        let cg = TempCgroup::new_v2("culprit-concurrency")?;
        match self {
            Case::Python => python_app(&cg, None, seconds),
            Case::PythonContext(dialect) => python_app(&cg, Some(dialect), seconds),
            Case::WorkerPool => worker_pool(&cg, &[], seconds),
            Case::WorkerPoolContext => worker_pool(&cg, &["--thread-context"], seconds),
            Case::Async => {
                let port = free_port()?;
                let (port_arg, cpu_ms) = (port.to_string(), CPU_MS.to_string());
                let service = [
                    "async-service",
                    "--port",
                    &port_arg,
                    "--cpu-work-ms",
                    &cpu_ms,
                    "--sleep-ms",
                    "50",
                ];
                let load = ["--cpu-clients", "1", "--sleep-clients", "3"];
                lab_service(&cg, port, &service, seconds, &load)
            }
        }
    }

    /// Runs the case and scores it, as a row of the table.
    pub fn row(self, seconds: u32) -> anyhow::Result<JoinRow> {
        let run = self.run(seconds)?;
        let score = Score::of(&run.served, &run.lines, self.joins(), |s, l| {
            self.cause_right(s, l)
        });
        Ok(score.row(self.app(), self.load(), &self.joins().join("` / `")))
    }
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

fn record_path(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("culprit-served-{}-{port}.json", std::process::id()))
}

/// Runs the clients of `threaded_app.py --load` against `port` on CPU 0 for `seconds`, then
/// stops the service with SIGTERM (it flushes its spans and writes what it served) and the
/// agent.
fn load_then_stop(
    port: u16,
    seconds: u32,
    load_args: &[&str],
    service: Reaped,
    agent: RunningAgent,
    record: &std::path::Path,
) -> anyhow::Result<Run> {
    let (port, seconds) = (port.to_string(), seconds.to_string());
    let mut args = vec!["--load", "--port", &port, "--seconds", &seconds];
    args.extend_from_slice(load_args);
    let load = python_script_with("threaded_app.py", &[], &args, None, Some(0))?;
    wait_success(load, Duration::from_secs(60))?;
    unsafe { libc::kill(service.pid() as i32, libc::SIGTERM) };
    wait_success(service, Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(1500));
    let lines = agent
        .stop()?
        .into_iter()
        .map(|l| (l.span_id.clone(), l))
        .collect();
    Ok(Run {
        served: served_from(record)?,
        lines,
    })
}

/// A lab service subcommand (the OTLP endpoint and `--record` added) on CPU 1.
fn lab_service(
    cg: &TempCgroup,
    port: u16,
    service_args: &[&str],
    seconds: u32,
    load_args: &[&str],
) -> anyhow::Result<Run> {
    let (agent, ports) = agent()?;
    let record = record_path(port);
    let (endpoint, record_arg) = (ports.grpc_url(), record.display().to_string());
    let mut args = service_args.to_vec();
    args.extend(["--endpoint", &endpoint, "--record", &record_arg]);
    let service = spawn_workload(&cg.child("service")?, Some(1), 60.0, &args)?;
    wait_for_port(port, Duration::from_secs(20))?;
    load_then_stop(port, seconds, load_args, service, agent, &record)
}

/// The lab's Rust worker pool (two workers on CPU 1, no thread attribute, `extra` flags)
/// calling a downstream TCP service on CPU 0.
fn worker_pool(cg: &TempCgroup, extra: &[&str], seconds: u32) -> anyhow::Result<Run> {
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
    ];
    args.extend_from_slice(extra);
    let load = ["--cpu-path", "/cpu", "--sleep-path", "/downstream"];
    lab_service(cg, port, &args, seconds, &load)
}

/// The threaded Python app on CPU 1, computing in C code that releases the interpreter lock,
/// publishing its context through `dialect`'s writer if given.
fn python_app(cg: &TempCgroup, dialect: Option<Dialect>, seconds: u32) -> anyhow::Result<Run> {
    let (agent, ports) = agent()?;
    let port = free_port()?;
    let record = record_path(port);
    let (port_arg, endpoint, record_arg) = (
        port.to_string(),
        ports.http_traces_url(),
        record.display().to_string(),
    );
    let library = dialect.map(|d| shared_library(d).display().to_string());
    let mut args = vec![
        "--port",
        &port_arg,
        "--endpoint",
        &endpoint,
        "--record",
        &record_arg,
        "--cpu-kind",
        "native",
    ];
    if let Some(library) = &library {
        args.extend(["--thread-context", library]);
    }
    let app_cgroup = cg.child("app")?;
    let app = python_script_with("threaded_app.py", &[], &args, Some(&app_cgroup), Some(1))?;
    wait_for_port(port, Duration::from_secs(20))?;
    load_then_stop(port, seconds, &[], app, agent, &record)
}
