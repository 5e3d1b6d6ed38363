//! The lab service as a child process: `culprit-lab service` on the service's CPU, with the
//! workers and the `/cpu` work that the lab and the benches measure.

use std::{
    net::IpAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

#[cfg(doc)]
use crate::faults::placement::SERVICE_CPU;
use crate::process::binaries::bin_path;

const SERVICE_WORKERS: usize = 2;
const CPU_WORK: Duration = Duration::from_millis(5);

/// Where the service sits on the network: the node's own namespace (loopback throughout), or
/// a pod's (its own namespace, listening on any address, its downstream at the node's).
#[derive(Debug, Clone, Default)]
pub(crate) struct ServiceNetwork {
    /// `culprit-lab`'s arguments that join the pod's namespace (`PodNetwork::lab_args`).
    pub lab_args: Vec<String>,
    pub listen_host: Option<IpAddr>,
    pub downstream_host: Option<IpAddr>,
}

/// `culprit-lab service` placed in `cgroups`, on `cpu` if given (the lab's service CPU, see
/// [`SERVICE_CPU`]), exporting to `endpoint`.
pub(crate) fn service_command(
    cgroups: &[PathBuf],
    cpu: Option<usize>,
    network: &ServiceNetwork,
    (port, downstream_port): (u16, u16),
    endpoint: &str,
) -> anyhow::Result<Command> {
    let mut cmd = Command::new(bin_path("culprit-lab")?);
    for cg in cgroups {
        cmd.arg("--cgroup").arg(cg);
    }
    if let Some(cpu) = cpu {
        cmd.args(["--cpu", &cpu.to_string()]);
    }
    cmd.args(&network.lab_args);
    cmd.args(["--seconds", "3600", "service"])
        .args(["--port", &port.to_string()])
        .args(["--downstream-port", &downstream_port.to_string()]);
    if let Some(host) = network.listen_host {
        cmd.args(["--listen-host", &host.to_string()]);
    }
    if let Some(host) = network.downstream_host {
        cmd.args(["--downstream-host", &host.to_string()]);
    }
    cmd.args(["--endpoint", endpoint])
        .args(["--workers", &SERVICE_WORKERS.to_string()])
        .args(["--cpu-work-ms", &CPU_WORK.as_millis().to_string()])
        .stdin(Stdio::null());
    Ok(cmd)
}

/// Where the service on `port` records the thread that served each span (`--record`): the
/// truth the lab scores the agent's join against.
pub(crate) fn served_record(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("culprit-lab-served-{port}.json"))
}
