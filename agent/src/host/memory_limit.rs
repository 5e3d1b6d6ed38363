//! The memory the agent may use: the lowest limit on the way from its cgroup to the root (a
//! parent's limit binds its children too), from cgroup v2's `memory.max` or, where the `memory`
//! controller is on v1 (hybrid hosts), `memory.limit_in_bytes`.

use std::path::Path;

use super::membership::{CgroupMembership, memberships_of};

/// Where hybrid hosts mount the v1 `memory` controller.
const V1_MEMORY_ROOT: &str = "/sys/fs/cgroup/memory";
/// v1 writes "no limit" as the largest page-aligned `i64`; anything this large is no limit.
const UNLIMITED_BYTES: u64 = 1 << 62;

/// One limit file's value: `None` for "max" (v2) or v1's huge "unlimited", or unreadable text.
pub(crate) fn parse_limit(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return None;
    }
    text.parse::<u64>().ok().filter(|b| *b < UNLIMITED_BYTES)
}

/// The agent's own memory limit in bytes, if its cgroups set one.
pub(crate) fn own_limit_bytes(v2_root: &Path) -> Option<u64> {
    limit_of(
        &memberships_of(std::process::id()),
        Path::new(V1_MEMORY_ROOT),
        v2_root,
    )
}

/// The memory limit that binds process `pid` (the lowest on its way to the root), if any and
/// if it still exists.
pub(crate) fn limit_of_pid(pid: u32, v2_root: &Path) -> Option<u64> {
    limit_of(&memberships_of(pid), Path::new(V1_MEMORY_ROOT), v2_root)
}

fn limit_of(memberships: &[CgroupMembership], v1_root: &Path, v2_root: &Path) -> Option<u64> {
    let v1 = memberships
        .iter()
        .find(|m| m.hierarchy != 0 && m.controllers.iter().any(|c| c == "memory"));
    let (root, path, file) = match v1 {
        Some(m) => (v1_root, &m.path, "memory.limit_in_bytes"),
        None => (
            v2_root,
            &memberships.iter().find(|m| m.hierarchy == 0)?.path,
            "memory.max",
        ),
    };
    let mut dir = root.join(path.trim_start_matches('/'));
    let mut lowest: Option<u64> = None;
    loop {
        if let Some(limit) = std::fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|t| parse_limit(&t))
        {
            lowest = Some(lowest.map_or(limit, |l| l.min(limit)));
        }
        if dir == root || !dir.pop() || !dir.starts_with(root) {
            return lowest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::membership::parse_proc_cgroup;

    #[test]
    fn limits_parse_and_unlimited_is_none() {
        assert_eq!(parse_limit("268435456\n"), Some(256 << 20));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712"), None);
        assert_eq!(parse_limit("garbage"), None);
    }

    #[test]
    fn the_lowest_limit_up_the_tree_binds() {
        let root = std::env::temp_dir().join(format!("culprit-memlimit-{}", std::process::id()));
        let leaf = root.join("kubepods/pod1/ctr");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(root.join("kubepods/memory.max"), "max\n").unwrap();
        std::fs::write(root.join("kubepods/pod1/memory.max"), "134217728\n").unwrap();
        std::fs::write(leaf.join("memory.max"), "268435456\n").unwrap();
        let v2 = parse_proc_cgroup("0::/kubepods/pod1/ctr\n");
        assert_eq!(
            limit_of(&v2, Path::new("/nonexistent"), &root),
            Some(128 << 20)
        );
        // On a hybrid host the v1 memory controller's file is read instead.
        std::fs::write(leaf.join("memory.limit_in_bytes"), "67108864\n").unwrap();
        let v1 = parse_proc_cgroup("4:memory:/kubepods/pod1/ctr\n0::/\n");
        assert_eq!(
            limit_of(&v1, &root, Path::new("/nonexistent")),
            Some(64 << 20)
        );
        let none = parse_proc_cgroup("0::/\n");
        assert_eq!(limit_of(&none, Path::new("/nonexistent"), &root), None);
        std::fs::remove_dir_all(&root).ok();
    }
}
