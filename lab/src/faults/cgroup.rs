//! Cgroups made for one run and removed after it, with whatever runs in them.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use culprit::find_cgroup2_mount;

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A cgroup directory that is emptied and removed on drop, children included.
pub struct TempCgroup {
    root: PathBuf,
    path: PathBuf,
}

impl TempCgroup {
    /// A new cgroup at the top of the cgroup v2 tree, named `<prefix>-<pid>-<n>`.
    pub fn new_v2(prefix: &str) -> anyhow::Result<Self> {
        Self::new_under(&find_cgroup2_mount()?, prefix)
    }

    /// A new cgroup whose CPU bandwidth is capped at `quota_us` per `period_us`: in the v1 `cpu`
    /// hierarchy where that controller lives on v1 (hybrid hosts), else in cgroup v2 (`cpu.max`).
    pub fn new_cpu_quota(prefix: &str, quota_us: u64, period_us: u64) -> anyhow::Result<Self> {
        let v1_cpu = Path::new("/sys/fs/cgroup/cpu");
        let cg = if v1_cpu.join("cpu.cfs_quota_us").exists() {
            let cg = Self::new_under(v1_cpu, prefix)?;
            fs::write(cg.path.join("cpu.cfs_period_us"), period_us.to_string())?;
            fs::write(cg.path.join("cpu.cfs_quota_us"), quota_us.to_string())
                .context("setting cpu.cfs_quota_us")?;
            cg
        } else {
            let root = find_cgroup2_mount()?;
            // The cpu controller must be enabled for the root's children.
            let _ = fs::write(root.join("cgroup.subtree_control"), "+cpu");
            let cg = Self::new_under(&root, prefix)?;
            fs::write(cg.path.join("cpu.max"), format!("{quota_us} {period_us}"))
                .context("setting cpu.max (is the cpu controller enabled?)")?;
            cg
        };
        Ok(cg)
    }

    /// Sets (`Some((quota_us, period_us))`) or lifts (`None`) the CPU bandwidth cap of a cgroup
    /// made by [`TempCgroup::new_cpu_quota`].
    pub fn set_cpu_quota(&self, quota: Option<(u64, u64)>) -> anyhow::Result<()> {
        let v1_quota = self.path.join("cpu.cfs_quota_us");
        if v1_quota.exists() {
            if let Some((_, period_us)) = quota {
                fs::write(self.path.join("cpu.cfs_period_us"), period_us.to_string())?;
            }
            let value = quota.map_or("-1".to_string(), |(q, _)| q.to_string());
            fs::write(&v1_quota, value).context("setting cpu.cfs_quota_us")
        } else {
            let value = quota.map_or("max".to_string(), |(q, p)| format!("{q} {p}"));
            fs::write(self.path.join("cpu.max"), value).context("setting cpu.max")
        }
    }

    /// A new cgroup with the memory controller, no limit yet: in the v1 `memory` hierarchy
    /// where that controller lives on v1 (hybrid hosts), else in cgroup v2.
    pub fn new_memory(prefix: &str) -> anyhow::Result<Self> {
        let v1_memory = Path::new("/sys/fs/cgroup/memory");
        if v1_memory.join("memory.limit_in_bytes").exists() {
            Self::new_under(v1_memory, prefix)
        } else {
            let root = find_cgroup2_mount()?;
            let _ = fs::write(root.join("cgroup.subtree_control"), "+memory");
            let cg = Self::new_under(&root, prefix)?;
            anyhow::ensure!(
                cg.path.join("memory.high").exists(),
                "no memory controller in {}",
                root.display()
            );
            Ok(cg)
        }
    }

    /// The memory the cgroup's members use now, page cache included.
    pub(crate) fn memory_bytes(&self) -> anyhow::Result<u64> {
        let file = ["memory.usage_in_bytes", "memory.current"]
            .into_iter()
            .map(|f| self.path.join(f))
            .find(|p| p.exists())
            .context("no memory usage file")?;
        let text = fs::read_to_string(&file)?;
        text.trim()
            .parse()
            .with_context(|| format!("reading {}", file.display()))
    }

    /// Sets (`Some`) or lifts (`None`) the memory limit of a cgroup made by
    /// [`TempCgroup::new_memory`]: v1's hard limit (reclaim on every charge over it), v2's
    /// `memory.high` (reclaim, then a penalty sleep on the way back to user space).
    pub(crate) fn set_memory_limit(&self, bytes: Option<u64>) -> anyhow::Result<()> {
        let v1 = self.path.join("memory.limit_in_bytes");
        if v1.exists() {
            let value = bytes.map_or("-1".to_string(), |b| b.to_string());
            fs::write(&v1, value).context("setting memory.limit_in_bytes")
        } else {
            let value = bytes.map_or("max".to_string(), |b| b.to_string());
            fs::write(self.path.join("memory.high"), value).context("setting memory.high")
        }
    }

    /// Sets the hard memory limit of a cgroup made by [`TempCgroup::new_memory`]: past it the
    /// kernel reclaims, then kills (v1 `memory.limit_in_bytes`, v2 `memory.max`).
    pub fn set_memory_max(&self, bytes: u64) -> anyhow::Result<()> {
        let v1 = self.path.join("memory.limit_in_bytes");
        let file = if v1.exists() {
            v1
        } else {
            self.path.join("memory.max")
        };
        fs::write(&file, bytes.to_string()).with_context(|| format!("writing {}", file.display()))
    }

    fn new_under(root: &Path, prefix: &str) -> anyhow::Result<Self> {
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let path = root.join(name);
        fs::create_dir(&path)
            .with_context(|| format!("creating cgroup {} (needs root)", path.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
            path,
        })
    }

    /// A child cgroup; it is removed together with its parent.
    pub fn child(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.path.join(name);
        fs::create_dir(&path).with_context(|| format!("creating cgroup {}", path.display()))?;
        Ok(path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as the agent reports it: relative to the cgroup v2 root.
    pub(crate) fn agent_path(&self, child: Option<&str>) -> String {
        let rel = self.path.strip_prefix(&self.root).unwrap_or(&self.path);
        match child {
            Some(c) => format!("/{}/{c}", rel.display()),
            None => format!("/{}", rel.display()),
        }
    }
}

impl Drop for TempCgroup {
    fn drop(&mut self) {
        if let Err(err) = remove_tree(&self.path) {
            eprintln!(
                "warning: could not remove cgroup {}: {err:#}",
                self.path.display()
            );
        }
    }
}

/// Kills every process in the subtree, then removes the directories deepest first.
fn remove_tree(path: &Path) -> anyhow::Result<()> {
    let mut dirs = vec![path.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        if let Ok(entries) = fs::read_dir(&dirs[i]) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        i += 1;
    }
    for dir in dirs.iter().rev() {
        kill_members(dir)?;
        fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

fn kill_members(dir: &Path) -> anyhow::Result<()> {
    let procs = dir.join("cgroup.procs");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids: Vec<i32> = fs::read_to_string(&procs)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("processes {pids:?} did not leave {}", dir.display());
        }
        for pid in pids {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        thread::sleep(Duration::from_millis(20));
    }
}
