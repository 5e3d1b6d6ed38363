//! Real OpenTelemetry peers for the lab and the tests: the Python SDK app, the rotel collector,
//! and a capture point after the collector (the agent's own OTLP/HTTP receiver, recording what
//! arrives).

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use culprit::otlp::{Ingress, Payload};
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};

use crate::process::{binaries::bin_path, reaped::Reaped};

/// The workspace root (the lab is one of its members).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the lab lives in the workspace")
        .to_path_buf()
}

fn venv() -> anyhow::Result<PathBuf> {
    let venv = workspace_root().join("target/venv");
    if !venv.join("bin/python").exists() {
        bail!("{} is missing: run `cargo xtask setup`", venv.display());
    }
    Ok(venv)
}

/// A port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts connections on the port.
pub fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    wait_for_addr((std::net::Ipv4Addr::LOCALHOST, port).into(), timeout)
}

/// Waits until something accepts connections at `addr` (e.g. a pod's address).
pub fn wait_for_addr(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let timeout = crate::process::slowdown::stretch(timeout);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on {addr} after {timeout:?}")
}

/// Runs the lab's Rust app (`culprit-lab rust-otel-app`, the `opentelemetry-otlp` SDK over
/// gRPC) sending `count` requests to `endpoint`, recording their spans to `record`.
pub fn rust_otel_app(endpoint: &str, count: usize, record: &Path) -> anyhow::Result<Reaped> {
    let mut cmd = Command::new(bin_path("culprit-lab")?);
    cmd.args(["rust-otel-app", "--endpoint", endpoint, "--count"])
        .arg(count.to_string())
        .arg("--record")
        .arg(record);
    Reaped::spawn("rust-otel-app", &mut cmd)
}

/// Runs `tests/python/otel_app.py` with `args`, optionally in a cgroup and pinned to a CPU.
pub fn python_app(
    args: &[&str],
    cgroup: Option<&Path>,
    cpu: Option<usize>,
) -> anyhow::Result<Reaped> {
    python_app_with(&[], args, cgroup, cpu)
}

/// Like [`python_app`], with more of `culprit-lab`'s placement arguments (e.g.
/// [`crate::faults::netns::PodNetwork::lab_args`]). The lab execs the app, which keeps the pid
/// the harness knows.
pub fn python_app_with(
    lab_args: &[String],
    args: &[&str],
    cgroup: Option<&Path>,
    cpu: Option<usize>,
) -> anyhow::Result<Reaped> {
    python_script_with("otel_app.py", lab_args, args, cgroup, cpu)
}

/// Runs `tests/python/otel_app.py` with `args` and the environment variables `env` (the SDK's
/// `OTEL_EXPORTER_OTLP_*` settings).
pub fn python_app_env(env: &[(&str, &str)], args: &[&str]) -> anyhow::Result<Reaped> {
    let mut cmd = python_command("otel_app.py", &[], args, None, None)?;
    // `requests` prefers these to the CA file the exporter passes it (OTEL_*_CERTIFICATE).
    cmd.env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .envs(env.iter().copied());
    Reaped::spawn("otel_app.py", &mut cmd)
}

/// Runs `tests/python/<script>` with `args`, as [`python_app_with`] does.
pub fn python_script_with(
    script: &str,
    lab_args: &[String],
    args: &[&str],
    cgroup: Option<&Path>,
    cpu: Option<usize>,
) -> anyhow::Result<Reaped> {
    let mut cmd = python_command(script, lab_args, args, cgroup, cpu)?;
    Reaped::spawn(script, &mut cmd)
}

fn python_command(
    script: &str,
    lab_args: &[String],
    args: &[&str],
    cgroup: Option<&Path>,
    cpu: Option<usize>,
) -> anyhow::Result<Command> {
    let python = venv()?.join("bin/python");
    let app = workspace_root().join("tests/python").join(script);
    let mut cmd = Command::new(bin_path("culprit-lab")?);
    cmd.args(lab_args);
    if let Some(cg) = cgroup {
        cmd.arg("--cgroup").arg(cg);
    }
    if let Some(cpu) = cpu {
        cmd.arg("--cpu").arg(cpu.to_string());
    }
    cmd.arg("exec")
        .arg("--")
        .arg(python)
        .arg(app)
        .args(args)
        .stdin(Stdio::null());
    Ok(cmd)
}

