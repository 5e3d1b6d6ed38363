//! Which cgroups a process belongs to (`/proc/<pid>/cgroup`), and which threads a cgroup holds:
//! the one reader of both, for the watch set, the span join and the live view.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// One line of /proc/<pid>/cgroup: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMembership {
    pub hierarchy: u32,
    pub controllers: Vec<String>,
    pub path: String,
}

pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<CgroupMembership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy = parts.next()?.parse().ok()?;
            let controllers = parts
                .next()?
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            let path = parts.next()?.to_string();
            Some(CgroupMembership {
                hierarchy,
                controllers,
                path,
            })
        })
        .collect()
}

/// The directory holding the `cpu.stat` that governs `pid`: the v1 `cpu` controller's cgroup
/// where the controller is on v1 (hybrid hosts), else its cgroup v2.
pub(crate) fn cpu_dir(
    memberships: &[CgroupMembership],
    v1_cpu_root: &Path,
    v2_root: &Path,
) -> Option<PathBuf> {
    let v1 = memberships
        .iter()
        .find(|m| m.hierarchy != 0 && m.controllers.iter().any(|c| c == "cpu"));
    let (root, path) = match v1 {
        Some(m) => (v1_cpu_root, &m.path),
        None => (
            v2_root,
            &memberships.iter().find(|m| m.hierarchy == 0)?.path,
        ),
    };
    Some(root.join(path.trim_start_matches('/')))
}

/// The cgroups of process `pid` (empty if it is gone).
pub(crate) fn memberships_of(pid: u32) -> Vec<CgroupMembership> {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|text| parse_proc_cgroup(&text))
        .unwrap_or_default()
}

/// The cgroup v2 path of process `pid`, where it has one.
pub(crate) fn v2_path_of(pid: u32) -> Option<String> {
    memberships_of(pid)
        .into_iter()
        .find(|m| m.hierarchy == 0)
        .map(|m| m.path)
}

/// The v2 path where there is one, else any v1 hierarchy's: where a container runtime's naming
/// shows on every host.
pub(crate) fn any_path_of(pid: u32) -> Option<String> {
    let memberships = memberships_of(pid);
    memberships
        .iter()
        .find(|m| m.hierarchy == 0)
        .or_else(|| memberships.first())
        .map(|m| m.path.clone())
}

/// Thread ids in a cgroup (v2 `cgroup.threads`, v1 `tasks`).
pub(crate) fn threads_of(dir: &Path) -> Vec<u32> {
    ["cgroup.threads", "tasks"]
        .iter()
        .find_map(|f| fs::read_to_string(dir.join(f)).ok())
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Whether `dir` is a cgroup directory (v2 `cgroup.threads`, v1 `tasks`).
pub(crate) fn is_cgroup_dir(dir: &Path) -> bool {
    dir.join("cgroup.threads").exists() || dir.join("tasks").exists()
}

/// A cgroup v2 directory's id as the kernel reports it: its kernfs inode number.
pub(crate) fn cgroup_id(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata(dir).ok().map(|m| m.ino())
}

/// The text of a cgroup's `cpu.stat` (v1 `cpu` controller or v2).
pub(crate) fn cpu_stat_text(dir: &Path) -> Option<String> {
    fs::read_to_string(dir.join("cpu.stat")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hybrid_and_pure_v2_cgroup_files() {
        let hybrid = "12:pids:/user.slice\n4:cpu:/culprit/quota\n1:name=systemd:/init.scope\n0::/lab/victim\n";
        let m = parse_proc_cgroup(hybrid);
        assert_eq!(m.len(), 4);
        assert_eq!(
            cpu_dir(
                &m,
                Path::new("/sys/fs/cgroup/cpu"),
                Path::new("/sys/fs/cgroup/unified")
            ),
            Some(PathBuf::from("/sys/fs/cgroup/cpu/culprit/quota"))
        );
        let v2 = parse_proc_cgroup("0::/kubepods.slice/pod1/cri-containerd-abc.scope\n");
        assert_eq!(
            cpu_dir(&v2, Path::new("/nonexistent"), Path::new("/sys/fs/cgroup")),
            Some(PathBuf::from(
                "/sys/fs/cgroup/kubepods.slice/pod1/cri-containerd-abc.scope"
            ))
        );
        // Controllers co-mounted with cpu (cpu,cpuacct) count too.
        let comounted = parse_proc_cgroup("3:cpu,cpuacct:/a\n0::/\n");
        assert_eq!(
            cpu_dir(&comounted, Path::new("/c"), Path::new("/u")),
            Some(PathBuf::from("/c/a"))
        );
        assert_eq!(cpu_dir(&[], Path::new("/c"), Path::new("/u")), None);
    }

    #[test]
    fn reads_this_processs_cgroups() {
        let me = std::process::id();
        assert!(!memberships_of(me).is_empty());
        assert!(memberships_of(u32::MAX).is_empty());
        assert_eq!(v2_path_of(u32::MAX), None);
    }
}
