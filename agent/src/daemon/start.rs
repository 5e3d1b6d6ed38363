//! Starting the agent's stages: the probes and the signals they feed, the OTLP receivers and the
//! local API (supervised tasks), the exporter.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use culprit_common::{OTLP_PORT_SLOTS, ProbeConfig};

use super::supervise::{Stage, Supervisor};
use crate::{
    cli::AgentOpts,
    export::{ExportQueue, config::ExportConfig, sender::Sender},
    host::{
        cgroups::{CgroupPaths, find_cgroup2_mount},
        clock::realtime_ns,
        procfs,
    },
    kernel::{
        drops::DropCounters,
        probes::{self, ProbeOptions, Probes},
        watch::WatchSet,
    },
    live::{
        api,
        view::{AgentFacts, LiveView},
    },
    otlp::{self, Ingress},
    signals::{Signals, Sources, runqueue::RunqCollector, thread_store::ThreadStore},
};

pub(crate) fn probe_config(opts: &AgentOpts) -> anyhow::Result<ProbeConfig> {
    let ms_to_ns = |ms: f64, what: &str| -> anyhow::Result<u64> {
        if !(ms > 0.0 && ms.is_finite()) {
            anyhow::bail!("--{what} must be a positive number of milliseconds");
        }
        Ok((ms * 1e6) as u64)
    };
    Ok(ProbeConfig {
        episode_threshold_ns: ms_to_ns(opts.episode_threshold_ms, "episode-threshold-ms")?,
        bucket_ns: ms_to_ns(opts.bucket_ms, "bucket-ms")?,
        node_summary: u32::from(!opts.no_node_summary),
        _reserved: 0,
        otlp_ports: otlp_ports(opts)?,
    })
}

/// The ports senders dial to reach the receivers: the receivers' own, and those a NAT in front
/// of them (a hostPort, a Service) translates from.
fn otlp_ports(opts: &AgentOpts) -> anyhow::Result<[u16; OTLP_PORT_SLOTS]> {
    let mut ports = [0; OTLP_PORT_SLOTS];
    if opts.no_otlp {
        return Ok(ports);
    }
    let (grpc, http) = opts.otlp_addrs();
    let mut wanted = vec![grpc.port(), http.port()];
    wanted.extend(&opts.otlp_dialled_ports);
    wanted.retain(|p| *p != 0);
    wanted.sort_unstable();
    wanted.dedup();
    if wanted.len() > OTLP_PORT_SLOTS {
        anyhow::bail!(
            "at most {OTLP_PORT_SLOTS} OTLP ports can be watched for sender identity, got {wanted:?}"
        );
    }
    ports[..wanted.len()].copy_from_slice(&wanted);
    Ok(ports)
}

/// Loads and attaches the probes; a refused hook degrades its signal, with a warning.
pub(super) fn load_probes(
    opts: &AgentOpts,
    config: ProbeConfig,
    cgroup_root: &Path,
) -> anyhow::Result<Probes> {
    let probes = probes::load(&ProbeOptions {
        btf: opts.btf.clone(),
        tracefs: opts.tracefs.clone(),
        config,
        context_sample_hz: opts.context_sample_hz,
    })?;
    let attached = probes.hooks.iter().filter(|h| h.attached).count();
    log::info!(
        "probes attached: {attached}/{}; cgroup v2 root {}",
        probes.hooks.len(),
        cgroup_root.display()
    );
    Ok(probes)
}

/// The live view's facts about this agent.
pub(super) fn live_view(probes: &Probes) -> Arc<Mutex<LiveView>> {
    Arc::new(Mutex::new(LiveView::new(AgentFacts {
        version: env!("CARGO_PKG_VERSION").to_string(),
        kernel: procfs::kernel_release().unwrap_or_default(),
        started_unix_ms: realtime_ns() / 1_000_000,
        probes: probes.hooks.clone(),
        signals: probes.signals.clone(),
    })))
}

/// The cgroup v2 mount: found before the probes load, so that a host without one fails first.
pub(super) fn cgroup_root(opts: &AgentOpts) -> anyhow::Result<PathBuf> {
    match &opts.cgroup_root {
        Some(root) => Ok(root.clone()),
        None => find_cgroup2_mount(),
    }
}

