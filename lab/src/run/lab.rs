//! Runs scenarios next to one live agent: starts the downstream service and the lab service,
//! sends the load, injects each fault for its phase, and reads back the agent's decomposition
//! of every request. Everything started is removed again on the way out (RAII guards), also on
//! error, panic or Ctrl-C.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, bail};
use culprit::model::SpanLine;

use super::{
    agent::RunningAgent,
    fault_guard::Fault,
    tallies::{
        client_counts, client_latencies, oom_outcome, retry_outcome, served_count, throttle_check,
    },
};
use crate::{
    faults::{
        cgroup::TempCgroup,
        netns::{self, PodNetwork},
        packet_loss::PacketLoss,
        placement::{self, HARNESS_CPU, SERVICE_CPU},
    },
    process::reaped::spawn_workload,
    scenario::{
        accuracy::{self, Injected, Request},
        join_score::{ThreadJoin, served_from},
        outcome::{Phase, ScenarioRun},
        plan::{Faults, Scenario, Timing},
    },
    service::{
        generator::LoadGenerator,
        launch,
        load::{self, LoadShape},
        otel::{AgentPorts, free_port, wait_for_addr},
        pool_server::POOL_ROUTE,
        retry_call::ATTEMPT_SPAN,
        server::{
            ALLOC_ROUTE, CONNECT_ROUTE, CPU_ROUTE, DISK_ROUTE, DOWNSTREAM_ROUTE, LOCK_ROUTE,
            MAPPED_ROUTE, RETRY_ROUTE,
        },
    },
};

/// Concurrent load-generator connections: enough that a request stalled on a lost packet does
/// not hold back the schedule.
pub(super) const CLIENTS: usize = 8;

/// The downstream computes this long for each answer: next to the hogs it is preempted, and the
/// service thread asleep on it is delayed through it (the wake chain).
const DOWNSTREAM_WORK_US: u64 = 1000;

/// Where `/disk`'s data file and the disk writers' files go: on a disk (`/var/tmp` is one by
/// convention, where `/tmp` may be tmpfs, which refuses O_DIRECT). The data file stays for the
/// next run: writing it takes seconds.
pub const DISK_DIR: &str = "/var/tmp/culprit-lab";

/// One agent for a series of scenarios.
pub struct Lab {
    pub(super) agent: RunningAgent,
    pub(super) ports: AgentPorts,
    pub(super) stop: Arc<AtomicBool>,
    /// The load generator of the steady phases and where its results go (`with_generator`),
    /// and the fault phases' result files so far.
    pub(super) generator: Option<(LoadGenerator, std::path::PathBuf)>,
    pub(super) client_results: Vec<std::path::PathBuf>,
    /// Every scenario's service is the accept pool, loaded on `/cpu` only (`with_accept_pool`).
    pub(super) accept_pool: bool,
    /// The service's own network namespace, as a pod has: it reaches the agent and its
    /// downstream at the node's address and the load reaches it at its own.
    pub(super) pod: PodNetwork,
    /// Run the service in the node's namespace instead, on loopback (`with_host_network`).
    pub(super) host_network: bool,
}

impl Lab {
    /// Pins the harness to its CPU, then starts the agent with its OTLP receivers on fresh
    /// ports, printing every request's decomposition. `stop` (set on Ctrl-C) ends a scenario
    /// early.
    pub(crate) fn start(stop: Arc<AtomicBool>, agent_args: &[String]) -> anyhow::Result<Self> {
        Self::start_wrapped(stop, &[], agent_args)
    }

    /// Like `Lab::start` (which the demo uses), with the agent run through `agent_prefix` (e.g.
    /// `setpriv`).
    pub fn start_wrapped(
        stop: Arc<AtomicBool>,
        agent_prefix: &[String],
        agent_args: &[String],
    ) -> anyhow::Result<Self> {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) <= SERVICE_CPU {
            bail!("the lab needs 2 CPUs: one for the service, one for the harness");
        }
        placement::pin_to_cpu(HARNESS_CPU)?;
        let pod = PodNetwork::new("lab", netns::next_lab_subnet())?;
        let ports = AgentPorts::fresh()?;
        // The receivers on every address, as the DaemonSet's are: a pod's SDK dials the node's
        // address, the node's own processes loopback.
        let mut args = ports.args_on(std::net::Ipv4Addr::UNSPECIFIED.into());
        args.extend(["--slow-ms".into(), "0".into()]);
        args.extend(agent_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut agent = RunningAgent::start_wrapped(agent_prefix, Duration::from_secs(1), &args)?;
        agent.next_report()?; // The probes are attached.
        Ok(Self {
            agent,
            ports,
            stop,
            generator: None,
            client_results: Vec::new(),
            accept_pool: false,
            pod,
            host_network: false,
        })
    }

