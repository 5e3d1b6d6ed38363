//! OOM kills on purpose: a batch job beside the service (its own memory cgroup, limited), whose
//! workers each ask for more than the limit, one after another until the phase ends; the kernel
//! kills each. Which processes it killed, in which cgroup, under which limit, is the truth the
//! agent's OOM reports are held to.

use std::{
    os::unix::process::ExitStatusExt as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context as _;
use culprit::find_cgroup2_mount;
use serde::{Deserialize, Serialize};

use super::{cgroup::TempCgroup, placement::HARNESS_CPU};
use crate::process::binaries::bin_path;

/// The job's memory limit: each worker asks for four times as much.
pub const OOM_LIMIT_BYTES: u64 = 64 << 20;
const WORKER_MIB: &str = "256";
/// Between a kill and the next worker: the kernel's OOM handling has its own pace.
const RESPAWN_PAUSE: Duration = Duration::from_millis(200);

/// What the job's workers suffered: the truth.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OomTruth {
    /// The workers the kernel killed (SIGKILL while over the limit).
    pub killed_pids: Vec<u32>,
    /// The workers' cgroup v2 path, as the agent names it (from the v2 root, leading `/`).
    pub cgroup: String,
    pub limit_bytes: u64,
}

/// The running job; [`OomJob::finish`] stops it and says what happened.
pub struct OomJob {
    stop: Arc<AtomicBool>,
    workers: JoinHandle<anyhow::Result<Vec<u32>>>,
    cgroup: String,
    _memory: TempCgroup,
    _identity: Option<TempCgroup>,
}

impl OomJob {
    /// Starts the job: a memory cgroup limited to [`OOM_LIMIT_BYTES`] (v1's on hybrid hosts,
    /// with a v2 cgroup of its own for the workers' identity), its workers on the harness's CPU.
    pub fn start() -> anyhow::Result<Self> {
        let root = find_cgroup2_mount()?;
        let memory = TempCgroup::new_memory("culprit-lab-oom")?;
        memory.set_memory_max(OOM_LIMIT_BYTES)?;
        let identity = match memory.path().starts_with(&root) {
            true => None,
            false => Some(TempCgroup::new_v2("culprit-lab-oom")?),
        };
        let mut cgroups: Vec<PathBuf> = vec![identity.as_ref().unwrap_or(&memory).path().into()];
        if identity.is_some() {
            cgroups.push(memory.path().into());
        }
        let cgroup = format!("/{}", cgroups[0].strip_prefix(&root)?.display());
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let workers = std::thread::spawn(move || {
            let mut killed = Vec::new();
            while !stopping.load(Ordering::SeqCst) {
                let mut cmd = Command::new(bin_path("culprit-lab")?);
                for cg in &cgroups {
                    cmd.arg("--cgroup").arg(cg);
                }
                let status = cmd
                    .args(["--cpu", &HARNESS_CPU.to_string(), "--seconds", "30"])
                    .args(["memory-hog", "--mib", WORKER_MIB])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()
                    .context("starting an OOM worker")?;
                let pid = status.id();
                let status = { status }.wait().context("waiting for an OOM worker")?;
                if status.signal() == Some(libc::SIGKILL) {
                    killed.push(pid);
                }
                std::thread::sleep(RESPAWN_PAUSE);
            }
            Ok(killed)
        });
        Ok(Self {
            stop,
            workers,
            cgroup,
            _memory: memory,
            _identity: identity,
        })
    }

    /// Stops the job after its current worker and returns what the kernel killed.
    pub fn finish(self) -> anyhow::Result<OomTruth> {
        self.stop.store(true, Ordering::SeqCst);
        let killed_pids = self
            .workers
            .join()
            .map_err(|_| anyhow::anyhow!("the OOM job's thread panicked"))??;
        Ok(OomTruth {
            killed_pids,
            cgroup: self.cgroup,
            limit_bytes: OOM_LIMIT_BYTES,
        })
    }
}
