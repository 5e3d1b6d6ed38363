//! Where the lab's processes run: the CPU of the service and the one of the harness, and
//! putting the current process in its cgroups and on its CPU.

use std::{fs, path::Path};

use anyhow::Context as _;

/// The service, its downstream and the faults aimed at them share this CPU (a downstream on
/// the service's node, as a sidecar or a cache is: the hogs delay it too, and the service's
/// threads sleep through that, contention through another thread); the agent and the load
/// generator run on [`HARNESS_CPU`], so that the harness does not disturb what it measures.
pub(crate) const SERVICE_CPU: usize = 1;
pub(crate) const HARNESS_CPU: usize = 0;

/// Moves the calling process (all its threads) into a cgroup, v1 or v2.
pub fn join_cgroup(cgroup: &Path) -> anyhow::Result<()> {
    let procs = cgroup.join("cgroup.procs");
    fs::write(&procs, std::process::id().to_string()).with_context(|| {
        format!(
            "joining cgroup {} (writing {})",
            cgroup.display(),
            procs.display()
        )
    })
}

/// Pins the calling process to one CPU; threads spawned afterwards inherit it.
pub fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET bounds-checks against its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("pinning to CPU {cpu}"));
        }
    }
    Ok(())
}

/// The kernel's writeback workers (the `writeback` workqueue, unbound) kept to one CPU while
/// this lives, then given back their CPUs. The memory-pressure scenario makes them busy on
/// behalf of its fault; on the service's CPU they would stand in its threads' run queue as
/// a neighbour the scenario did not mean to add.
pub(crate) struct WritebackWorkers {
    previous: Option<String>,
}

const WRITEBACK_CPUMASK: &str = "/sys/devices/virtual/workqueue/writeback/cpumask";

impl WritebackWorkers {
    /// Keeps them on `cpu`; where the kernel does not expose the mask, leaves them be.
    pub(crate) fn pin(cpu: usize) -> anyhow::Result<Self> {
        let Ok(previous) = std::fs::read_to_string(WRITEBACK_CPUMASK) else {
            return Ok(Self { previous: None });
        };
        std::fs::write(WRITEBACK_CPUMASK, format!("{:x}", 1u64 << cpu))
            .with_context(|| format!("writing {WRITEBACK_CPUMASK}"))?;
        Ok(Self {
            previous: Some(previous.trim().to_string()),
        })
    }
}

impl Drop for WritebackWorkers {
    fn drop(&mut self) {
        if let Some(previous) = &self.previous
            && let Err(err) = std::fs::write(WRITEBACK_CPUMASK, previous)
        {
            eprintln!("warning: could not give the writeback workers their CPUs back: {err}");
        }
    }
}
