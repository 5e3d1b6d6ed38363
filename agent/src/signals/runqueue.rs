//! Run-queue delay per cgroup: the kernel keeps cumulative histograms, the agent reports what
//! changed between two reads.

use std::collections::HashMap as StdHashMap;

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{HashMap, MapData},
};
use culprit_common::{RunqHist, maps};
use serde::{Deserialize, Serialize};

use crate::{
    host::cgroups::CgroupPaths,
    signals::runq_quantile::{quantile_ns, slots_delta},
};

/// Run-queue waits over one report interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitStats {
    /// Times a thread waited for a CPU and got one.
    pub waits: u64,
    pub total_wait_ns: u64,
    pub mean_wait_ns: u64,
    pub p50_wait_ns: u64,
    pub p99_wait_ns: u64,
}

/// Run-queue delay of one cgroup over one report interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CgroupRunq {
    pub cgroup_id: u64,
    pub cgroup: String,
    #[serde(flatten)]
    pub stats: WaitStats,
}

/// What changed in one cgroup's histogram between two reads; `None` if nothing did.
pub(crate) fn interval_stats(now: &RunqHist, before: Option<&RunqHist>) -> Option<WaitStats> {
    let before = before.unwrap_or(&RunqHist::ZERO);
    let waits = now.count.saturating_sub(before.count);
    if waits == 0 {
        return None;
    }
    let total_ns = now.total_ns.saturating_sub(before.total_ns);
    let slots = slots_delta(&now.slots, &before.slots);
    Some(WaitStats {
        waits,
        total_wait_ns: total_ns,
        mean_wait_ns: total_ns / waits,
        p50_wait_ns: quantile_ns(&slots, 0.50)?,
        p99_wait_ns: quantile_ns(&slots, 0.99)?,
    })
}

pub(crate) struct RunqCollector {
    map: HashMap<MapData, u64, RunqHist>,
    previous: StdHashMap<u64, RunqHist>,
}

impl RunqCollector {
    pub(crate) fn new(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let map = ebpf
            .take_map(maps::RUNQ_HIST)
            .context("RUNQ_HIST map missing from the eBPF object")?;
        Ok(Self {
            map: HashMap::try_from(map)?,
            previous: StdHashMap::new(),
        })
    }

    /// Reads every cgroup's histogram and returns the activity since the previous call. Entries
    /// of cgroups that no longer exist are reported one last time, then removed from the map so
    /// it cannot fill up with the dead.
    pub(crate) fn collect(&mut self, paths: &mut CgroupPaths) -> Vec<CgroupRunq> {
        let mut rows = Vec::new();
        let mut gone = Vec::new();
        for entry in self.map.iter() {
            let Ok((cgroup_id, mut hist)) = entry else {
                // An entry removed between key and value lookup: nothing to report.
                continue;
            };
            hist.count = hist.slots.iter().sum();
            let path = paths.path_of(cgroup_id).map(str::to_owned);
            if let Some(stats) = interval_stats(&hist, self.previous.get(&cgroup_id)) {
                rows.push(CgroupRunq {
                    cgroup_id,
                    cgroup: path
                        .clone()
                        .unwrap_or_else(|| format!("(removed cgroup {cgroup_id})")),
                    stats,
                });
            }
            if path.is_none() {
                gone.push(cgroup_id);
            }
            self.previous.insert(cgroup_id, hist);
        }
        for cgroup_id in gone {
            let _ = self.map.remove(&cgroup_id);
            self.previous.remove(&cgroup_id);
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.stats.total_wait_ns));
        rows
    }
}

impl RunqCollector {
    /// The kernel's cumulative histogram of every cgroup seen so far (as of the last collect).
    pub(crate) fn cumulative(&self, paths: &mut CgroupPaths) -> Vec<(String, RunqHist)> {
        self.previous
            .iter()
            .map(|(id, h)| {
                let path = paths
                    .path_of(*id)
                    .map_or_else(|| format!("(removed cgroup {id})"), str::to_owned);
                (path, *h)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use culprit_common::hist_slot;

    use super::*;

    fn hist(values: &[u64]) -> RunqHist {
        let mut h = RunqHist::ZERO;
        for &v in values {
            h.count += 1;
            h.total_ns += v;
            h.slots[hist_slot(v)] += 1;
        }
        h
    }

    #[test]
    fn first_read_reports_everything() {
        let now = hist(&[1_000, 3_000]);
        let s = interval_stats(&now, None).unwrap();
        assert_eq!(
            (s.waits, s.total_wait_ns, s.mean_wait_ns),
            (2, 4_000, 2_000)
        );
        assert!(s.p50_wait_ns <= s.p99_wait_ns);
    }

    #[test]
    fn later_reads_report_only_the_difference() {
        let before = hist(&[1_000; 10]);
        let mut now = before;
        now.count += 1;
        now.total_ns += 1_000_000;
        now.slots[hist_slot(1_000_000)] += 1;
        let s = interval_stats(&now, Some(&before)).unwrap();
        assert_eq!((s.waits, s.total_wait_ns), (1, 1_000_000));
        assert!(
            s.p50_wait_ns >= 750_000,
            "p50 {} should come from the new sample only",
            s.p50_wait_ns
        );
    }

    #[test]
    fn quiet_cgroups_are_not_reported() {
        let h = hist(&[5; 3]);
        assert_eq!(interval_stats(&h, Some(&h)), None);
        assert_eq!(interval_stats(&RunqHist::ZERO, None), None);
    }
}