/// Waits for a process to finish, failing if it does not in time or fails.
pub fn wait_success(mut p: Reaped, timeout: Duration) -> anyhow::Result<()> {
    let timeout = crate::process::slowdown::stretch(timeout);
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = p.child.try_wait()? {
            if !status.success() {
                bail!("{} failed: {status}", p.name);
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} still running after {timeout:?}", p.name);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The `rotel-agent` binary the PyPI package installed.
pub(crate) fn rotel_agent_path() -> anyhow::Result<PathBuf> {
    let lib = venv()?.join("lib");
    std::fs::read_dir(&lib)?
        .flatten()
        .map(|e| e.path().join("site-packages/rotel/rotel-agent"))
        .find(|p| p.exists())
        .with_context(|| format!("rotel-agent not found under {}", lib.display()))
}

/// The rotel collector, receiving OTLP on two ports and exporting over OTLP/HTTP.
pub fn rotel(grpc_port: u16, http_port: u16, export_to: &str) -> anyhow::Result<Reaped> {
    let mut cmd = Command::new(rotel_agent_path()?);
    cmd.args(["start", "--otlp-grpc-endpoint"])
        .arg(format!("127.0.0.1:{grpc_port}"))
        .arg("--otlp-http-endpoint")
        .arg(format!("127.0.0.1:{http_port}"))
        .args(["--exporter", "otlp", "--otlp-exporter-protocol", "http"])
        .arg("--otlp-exporter-endpoint")
        .arg(export_to)
        .args(["--batch-timeout", "100ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let p = Reaped::spawn("rotel-agent", &mut cmd)?;
    wait_for_port(grpc_port, Duration::from_secs(15))?;
    wait_for_port(http_port, Duration::from_secs(15))?;
    Ok(p)
}

/// What arrives at the end of the chain: OTLP/HTTP requests decoded with the official protobuf
/// definitions.
pub struct Sink {
    rx: mpsc::Receiver<ExportTraceServiceRequest>,
    /// (arrival, span end), wall clock ns, for every span received.
    arrivals: std::sync::Arc<std::sync::Mutex<Vec<(u64, u64)>>>,
    metrics_rx: mpsc::Receiver<ExportMetricsServiceRequest>,
    logs_rx: mpsc::Receiver<ExportLogsServiceRequest>,
    pub(crate) addr: SocketAddr,
}

impl Sink {
    pub fn start(port: u16) -> anyhow::Result<Self> {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let (tx, rx) = mpsc::channel();
        let (metrics_tx, metrics_rx) = mpsc::channel();
        let (logs_tx, logs_rx) = mpsc::channel();
        let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = arrivals.clone();
        thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                // The end of the chain takes whatever the collector sends, as a backend does:
                // no admission limits of its own to push back with.
                let (ingress, mut inbound) = Ingress::new(1024, 256, 64 << 20);
                let ingress = ingress.with_work_limits(usize::MAX, 4 << 30);
                tokio::spawn(culprit::otlp::http::serve(
                    addr,
                    ingress,
                    std::future::pending(),
                ));
                while let Some(msg) = inbound.recv().await {
                    match msg.payload {
                        Payload::Traces(req) => {
                            let now = culprit::clock::realtime_ns();
                            if let Ok(mut a) = record.lock() {
                                a.extend(
                                    req.resource_spans
                                        .iter()
                                        .flat_map(|rs| &rs.scope_spans)
                                        .flat_map(|ss| &ss.spans)
                                        .map(|s| (now, s.end_time_unix_nano)),
                                );
                            }
                            if tx.send(req).is_err() {
                                break;
                            }
                        }
                        Payload::Metrics(req) => {
                            let _ = metrics_tx.send(req);
                        }
                        Payload::Logs(req) => {
                            let _ = logs_tx.send(req);
                        }
                    }
                }
            });
        });
        wait_for_port(port, Duration::from_secs(10))?;
        Ok(Self {
            rx,
            arrivals,
            metrics_rx,
            logs_rx,
            addr,
        })
    }

    /// The base URL to export to.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// (arrival, span end) of every span received so far, wall clock ns.
    pub(crate) fn arrivals(&self) -> Vec<(u64, u64)> {
        self.arrivals.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// The metrics requests received so far.
    pub fn metrics(&self) -> Vec<ExportMetricsServiceRequest> {
        self.metrics_rx.try_iter().collect()
    }

    /// The next logs request, waiting up to `timeout` for it.
    pub fn next_logs(&self, timeout: Duration) -> Option<ExportLogsServiceRequest> {
        self.logs_rx.recv_timeout(timeout).ok()
    }

    /// Collects requests until `done` says so or `timeout` passes.
    pub fn collect(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[ExportTraceServiceRequest]) -> bool,
    ) -> Vec<ExportTraceServiceRequest> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(req) => got.push(req),
                Err(_) => break,
            }
        }
        got
    }
}

/// Agent arguments that put its receivers on fresh ports, so tests never collide.
pub struct AgentPorts {
    pub grpc: u16,
    pub http: u16,
}

impl AgentPorts {
    pub fn fresh() -> anyhow::Result<Self> {
        Ok(Self {
            grpc: free_port()?,
            http: free_port()?,
        })
    }

    pub fn args(&self) -> Vec<String> {
        self.args_on(std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// The receivers on `host` (a node address pods dial, say) instead of loopback.
    pub fn args_on(&self, host: std::net::IpAddr) -> Vec<String> {
        vec![
            "--otlp-grpc".into(),
            SocketAddr::from((host, self.grpc)).to_string(),
            "--otlp-http".into(),
            SocketAddr::from((host, self.http)).to_string(),
        ]
    }

    pub fn grpc_url(&self) -> String {
        self.grpc_url_on(std::net::Ipv4Addr::LOCALHOST.into())
    }

    pub fn grpc_url_on(&self, host: std::net::IpAddr) -> String {
        format!("http://{}", SocketAddr::from((host, self.grpc)))
    }

    pub fn http_traces_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.http)
    }
}
