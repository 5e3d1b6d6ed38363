//! How this node mounts its cgroups: pure v2 (every current distribution), hybrid (v2 beside
//! v1 hierarchies, the `cpu` controller on v1) or v1 only. Throttling reads `cpu.stat` from
//! wherever the `cpu` controller lives, so `culprit check` reports both.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CgroupMode {
    /// cgroup2 only.
    V2,
    /// cgroup2 next to v1 hierarchies.
    Hybrid,
    /// No cgroup2 mount: the agent cannot map its kernel's cgroup ids to paths.
    V1,
    /// No cgroup filesystem at all.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CgroupLayout {
    pub(crate) mode: CgroupMode,
    /// The cgroup2 mount.
    pub(crate) v2_root: Option<PathBuf>,
    /// The v1 hierarchy with the `cpu` controller, if one has it.
    pub(crate) v1_cpu_root: Option<PathBuf>,
}

/// The layout from the text of `/proc/self/mountinfo`.
pub(crate) fn cgroup_layout(mountinfo: &str) -> CgroupLayout {
    let mut v2_root = None;
    let mut v1_cpu_root = None;
    let mut v1_mounts = 0usize;
    for line in mountinfo.lines() {
        // proc(5): id parent major:minor root mount-point options [optional...] - fstype
        // source super-options.
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(separator) = fields
            .get(6..)
            .and_then(|rest| rest.iter().position(|f| *f == "-"))
            .map(|p| p + 6)
        else {
            continue;
        };
        let (Some(fstype), Some(mount_point)) = (fields.get(separator + 1), fields.get(4)) else {
            continue;
        };
        match *fstype {
            "cgroup2" if v2_root.is_none() => v2_root = Some(PathBuf::from(*mount_point)),
            "cgroup" => {
                v1_mounts += 1;
                let options = fields.get(separator + 3).copied().unwrap_or_default();
                if v1_cpu_root.is_none() && options.split(',').any(|o| o == "cpu") {
                    v1_cpu_root = Some(PathBuf::from(*mount_point));
                }
            }
            _ => {}
        }
    }
    let mode = match (v2_root.is_some(), v1_mounts > 0) {
        (true, false) => CgroupMode::V2,
        (true, true) => CgroupMode::Hybrid,
        (false, true) => CgroupMode::V1,
        (false, false) => CgroupMode::None,
    };
    CgroupLayout {
        mode,
        v2_root,
        v1_cpu_root,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
28 25 0:25 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
";
    const PURE_V2: &str = "\
22 1 0:21 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
23 1 0:6 / /sys/kernel/tracing rw,relatime shared:5 - tracefs tracefs rw
";

    #[test]
    fn hybrid_hosts_have_v2_beside_a_v1_cpu_controller() {
        let layout = cgroup_layout(HYBRID);
        assert_eq!(layout.mode, CgroupMode::Hybrid);
        assert_eq!(
            layout.v2_root.as_deref(),
            Some(std::path::Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            layout.v1_cpu_root.as_deref(),
            Some(std::path::Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
    }

    #[test]
    fn pure_v2_v1_only_and_none_are_told_apart() {
        let v2 = cgroup_layout(PURE_V2);
        assert_eq!((v2.mode, v2.v1_cpu_root), (CgroupMode::V2, None));
        let v1_only: String = HYBRID
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(cgroup_layout(&v1_only).mode, CgroupMode::V1);
        assert_eq!(cgroup_layout("").mode, CgroupMode::None);
        // Garbage lines are skipped, not trusted.
        assert_eq!(cgroup_layout("- cgroup2\n1 2 3\n").mode, CgroupMode::None);
    }
}
