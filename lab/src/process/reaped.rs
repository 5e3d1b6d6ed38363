//! Child processes that are always reaped, even when a test fails half-way.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
};

use anyhow::Context as _;

use super::binaries::bin_path;

/// Kills and waits for its process when dropped.
pub struct Reaped {
    pub(crate) name: String,
    pub child: Child,
}

impl Reaped {
    pub fn spawn(name: &str, cmd: &mut Command) -> anyhow::Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_string(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has not exited yet (it is reaped if it has).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Asks the process to stop with SIGTERM and waits for it; returns whether it exited 0.
    pub(crate) fn terminate(mut self) -> anyhow::Result<bool> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self
            .child
            .wait()
            .with_context(|| format!("waiting for {}", self.name))?;
        Ok(status.success())
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Starts a `culprit-lab` workload, placed in `cgroup` and pinned to `cpu`.
pub fn spawn_workload(
    cgroup: &Path,
    cpu: Option<usize>,
    seconds: f64,
    workload: &[&str],
) -> anyhow::Result<Reaped> {
    let mut cmd = Command::new(bin_path("culprit-lab")?);
    cmd.arg("--cgroup").arg(cgroup);
    if let Some(cpu) = cpu {
        cmd.arg("--cpu").arg(cpu.to_string());
    }
    // A lifetime bound (the workload is killed when dropped): on a slow machine the test's own
    // steps take longer, so the bound stretches with them.
    let seconds = seconds * f64::from(crate::process::slowdown::factor());
    cmd.arg("--seconds").arg(seconds.to_string());
    cmd.args(workload).stdin(Stdio::null());
    Reaped::spawn(workload.first().copied().unwrap_or("workload"), &mut cmd)
}
