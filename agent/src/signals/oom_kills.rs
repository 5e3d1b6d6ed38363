//! OOM kills as people read them: who was killed, in which cgroup (and so which pod and
//! container), under which limit. Resolved as soon as the record arrives: the victim is gone
//! moments later, and with it what /proc could say.

use std::path::Path;

use culprit_common::oom::OomRecord;
use serde::{Deserialize, Serialize};

use crate::host::{cgroups::CgroupPaths, k8s, membership, memory_limit, procfs};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OomKill {
    pub mono_ns: u64,
    pub pid: u32,
    pub comm: Option<String>,
    /// The victim's cgroup v2 path (relative to the root), when known.
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    /// The memory limit that bound the victim (the lowest on its cgroup's way to the root).
    pub memory_limit_bytes: Option<u64>,
    /// The process whose allocation ran out of memory, when it was not the victim.
    pub trigger_pid: Option<u32>,
    /// The trigger's cgroup v2 path: the memory cgroup at its limit, or one below it.
    pub trigger_cgroup: Option<String>,
    /// When it happened on the wall clock (Unix ms), as the live view places it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_ms: Option<u64>,
}

/// Kills kept for the reports and the live view; past it the oldest go (and are counted).
pub(crate) const MAX_PENDING_KILLS: usize = 1000;

fn name(comm: &[u8; 16]) -> Option<String> {
    let end = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
    (end > 0).then(|| String::from_utf8_lossy(&comm[..end]).into_owned())
}

pub(crate) fn resolve(rec: &OomRecord, paths: &mut CgroupPaths, v2_root: &Path) -> OomKill {
    let pid = rec.victim_pid;
    let own = rec.victim_cgroup_id != 0;
    let cgroup = own
        .then(|| paths.path_of(rec.victim_cgroup_id).map(str::to_string))
        .flatten()
        .or_else(|| membership::v2_path_of(pid));
    let identity = cgroup
        .as_deref()
        .or(membership::any_path_of(pid).as_deref())
        .map(k8s::parse);
    let trigger_pid = (rec.trigger_tgid != pid && !own).then_some(rec.trigger_tgid);
    // The kernel's figure, read at the kill; else the victim's own (or its trigger's, the same
    // memory cgroup) from cgroupfs, if they are still there.
    let memory_limit_bytes = (rec.memory_limit_bytes > 0)
        .then_some(rec.memory_limit_bytes)
        .or_else(|| memory_limit::limit_of_pid(pid, v2_root))
        .or_else(|| memory_limit::limit_of_pid(rec.trigger_tgid, v2_root));
    OomKill {
        mono_ns: rec.ts_ns,
        pid,
        comm: name(&rec.victim_comm).or_else(|| procfs::comm(pid)),
        cgroup,
        container_id: identity.as_ref().and_then(|i| i.container_id.clone()),
        pod_uid: identity.and_then(|i| i.pod_uid),
        memory_limit_bytes,
        trigger_pid,
        trigger_cgroup: paths.path_of(rec.trigger_cgroup_id).map(str::to_string),
        unix_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comm_is_read_up_to_its_nul() {
        let mut comm = [0u8; 16];
        comm[..5].copy_from_slice(b"java\0");
        assert_eq!(name(&comm).as_deref(), Some("java"));
        assert_eq!(name(&[0; 16]), None);
        assert_eq!(name(&[b'x'; 16]).as_deref(), Some("xxxxxxxxxxxxxxxx"));
    }
}
