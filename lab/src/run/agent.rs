//! A live agent as a child process, its reports read back as they come.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use culprit::model::{Report, SpanLine, ThreadRow};

use crate::process::{binaries::bin_path, reaped::Reaped};

pub struct RunningAgent {
    /// The agent's local API socket (a fresh path per agent).
    pub(crate) api_socket: std::path::PathBuf,
    process: Reaped,
    reports: Receiver<Report>,
    spans: Receiver<SpanLine>,
    reader: Option<thread::JoinHandle<()>>,
    interval: Duration,
}

impl RunningAgent {
    /// Starts `culprit agent` with JSON reports every `interval`, plus `extra_args`.
    pub fn start(interval: Duration, extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_wrapped(&[], interval, extra_args)
    }

    /// Like [`RunningAgent::start`], with these environment variables set for the agent (the
    /// `OTEL_EXPORTER_OTLP_*` a DaemonSet's pod spec would give it).
    pub fn start_with_env(
        interval: Duration,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::spawn(&[], env, interval, extra_args)
    }

    /// Like [`RunningAgent::start`], with the agent kept off `busy_cpus` (a test's workloads),
    /// on whatever CPUs remain (anywhere if none do): under emulation its own work, ten times
    /// what it is here, would be a neighbour of the very threads the test measures.
    pub fn start_off_cpus(
        busy_cpus: &[usize],
        interval: Duration,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let prefix: Vec<String> = match cpus_except(busy_cpus) {
            Some(cpus) => vec!["taskset".into(), "-c".into(), cpus],
            None => Vec::new(),
        };
        Self::start_wrapped(&prefix, interval, extra_args)
    }

    /// Like [`RunningAgent::start`], with the agent run through `prefix` (e.g. `setpriv` with a
    /// reduced capability set).
    pub(crate) fn start_wrapped(
        prefix: &[String],
        interval: Duration,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        Self::spawn(prefix, &[], interval, extra_args)
    }