    /// Runs every scenario's service as the accept pool (its requests' wait before the span is
    /// the kernel's, measured), loaded on `/cpu`.
    pub fn with_accept_pool(mut self) -> Self {
        self.accept_pool = true;
        self
    }

    pub fn api_socket(&self) -> &std::path::Path {
        &self.agent.api_socket
    }

    fn interrupted(&self) -> anyhow::Result<()> {
        if self.stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        Ok(())
    }

    pub fn run(&mut self, scenario: Scenario, timing: Timing) -> anyhow::Result<ScenarioRun> {
        let faults = Faults::LAB;
        let cg = TempCgroup::new_v2(&format!("culprit-lab-{scenario}"))?;
        let quota =
            TempCgroup::new_cpu_quota("culprit-lab-quota", faults.quota_us, faults.period_us)?;
        quota.set_cpu_quota(None)?;
        let (service_host, downstream_host, network) = self.service_network();
        let downstream_port = free_port()?;
        let downstream = spawn_workload(
            &cg.child("downstream")?,
            Some(SERVICE_CPU),
            3600.0,
            &[
                "tcp-server",
                "--host",
                &downstream_host.to_string(),
                "--port",
                &downstream_port.to_string(),
                "--work-us",
                &DOWNSTREAM_WORK_US.to_string(),
            ],
        )?;
        let downstream_addr = std::net::SocketAddr::from((downstream_host, downstream_port));
        wait_for_addr(downstream_addr, Duration::from_secs(10))?;
        let service_port = free_port()?;
        let routes = if self.accept_pool {
            &["/cpu"]
        } else {
            scenario.routes()
        };
        let disk_file = (routes.contains(&"/disk") || routes.contains(&"/mapped"))
            .then(|| std::path::Path::new(DISK_DIR).join("disk-route-data"));
        if disk_file.is_some() || routes.contains(&"/alloc") {
            std::fs::create_dir_all(DISK_DIR).with_context(|| format!("creating {DISK_DIR}"))?;
        }
        // The lock holder on the harness's CPU: what delays it there is not the requests' own
        // run-queue wait.
        let lock_holder_cpu = routes.contains(&"/lock").then_some(HARNESS_CPU);
        // The lock holder stays out of the CPU controller's group the quota phases use: the
        // group's weight is spread over its CPUs by load, and with the busy workers on the
        // other CPU the holder's part on its own was so small that the hogs starved it for
        // seconds (seen: a 15 s request), a cgroup effect, not the chain under test.
        let mut service_cgroups = vec![cg.child("service")?];
        if lock_holder_cpu.is_none() {
            service_cgroups.push(quota.path().to_path_buf());
        }
        // `/alloc`'s service in a memory cgroup of its own, limited only in the fault.
        let memory = routes
            .contains(&"/alloc")
            .then(|| TempCgroup::new_memory("culprit-lab-memory"))
            .transpose()?;
        if let Some(memory) = &memory {
            service_cgroups.push(memory.path().to_path_buf());
        }
        let mut service = self.start_service(
            &service_cgroups,
            &network,
            ((service_host, service_port).into(), downstream_port),
            disk_file.as_deref(),
            lock_holder_cpu,
            self.accept_pool || scenario == Scenario::Saturation,
        )?;
        let service_pid = service.pid();
        let base_url = format!(
            "http://{}",
            std::net::SocketAddr::from((service_host, service_port))
        );
        let _ = self.agent.take_reports();
        let warm_up_spans = self.warm_up(&base_url, service_pid, routes)?;

        let mut phases = Vec::new();
        let mut samples = Vec::new();
        let load = |lab: &mut Self, length: Duration, injected| {
            let (shape, length) = match injected {
                Some(Injected::QueueBacklog) => (faults.overload, length),
                // Under the pressure an `/alloc` request takes 40-130 ms (the slower the machine,
                // the longer): at the full rate the two workers then overlap most of the time
                // and wait for the CPU behind each other, which is the service's own
                // concurrency, not the fault under test. Half the rate for twice as long keeps
                // them mostly apart and measures as many requests as the other scenarios.
                Some(_) if scenario == Scenario::MemoryPressure => (
                    LoadShape::Steady {
                        rate_per_s: timing.rate_per_s / 2.0,
                    },
                    length * 2,
                ),
                _ => (
                    LoadShape::Steady {
                        rate_per_s: timing.rate_per_s,
                    },
                    length,
                ),
            };
            lab.load_phase(&base_url, length, shape, routes, (scenario, injected))
        };
        let (reference, mut reference_samples) = load(self, timing.reference, None)?;
        phases.push(reference);
        self.interrupted()?;
        let fault_phases = scenario.fault_phases();
        let each = timing.fault / fault_phases.len() as u32;
        let hogs_cg = cg.child("hogs")?;
        let mut hog_pid = None;
        // The `oom` scenario's job runs through its fault phase.
        let oom_job = (scenario == Scenario::Oom)
            .then(crate::faults::oom::OomJob::start)
            .transpose()?;
        for injected in fault_phases {
            let _fault = match injected {
                Some(Injected::Contention) => {
                    let hog = spawn_workload(
                        &hogs_cg,
                        Some(scenario.hog_cpu()),
                        each.as_secs_f64() + 30.0,
                        &["hog", "--threads", &faults.hog_threads.to_string()],
                    )?;
                    hog_pid = Some(hog.pid());
                    Some(Fault::Hogs(hog))
                }
                Some(Injected::Throttling) => {
                    quota.set_cpu_quota(Some((faults.quota_us, faults.period_us)))?;
                    Some(Fault::Quota(&quota))
                }
                Some(Injected::Retransmit) => Some(Fault::Loss(PacketLoss::on_port(
                    downstream_port,
                    if scenario == Scenario::RetryStorm {
                        faults.retry_loss_percent
                    } else {
                        faults.loss_percent
                    },
                    (!self.host_network).then(|| self.pod.name()),
                )?)),
                Some(Injected::ConnectRetransmit) => Some(Fault::Loss(PacketLoss::syns_to_port(
                    downstream_port,
                    faults.syn_loss_percent,
                )?)),
                // On the harness's CPU: the writers load the disk, not the service's CPU.
                Some(Injected::DiskIo) => Some(Fault::Writers(spawn_workload(
                    &hogs_cg,
                    Some(HARNESS_CPU),
                    each.as_secs_f64() + 30.0,
                    &[
                        "disk-writer",
                        "--dir",
                        DISK_DIR,
                        "--threads",
                        &faults.disk_writers.to_string(),
                    ],
                )?)),
                // The dirtier joins the service's memory cgroup (a neighbour in its pod) and the
                // limit leaves a little room over what the service holds.
                Some(Injected::MemoryReclaim) => {
                    let memory = memory.as_ref().context("no memory cgroup")?;
                    let limit = memory.memory_bytes()? + faults.memory_headroom_bytes;
                    let dirtier = spawn_workload(
                        memory.path(),
                        Some(HARNESS_CPU),
                        each.as_secs_f64() + 30.0,
                        &["dirtier", "--dir", DISK_DIR],
                    )?;
                    let writeback = placement::WritebackWorkers::pin(HARNESS_CPU)?;
                    memory.set_memory_limit(Some(limit))?;
                    Some(Fault::Memory(memory, dirtier, writeback))
                }
                // On the harness's CPU, as reclaim elsewhere on the node would run; with the
                // disk as busy as in `disk-io` (a read from it takes what it takes in
                // production, not this VM's host cache's microseconds).
                Some(Injected::PageFault) => {
                    let file = disk_file.as_ref().context("no data file")?;
                    let seconds = each.as_secs_f64() + 30.0;
                    let evictor = spawn_workload(
                        &hogs_cg,
                        Some(HARNESS_CPU),
                        seconds,
                        &["evictor", "--file", &file.display().to_string()],
                    )?;
                    let writers = spawn_workload(
                        &hogs_cg,
                        Some(HARNESS_CPU),
                        seconds,
                        &[
                            "disk-writer",
                            "--dir",
                            DISK_DIR,
                            "--threads",
                            &faults.fault_disk_writers.to_string(),
                        ],
                    )?;
                    Some(Fault::Evictor(evictor, writers))
                }
                // The overload is the load itself.
                Some(Injected::QueueBacklog) | None => None,
            };
            let (phase, mut s) = load(self, each, injected)?;
            phases.push(phase);
            samples.append(&mut s);
            self.interrupted()?;
        }
        let oom_truth = oom_job.map(|job| job.finish()).transpose()?;

        let stdout = service.child.stdout.take();
        if !service.terminate()? {
            bail!("the lab service did not exit cleanly");
        }
        let (served, retry_truth) = served_count(stdout)?;
        let served_threads = served_from(&launch::served_record(service_port))?;
        let all_spans = self.agent.wait_spans(
            |s| {
                s.pid == service_pid
                    && [
                        CPU_ROUTE,
                        DOWNSTREAM_ROUTE,
                        DISK_ROUTE,
                        LOCK_ROUTE,
                        ALLOC_ROUTE,
                        MAPPED_ROUTE,
                        CONNECT_ROUTE,
                        POOL_ROUTE,
                        RETRY_ROUTE,
                        ATTEMPT_SPAN,
                    ]
                    .contains(&&*s.name)
            },
            (served as usize + retry_truth.attempts as usize).saturating_sub(warm_up_spans),
            // The agent holds spans 300 ms (at most 2 s) after they end.
            Duration::from_secs(3),
        );
        let (attempts, spans): (Vec<SpanLine>, Vec<SpanLine>) =
            all_spans.into_iter().partition(|s| s.name == ATTEMPT_SPAN);
        let retry = (retry_truth.calls > 0).then(|| retry_outcome(&attempts, retry_truth));
        let mut reports = self.agent.take_reports();
        reports.push(self.agent.next_report()?); // Covers the end of the last phase.
        let throttle = phases
            .iter()
            .any(|p| p.injected == Some(Injected::Throttling))
            .then(|| throttle_check(&reports, &quota.path().display().to_string()));
        let oom = oom_truth.map(|truth| oom_outcome(&reports, truth));

        // What the agent lost while the scenario ran: a join it could not complete says why.
        let drops = super::agent::counted_drops(&reports);
        if !drops.is_empty() {
            eprintln!(
                "   the agent counted drops during {}: {drops:?}",
                scenario.name()
            );
        }
        let downstream_peer = downstream_addr.to_string();
        let retransmits = reports
            .iter()
            .flat_map(|r| &r.retransmits)
            .filter(|r| r.local == downstream_peer || r.remote == downstream_peer)
            .cloned()
            .collect();
        let spans_received = spans.len();
        let thread_join = ThreadJoin::of(&served_threads, &spans);
        let in_phase = |s: &SpanLine, p: &Phase| {
            s.start_mono_ns >= p.start_mono_ns && s.start_mono_ns < p.end_mono_ns
        };
        // Where the span misses part of the request (it waited before the server read it), the
        // client's latency is the request's: joined by the trace the client started.
        samples.append(&mut reference_samples);
        let client_ms = if scenario.client_observed() {
            client_latencies(&samples)
        } else {
            Default::default()
        };
        let request = |s: &SpanLine, injected| {
            let mut r = Request::from_span(s, injected);
            if let Some(ms) = client_ms.get(&r.trace_id) {
                r.latency_ms = *ms;
            }
            r
        };
        let reference_requests: Vec<Request> = spans
            .iter()
            .filter(|s| in_phase(s, &phases[0]))
            .map(|s| request(s, None))
            .collect();
        let requests: Vec<Request> = spans
            .iter()
            .filter_map(|s| {
                let p = phases[1..].iter().find(|p| in_phase(s, p))?;
                Some(request(s, p.injected))
            })
            .collect();
        let reference_medians = accuracy::route_medians(&reference_requests);
        let summary = accuracy::summarize(&requests, &reference_medians);
        Ok(ScenarioRun {
            scenario,
            description: scenario.description(),
            phases,
            reference_medians,
            requests,
            summary,
            client: client_counts(&samples),
            throttle,
            service_pid,
            hog_pid,
            downstream_peer,
            downstream_pid: downstream.pid(),
            spans_expected: served,
            spans_received,
            retransmits,
            retry,
            oom,
            thread_join,
        })
    }

    /// Sends requests until the agent has decomposed one of the service's spans: from then on
    /// it watches the service's threads, and what is measured is fully covered. Returns the
    /// number of the service's spans it took.
    fn warm_up(
        &mut self,
        base_url: &str,
        service_pid: u32,
        routes: &[&'static str],
    ) -> anyhow::Result<usize> {
        for _ in 0..20 {
            self.interrupted()?;
            let samples = load::run(
                base_url,
                LoadShape::Steady { rate_per_s: 20.0 },
                Duration::from_millis(500),
                2,
                routes,
                &self.stop,
            );
            if samples.iter().any(|s| !s.ok) {
                bail!("the lab service failed requests while warming up");
            }
            let seen =
                self.agent
                    .wait_spans(|s| s.pid == service_pid, 1, Duration::from_millis(500));
            if !seen.is_empty() {
                return Ok(seen.len());
            }
        }
        bail!("the agent decomposed none of the lab service's spans after 20 s of requests")
    }

    /// Stops the agent (SIGTERM) and checks it exits cleanly.
    pub fn stop(self) -> anyhow::Result<()> {
        self.agent.stop().map(|_| ())
    }
}
