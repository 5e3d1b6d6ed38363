//! Run-queue delay per cgroup: the kernel keeps cumulative histograms (shared per cgroup, and
//! per CPU for the cgroups given a slot), the agent reports what changed between two reads.

use std::collections::HashMap as StdHashMap;

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use culprit_common::{RUNQ_CPU_SLOTS, RunqCpuHist, RunqHist, maps};
use serde::{Deserialize, Serialize};

use crate::{
    host::cgroups::CgroupPaths,
    signals::{
        runq_quantile::{quantile_ns, slots_delta},
        runq_slots::{RunqSlots, sum},
    },
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
    /// Of `waits`, those the kernel counted in the cgroup's per-CPU slot (no hash lookup, no
    /// atomic add): all but the first interval's once the cgroup has one.
    #[serde(default)]
    pub waits_on_cpu_slot: u64,
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
    per_cpu: PerCpuArray<MapData, RunqCpuHist>,
    slot_of: HashMap<MapData, u64, u32>,
    slots: RunqSlots,
    cpus: usize,
    previous: StdHashMap<u64, RunqHist>,
    /// Per cgroup, the waits its slot had counted as of the previous call.
    previous_slot_waits: StdHashMap<u64, u64>,
}

impl RunqCollector {
    pub(crate) fn new(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("{name} map missing from the eBPF object"))
        };
        Ok(Self {
            map: HashMap::try_from(take(maps::RUNQ_HIST)?)?,
            per_cpu: PerCpuArray::try_from(take(maps::RUNQ_HIST_CPU)?)?,
            slot_of: HashMap::try_from(take(maps::RUNQ_SLOT_OF)?)?,
            slots: RunqSlots::new(RUNQ_CPU_SLOTS),
            cpus: nr_cpus().map_err(|(_, e)| e).context("possible CPUs")?,
            previous: StdHashMap::new(),
            previous_slot_waits: StdHashMap::new(),
        })
    }

    /// Reads every cgroup's histogram (shared, plus its per-CPU slot) and returns the activity
    /// since the previous call. Entries of cgroups that no longer exist are reported one last
    /// time, then removed, their slots freed, so nothing fills up with the dead. Cgroups seen
    /// on the shared histogram get a free slot, the busiest first.
    pub(crate) fn collect(&mut self, paths: &mut CgroupPaths) -> Vec<CgroupRunq> {
        let mut shared: StdHashMap<u64, RunqHist> = StdHashMap::new();
        // An entry removed between key and value lookup (an error): nothing to report.
        for (cgroup_id, mut hist) in self.map.iter().flatten() {
            hist.count = hist.slots.iter().sum();
            shared.insert(cgroup_id, hist);
        }
        let slotted = self.slots.assigned();
        for &(cgroup_id, index) in &slotted {
            if let Ok(values) = self.per_cpu.get(&index, 0) {
                self.slots.fold(cgroup_id, &values);
            }
        }
        let mut ids: Vec<u64> = shared.keys().copied().collect();
        ids.extend(
            slotted
                .iter()
                .map(|s| s.0)
                .filter(|c| !shared.contains_key(c)),
        );

        let mut rows = Vec::new();
        let mut gone = Vec::new();
        for cgroup_id in ids {
            let on_slot = self.slots.counted(cgroup_id);
            let hist = sum(shared.get(&cgroup_id).unwrap_or(&RunqHist::ZERO), &on_slot);
            let slot_waits_before = self
                .previous_slot_waits
                .insert(cgroup_id, on_slot.count)
                .unwrap_or(0);
            let path = paths.path_of(cgroup_id).map(str::to_owned);
            if let Some(stats) = interval_stats(&hist, self.previous.get(&cgroup_id)) {
                rows.push(CgroupRunq {
                    cgroup_id,
                    cgroup: path
                        .clone()
                        .unwrap_or_else(|| format!("(removed cgroup {cgroup_id})")),
                    stats,
                    waits_on_cpu_slot: on_slot.count.saturating_sub(slot_waits_before),
                });
            }
            if path.is_none() {
                gone.push(cgroup_id);
            }
            self.previous.insert(cgroup_id, hist);
        }
        for cgroup_id in gone {
            let _ = self.map.remove(&cgroup_id);
            shared.remove(&cgroup_id);
            self.previous.remove(&cgroup_id);
            self.previous_slot_waits.remove(&cgroup_id);
            if let Some(index) = self.slots.release(cgroup_id) {
                let _ = self.slot_of.remove(&cgroup_id);
                let _ = self.write_slot(index, 0);
            }
        }
        let mut candidates: Vec<(u64, u64)> = shared.iter().map(|(c, h)| (h.count, *c)).collect();
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        for (_, cgroup_id) in candidates {
            let Some(index) = self.slots.assign(cgroup_id) else {
                continue;
            };
            // The slot's per-CPU values first: the kernel only uses a slot it finds there.
            if self.write_slot(index, cgroup_id).is_err()
                || self.slot_of.insert(cgroup_id, index, 0).is_err()
            {
                self.slots.release(cgroup_id);
            }
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.stats.total_wait_ns));
        rows
    }

    /// Gives slot `index` to `cgroup_id` (0: frees it) on every CPU, counters at zero.
    fn write_slot(&mut self, index: u32, cgroup_id: u64) -> anyhow::Result<()> {
        let values = PerCpuValues::try_from(vec![RunqCpuHist::empty(cgroup_id); self.cpus])?;
        self.per_cpu.set(index, values, 0)?;
        Ok(())
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