    fn spawn(
        prefix: &[String],
        env: &[(&str, &str)],
        interval: Duration,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let api_socket = std::env::temp_dir().join(format!(
            "culprit-agent-{}-{}.sock",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let agent = bin_path("culprit")?;
        let mut cmd = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&agent);
                c
            }
            None => Command::new(&agent),
        };
        cmd.arg("agent")
            .arg("--output")
            .arg("json")
            .arg("--interval")
            .arg(interval.as_secs_f64().to_string());
        if !extra_args.contains(&"--api-socket") {
            cmd.arg("--api-socket").arg(&api_socket);
        }
        cmd.args(extra_args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut process = Reaped::spawn("culprit agent", &mut cmd)?;
        let stdout = process.child.stdout.take().context("agent stdout")?;
        let (tx, reports) = mpsc::channel();
        let (span_tx, spans) = mpsc::channel();
        let reader = thread::spawn(move || {
            #[derive(serde::Deserialize)]
            struct SpanMessage {
                span: SpanLine,
            }
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("{\"span\"") {
                    match serde_json::from_str::<SpanMessage>(&line) {
                        Ok(m) => {
                            let _ = span_tx.send(m.span);
                        }
                        Err(err) => eprintln!("unparsable span line ({err}): {line}"),
                    }
                    continue;
                }
                match serde_json::from_str::<Report>(&line) {
                    Ok(report) => {
                        if tx.send(report).is_err() {
                            break;
                        }
                    }
                    Err(err) => eprintln!("unparsable agent report ({err}): {line}"),
                }
            }
        });
        let api_socket = extra_args
            .iter()
            .position(|a| *a == "--api-socket")
            .and_then(|i| extra_args.get(i + 1))
            .map_or(api_socket, std::path::PathBuf::from);
        Ok(Self {
            api_socket,
            process,
            reports,
            spans,
            reader: Some(reader),
            interval,
        })
    }

    /// The agent's local API socket (`culprit top`, `report`, `status` take it).
    pub fn api_socket(&self) -> &std::path::Path {
        &self.api_socket
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `culprit status --json` against this agent, as a user runs it: its exit code (0 all
    /// well, 2 degraded; `--liveness` in `args` for a probe's answer) and the health it printed.
    pub fn status(&self, args: &[&str]) -> anyhow::Result<(i32, culprit::live::view::Health)> {
        let out = Command::new(bin_path("culprit")?)
            .args(["status", "--json", "--socket"])
            .arg(&self.api_socket)
            .args(args)
            .output()
            .context("running culprit status")?;
        let code = out.status.code().unwrap_or(-1);
        let health = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "culprit status printed no health (exit {code}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        Ok((code, health))
    }

    pub fn next_report(&mut self) -> anyhow::Result<Report> {
        let patience =
            crate::process::slowdown::stretch(self.interval * 3 + Duration::from_secs(10));
        match self.reports.recv_timeout(patience) {
            Ok(report) => Ok(report),
            Err(RecvTimeoutError::Timeout) => bail!("no report from the agent in {patience:?}"),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.process.child.wait().ok();
                bail!("the agent exited ({status:?}) before reporting; see its log above")
            }
        }
    }

    /// A report made after this call (older unread ones are skipped).
    pub fn fresh_report(&mut self) -> anyhow::Result<Report> {
        let _ = self.take_reports();
        self.next_report()
    }

    /// The reports received so far and not yet taken.
    pub fn take_reports(&self) -> Vec<Report> {
        self.reports.try_iter().collect()
    }

    /// Collects the next `n` reports.
    pub fn reports(&mut self, n: usize) -> anyhow::Result<Vec<Report>> {
        (0..n).map(|_| self.next_report()).collect()
    }

    /// Waits until `want` spans matching `keep` have arrived, or none has for `quiet`, and
    /// returns those that did; other spans are dropped.
    pub(crate) fn wait_spans(
        &mut self,
        keep: impl Fn(&SpanLine) -> bool,
        want: usize,
        quiet: Duration,
    ) -> Vec<SpanLine> {
        let mut out = Vec::new();
        while out.len() < want {
            match self.spans.recv_timeout(quiet) {
                Ok(span) if keep(&span) => out.push(span),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        out
    }

    /// Stops the agent as an operator would (SIGTERM), checks it exits cleanly, and returns
    /// the spans it printed (held spans are released at shutdown).
    pub fn stop(mut self) -> anyhow::Result<Vec<SpanLine>> {
        let reader = self.reader.take();
        if !self.process.terminate()? {
            bail!("the agent did not exit cleanly on SIGTERM");
        }
        if let Some(r) = reader {
            let _ = r.join();
        }
        Ok(self.spans.try_iter().collect())
    }
}

/// Run-queue figures of one cgroup summed over several reports.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RunqTotals {
    pub waits: u64,
    /// Of `waits`, those counted in the cgroup's per-CPU histogram slot.
    pub waits_on_cpu_slot: u64,
    pub total_wait_ns: u64,
    /// Highest per-report p99 seen.
    pub worst_p99_ns: u64,
    /// Every per-report p99.
    pub p99s_ns: Vec<u64>,
}

impl RunqTotals {
    pub(crate) fn of(reports: &[Report], cgroup: &str) -> Self {
        let mut t = Self::default();
        for row in reports
            .iter()
            .flat_map(|r| &r.cgroups)
            .filter(|c| c.cgroup == cgroup)
        {
            t.waits += row.stats.waits;
            t.waits_on_cpu_slot += row.waits_on_cpu_slot;
            t.total_wait_ns += row.stats.total_wait_ns;
            t.worst_p99_ns = t.worst_p99_ns.max(row.stats.p99_wait_ns);
            t.p99s_ns.push(row.stats.p99_wait_ns);
        }
        t
    }

    /// The median of the per-report p99s: one disturbed report cannot move it.
    pub fn median_p99_ns(&self) -> u64 {
        let mut v = self.p99s_ns.clone();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    }

    pub fn mean_wait_ns(&self) -> f64 {
        if self.waits == 0 {
            0.0
        } else {
            self.total_wait_ns as f64 / self.waits as f64
        }
    }
}

/// Per-thread figures of one process summed over several reports.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ThreadTotals {
    pub on_cpu_ns: u64,
    pub runq_ns: u64,
    pub throttled_ns: u64,
    pub contention_ns: u64,
    pub off_cpu_ns: u64,
    /// The part of `off_cpu_ns` spent asleep while the waker was held behind a neighbour.
    pub waker_delay_ns: u64,
    /// The part of `off_cpu_ns` spent asleep while the waker waited throttled.
    pub waker_throttled_ns: u64,
    /// The part of `off_cpu_ns` spent asleep in the kernel's I/O wait.
    pub io_wait_ns: u64,
    /// The part of `off_cpu_ns` spent asleep in page faults.
    pub fault_wait_ns: u64,
    /// The part of `off_cpu_ns` spent asleep in `futex`, beyond the releasers' delays.
    pub lock_wait_ns: u64,
    /// The part of `off_cpu_ns` spent stalled on memory.
    pub memory_stall_ns: u64,
    /// The part of `on_cpu_ns` the hypervisor took (steal time).
    pub steal_ns: u64,
    pub longest_off_cpu_ns: u64,
    /// Neighbour pid -> time it took, summed.
    pub neighbours: std::collections::BTreeMap<u32, u64>,
    /// Thread ids seen.
    pub tids: std::collections::BTreeSet<u32>,
}

