//! Which cgroup has which slot of the kernel's per-CPU run-queue histograms (`RUNQ_HIST_CPU`),
//! and what each slot counted since the cgroup got it: the per-CPU counters are `u32` and wrap,
//! so each read is folded in as wrapping differences from the read before, into `u64` totals.

use std::collections::HashMap;

use culprit_common::{HIST_SLOTS, RunqCpuHist, RunqHist};

struct Slot {
    index: u32,
    /// The slot's per-CPU values as last read.
    last: Vec<RunqCpuHist>,
    /// What it counted since the cgroup got it, summed over CPUs.
    counted: RunqHist,
}

pub(crate) struct RunqSlots {
    /// Free slot indices, the lowest last (handed out first).
    free: Vec<u32>,
    by_cgroup: HashMap<u64, Slot>,
}

impl RunqSlots {
    pub(crate) fn new(capacity: u32) -> Self {
        Self {
            free: (0..capacity).rev().collect(),
            by_cgroup: HashMap::new(),
        }
    }

    /// Gives `cgroup_id` a free slot: its index, or `None` when it has one or none is free.
    pub(crate) fn assign(&mut self, cgroup_id: u64) -> Option<u32> {
        if cgroup_id == 0 || self.by_cgroup.contains_key(&cgroup_id) {
            return None;
        }
        let index = self.free.pop()?;
        self.by_cgroup.insert(
            cgroup_id,
            Slot {
                index,
                last: Vec::new(),
                counted: RunqHist::ZERO,
            },
        );
        Some(index)
    }

    /// Takes `cgroup_id`'s slot back: its index, if it had one.
    pub(crate) fn release(&mut self, cgroup_id: u64) -> Option<u32> {
        let slot = self.by_cgroup.remove(&cgroup_id)?;
        self.free.push(slot.index);
        Some(slot.index)
    }

    /// Every cgroup with a slot, with the slot's index.
    pub(crate) fn assigned(&self) -> Vec<(u64, u32)> {
        let mut all: Vec<(u64, u32)> = self
            .by_cgroup
            .iter()
            .map(|(cg, s)| (*cg, s.index))
            .collect();
        all.sort_unstable();
        all
    }

    /// Folds in a read of `cgroup_id`'s slot on every CPU. A CPU whose value is not (or not yet)
    /// the cgroup's counts nothing.
    pub(crate) fn fold(&mut self, cgroup_id: u64, per_cpu: &[RunqCpuHist]) {
        let Some(slot) = self.by_cgroup.get_mut(&cgroup_id) else {
            return;
        };
        slot.last.resize(per_cpu.len(), RunqCpuHist::empty(0));
        for (now, last) in per_cpu.iter().zip(slot.last.iter_mut()) {
            if now.cgroup_id != cgroup_id {
                continue;
            }
            let before = if last.cgroup_id == cgroup_id {
                *last
            } else {
                RunqCpuHist::empty(cgroup_id)
            };
            let counted = &mut slot.counted;
            counted.total_ns += now.total_ns.wrapping_sub(before.total_ns);
            for i in 0..HIST_SLOTS {
                let waits = u64::from(now.slots[i].wrapping_sub(before.slots[i]));
                counted.slots[i] += waits;
                counted.count += waits;
            }
            *last = *now;
        }
    }

    /// What `cgroup_id`'s slot counted since it got it (zero without a slot).
    pub(crate) fn counted(&self, cgroup_id: u64) -> RunqHist {
        self.by_cgroup
            .get(&cgroup_id)
            .map_or(RunqHist::ZERO, |s| s.counted)
    }
}

/// `a` plus `b`, slot by slot.
pub(crate) fn sum(a: &RunqHist, b: &RunqHist) -> RunqHist {
    let mut out = *a;
    out.count += b.count;
    out.total_ns += b.total_ns;
    for (o, x) in out.slots.iter_mut().zip(b.slots) {
        *o += x;
    }
    out
}

#[cfg(test)]
mod tests {
    use culprit_common::hist_slot;

