//! The lab service as a child process: `culprit-lab service` on the service's CPU, with the
//! workers and the `/cpu` work that the lab and the benches measure.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

#[cfg(doc)]
use crate::faults::placement::SERVICE_CPU;
use crate::process::binaries::bin_path;

const SERVICE_WORKERS: usize = 2;
const CPU_WORK: Duration = Duration::from_millis(5);

/// `culprit-lab service` placed in `cgroups`, on `cpu` if given (the lab's service CPU, see
/// [`SERVICE_CPU`]), exporting to `endpoint`.
pub(crate) fn service_command(
    cgroups: &[PathBuf],
    cpu: Option<usize>,
    port: u16,
    downstream_port: u16,
    endpoint: &str,
) -> anyhow::Result<Command> {
    let mut cmd = Command::new(bin_path("culprit-lab")?);
    for cg in cgroups {
        cmd.arg("--cgroup").arg(cg);
    }
    if let Some(cpu) = cpu {
        cmd.args(["--cpu", &cpu.to_string()]);
    }
    cmd.args(["--seconds", "3600", "service"])
        .args(["--port", &port.to_string()])
        .args(["--downstream-port", &downstream_port.to_string()])
        .args(["--endpoint", endpoint])
        .args(["--workers", &SERVICE_WORKERS.to_string()])
        .args(["--cpu-work-ms", &CPU_WORK.as_millis().to_string()])
        .stdin(Stdio::null());
    Ok(cmd)
}