impl ThreadTotals {
    pub fn of(reports: &[Report], pid: u32) -> Self {
        let mut t = Self::default();
        let rows = reports
            .iter()
            .flat_map(|r| &r.threads)
            .filter(|row| row.pid == pid);
        for row in rows {
            t.add(row);
        }
        t
    }

    fn add(&mut self, row: &ThreadRow) {
        self.on_cpu_ns += row.on_cpu_ns;
        self.runq_ns += row.runq_ns;
        self.throttled_ns += row.throttled_ns;
        self.contention_ns += row.contention_ns;
        self.off_cpu_ns += row.off_cpu_ns;
        self.waker_delay_ns += row.waker_delay_ns;
        self.waker_throttled_ns += row.waker_throttled_ns;
        self.io_wait_ns += row.io_wait_ns;
        self.fault_wait_ns += row.fault_wait_ns;
        self.lock_wait_ns += row.lock_wait_ns;
        self.memory_stall_ns += row.memory_stall_ns;
        self.steal_ns += row.steal_ns;
        self.longest_off_cpu_ns = self.longest_off_cpu_ns.max(row.longest_off_cpu_ns);
        for n in &row.neighbours {
            *self.neighbours.entry(n.pid).or_default() += n.ns;
        }
        self.tids.insert(row.tid);
    }

    /// The neighbour that took the most time.
    pub fn top_neighbour(&self) -> Option<(u32, u64)> {
        self.top_neighbour_except(None)
    }

    /// The neighbour that took the most time, `skip` (the agent itself, say) aside.
    pub fn top_neighbour_except(&self, skip: Option<u32>) -> Option<(u32, u64)> {
        self.neighbours
            .iter()
            .filter(|(p, _)| Some(**p) != skip)
            .max_by_key(|(_, ns)| **ns)
            .map(|(p, n)| (*p, *n))
    }

    pub fn observed_ns(&self) -> u64 {
        self.on_cpu_ns + self.runq_ns + self.off_cpu_ns
    }
}

/// The drops the agent counted over `reports`, by site, the sites that counted none left out.
pub fn counted_drops(reports: &[Report]) -> std::collections::BTreeMap<&str, u64> {
    let mut drops = std::collections::BTreeMap::new();
    for r in reports {
        for (site, n) in r.drops.iter().filter(|(_, n)| **n > 0) {
            *drops.entry(site.as_str()).or_default() += n;
        }
    }
    drops
}

/// The CPUs of this machine other than `busy`, as a `taskset -c` list (`None` if none remain).
fn cpus_except(busy: &[usize]) -> Option<String> {
    let count = std::thread::available_parallelism().map_or(1, usize::from);
    let others: Vec<String> = (0..count)
        .filter(|c| !busy.contains(c))
        .map(|c| c.to_string())
        .collect();
    (!others.is_empty()).then(|| others.join(","))
}