    use super::*;

    fn on_cpu(cgroup_id: u64, waits_ns: &[u64]) -> RunqCpuHist {
        let mut h = RunqCpuHist::empty(cgroup_id);
        for &w in waits_ns {
            assert!(h.add(cgroup_id, w));
        }
        h
    }

    #[test]
    fn slots_are_handed_out_lowest_first_once_per_cgroup_and_come_back() {
        let mut s = RunqSlots::new(2);
        assert_eq!(s.assign(0), None, "cgroup id 0 is a free slot's");
        assert_eq!(s.assign(7), Some(0));
        assert_eq!(s.assign(7), None);
        assert_eq!(s.assign(8), Some(1));
        assert_eq!(s.assign(9), None, "full");
        assert_eq!(s.assigned(), vec![(7, 0), (8, 1)]);
        assert_eq!(s.release(7), Some(0));
        assert_eq!(s.release(7), None);
        assert_eq!(s.assign(9), Some(0));
    }

    #[test]
    fn reads_are_summed_over_cpus_as_differences() {
        let mut s = RunqSlots::new(4);
        s.assign(7);
        s.fold(7, &[on_cpu(7, &[1_000]), on_cpu(7, &[2_000, 3_000])]);
        let c = s.counted(7);
        assert_eq!((c.count, c.total_ns), (3, 6_000));
        // Read again with one more wait on CPU 0: only it is new.
        s.fold(7, &[on_cpu(7, &[1_000, 50]), on_cpu(7, &[2_000, 3_000])]);
        let c = s.counted(7);
        assert_eq!((c.count, c.total_ns), (4, 6_050));
        assert_eq!(c.slots[hist_slot(50)], 1);
        assert_eq!(c.slots.iter().sum::<u64>(), c.count);
        assert_eq!(s.counted(8), RunqHist::ZERO);
    }

    #[test]
    fn wrapped_counters_still_give_the_difference() {
        let mut s = RunqSlots::new(1);
        s.assign(7);
        let mut before = on_cpu(7, &[]);
        before.slots[hist_slot(5)] = u32::MAX - 1;
        before.total_ns = u64::MAX - 2;
        s.fold(7, &[before]);
        let first = s.counted(7);
        let mut after = before;
        for _ in 0..3 {
            assert!(after.add(7, 5));
        }
        s.fold(7, &[after]);
        let c = s.counted(7);
        assert_eq!(c.count - first.count, 3);
        assert_eq!(c.total_ns - first.total_ns, 15);
    }

    #[test]
    fn a_cpu_not_yet_given_the_cgroup_counts_nothing_until_it_is() {
        let mut s = RunqSlots::new(1);
        s.assign(7);
        // CPU 1 still holds the slot's previous owner (8) when first read.
        s.fold(7, &[on_cpu(7, &[10]), on_cpu(8, &[20, 30])]);
        assert_eq!(s.counted(7).count, 1);
        s.fold(7, &[on_cpu(7, &[10]), on_cpu(7, &[40])]);
        assert_eq!((s.counted(7).count, s.counted(7).total_ns), (2, 50));
        // Folding for a cgroup without a slot does nothing.
        s.fold(9, &[on_cpu(9, &[1])]);
        assert_eq!(s.counted(9), RunqHist::ZERO);
    }

    #[test]
    fn a_slot_given_anew_starts_from_zero() {
        let mut s = RunqSlots::new(1);
        s.assign(7);
        s.fold(7, &[on_cpu(7, &[10, 20])]);
        s.release(7);
        s.assign(8);
        s.fold(8, &[on_cpu(8, &[5])]);
        assert_eq!((s.counted(8).count, s.counted(8).total_ns), (1, 5));
    }

    #[test]
    fn sums_add_slot_by_slot() {
        let mut a = RunqHist::ZERO;
        a.count = 1;
        a.total_ns = 10;
        a.slots[3] = 1;
        let b = sum(&a, &a);
        assert_eq!((b.count, b.total_ns, b.slots[3]), (2, 20, 2));
    }
}
