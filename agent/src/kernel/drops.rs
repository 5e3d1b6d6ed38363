//! Reading the kernel side's loss counters.

use std::collections::BTreeMap;

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use culprit_common::{DropCounter, maps};

pub(crate) struct DropCounters {
    map: PerCpuArray<MapData, u64>,
}

impl DropCounters {
    pub(crate) fn new(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let map = ebpf
            .take_map(maps::DROPS)
            .context("DROPS map missing from the eBPF object")?;
        Ok(Self {
            map: PerCpuArray::try_from(map)?,
        })
    }

    /// Totals since load, summed over CPUs, by counter name.
    pub(crate) fn read(&self) -> BTreeMap<String, u64> {
        DropCounter::ALL
            .iter()
            .map(|&counter| {
                let total = self
                    .map
                    .get(&(counter as u32), 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (counter.name().to_string(), total)
            })
            .collect()
    }
}
