//! The watched processes' listeners at each report: how full each accept queue is, and how many
//! connections its network namespace's listeners refused in the interval (a full queue drops the
//! handshake's last ACK: the client's connect stalls for a retransmit it does not know about).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::host::{listeners, procfs};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerRow {
    pub pid: u32,
    pub local: String,
    /// Connections waiting to be accepted, at the report.
    pub queued: u32,
    /// Handshakes refused for a full accept queue in the interval, and all drops at a listener
    /// (`ListenOverflows`, `ListenDrops`): counted per network namespace by the kernel, so
    /// shared by the listeners of one namespace (a pod's).
    pub netns_overflows: u64,
    pub netns_drops: u64,
}

/// The kernel's counters per network namespace at the previous report.
#[derive(Debug, Default)]
pub(crate) struct ListenQueues {
    last: HashMap<u32, (u64, u64)>,
}

impl ListenQueues {
    /// The listeners of processes `tgids`, with their namespaces' refusals since the last call
    /// (none the first time a namespace is seen: no base to count from).
    pub(crate) fn rows(&mut self, tgids: &[u32]) -> Vec<ListenerRow> {
        let mut seen: HashMap<u32, (u64, u64)> = HashMap::new();
        let mut rows = Vec::new();
        for &pid in tgids {
            let found = listeners::listeners_of(pid);
            if found.is_empty() {
                continue;
            }
            let netns = procfs::netns_inode(&pid.to_string()).unwrap_or(0);
            let delta = *seen.entry(netns).or_insert_with(|| {
                let now = listeners::listen_drops_of(pid).unwrap_or_default();
                let before = self.last.insert(netns, now).unwrap_or(now);
                (
                    now.0.saturating_sub(before.0),
                    now.1.saturating_sub(before.1),
                )
            });
            rows.extend(found.into_iter().map(|l| ListenerRow {
                pid,
                local: l.local.to_string(),
                queued: l.queued,
                netns_overflows: delta.0,
                netns_drops: delta.1,
            }));
        }
        // Namespaces whose listeners are gone are forgotten.
        self.last.retain(|ns, _| seen.contains_key(ns));
        rows
    }
}