/// The signals over the probes' maps and the host's cgroup tree.
pub(super) fn signals(
    opts: &AgentOpts,
    config: ProbeConfig,
    cgroup_root: PathBuf,
    probes: &mut Probes,
) -> anyhow::Result<Signals> {
    let degraded = probes
        .signals
        .iter()
        .filter(|s| !s.ok)
        .map(|s| format!("{:?}: {}", s.signal, s.reason.as_deref().unwrap_or("")))
        .collect();
    let ebpf = &mut probes.ebpf;
    let watch = WatchSet::new(
        ebpf,
        opts.watch_pids.clone(),
        opts.watch_cgroups.clone(),
        cgroup_root.clone(),
    )?;
    let sources = Sources {
        runq: RunqCollector::new(ebpf)?,
        drops: DropCounters::new(ebpf)?,
        paths: CgroupPaths::new(cgroup_root),
        store: ThreadStore::new(
            opts.retention.as_nanos() as u64,
            opts.store_max_records,
            config.bucket_ns,
        ),
        watch,
    };
    let sampled = probes
        .hooks
        .iter()
        .any(|h| h.program == "context_sample" && h.attached);
    Ok(Signals::new(sources, opts.cgroup_prefix.clone(), degraded)
        .with_context_sampling(
            (sampled && opts.context_sample_hz > 0)
                .then(|| 1_000_000_000 / u64::from(opts.context_sample_hz)),
        )
        .with_telemetry_ports(&config.otlp_ports))
}

/// The OTLP receivers, in the inbound stage.
pub(super) fn receivers(opts: &AgentOpts, ingress: &Ingress, tasks: &mut Supervisor) {
    if opts.no_otlp {
        return;
    }
    let (grpc, http) = opts.otlp_addrs();
    let ingress_grpc = ingress.clone();
    tasks.spawn("otlp-grpc receiver", Stage::Inbound, move |stop| {
        otlp::grpc::serve(grpc, ingress_grpc, stop.stopped())
    });
    let ingress_http = ingress.clone();
    tasks.spawn("otlp-http receiver", Stage::Inbound, move |stop| {
        otlp::http::serve(http, ingress_http, stop.stopped())
    });
    if let Some(path) = opts.otlp_grpc_unix.clone() {
        let ingress = ingress.clone();
        tasks.spawn("otlp-grpc unix receiver", Stage::Inbound, move |stop| {
            otlp::grpc::serve_unix(path, ingress, stop.stopped())
        });
    }
    if let Some(path) = opts.otlp_http_unix.clone() {
        let ingress = ingress.clone();
        tasks.spawn("otlp-http unix receiver", Stage::Inbound, move |stop| {
            otlp::http::serve_unix(path, ingress, stop.stopped())
        });
    }
}

/// The local API, in the inbound stage; a failure to serve it costs only the API.
pub(super) fn local_api(opts: &AgentOpts, live: &api::Shared, tasks: &mut Supervisor) {
    if opts.no_api {
        return;
    }
    match api::bind_unix(&opts.api_socket) {
        Ok(listener) => {
            let (path, view) = (opts.api_socket.clone(), live.clone());
            tasks.spawn("local API (unix)", Stage::Inbound, move |stop| {
                api::serve_unix(path, listener, view, stop.stopped())
            });
            log::info!("local API on {}", opts.api_socket.display());
        }
        Err(err) => log::warn!("no local API (culprit top/explain/status): {err:#}"),
    }
    // Checked at start-up (`run_async`).
    if let Ok(Some(addr)) = opts.api_tcp_address() {
        let view = live.clone();
        tasks.spawn("local API (tcp)", Stage::Inbound, move |stop| {
            api::serve_tcp(addr, view, stop.stopped())
        });
    }
}

/// The `/metrics` endpoint, when asked for: its text is rebuilt at every report.
pub(super) fn prometheus(
    opts: &AgentOpts,
    tasks: &mut Supervisor,
) -> Option<crate::report::prometheus::Exposition> {
    let addr = opts.prometheus_listen?;
    let text = crate::report::prometheus::Exposition::default();
    let served = text.clone();
    tasks.spawn("prometheus endpoint", Stage::Inbound, move |stop| {
        crate::report::prometheus::serve(addr, served, stop.stopped())
    });
    log::info!("Prometheus metrics on http://{addr}/metrics");
    Some(text)
}

/// The exporter, in the outbound stage: runs until the stage stops.
pub(super) fn exporter(
    config: ExportConfig,
    queue: &ExportQueue,
    tasks: &mut Supervisor,
) -> anyhow::Result<()> {
    log::info!(
        "exporting to {} ({:?})",
        config.traces_endpoint,
        config.protocol
    );
    let sender = Sender::new(config, queue.clone())?;
    tasks.spawn("otlp exporter", Stage::Outbound, move |stop| async move {
        tokio::select! {
            () = sender.run() => Ok(()),
            () = stop.stopped() => Ok(()),
        }
    });
    Ok(())
}
