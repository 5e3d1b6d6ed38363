//! What the signals saw over one report interval: per-cgroup run-queue delay, watched threads'
//! time, throttling next to `cpu.stat`, retransmits and kernel-side losses. The report adds the
//! OTLP pipeline's counts to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    intervals::union_ns, retransmits::RetransmitRow, runqueue::CgroupRunq, state::Signals,
    thread_store::Breakdown, throttling::ThrottleEpisode,
};
use super::{listen_queues::ListenerRow, oom_kills::OomKill};
use crate::{
    host::{clock::monotonic_ns, procfs},
    kernel::watch::LiveSnapshot,
};

/// The signals' part of one report.
#[derive(Debug, Clone, Default)]
pub(crate) struct Interval {
    /// The monotonic clock at the end of the interval.
    pub(crate) mono_ns: u64,
    pub(crate) cgroups: Vec<CgroupRunq>,
    pub(crate) threads: Vec<ThreadRow>,
    pub(crate) retransmits: Vec<RetransmitRow>,
    pub(crate) connections: Vec<ConnectionRow>,
    pub(crate) throttling: Vec<ThrottleRow>,
    pub(crate) oom_kills: Vec<OomKill>,
    pub(crate) listeners: Vec<ListenerRow>,
    pub(crate) drops: BTreeMap<String, u64>,
    pub(crate) degraded: Vec<String>,
}

/// Where one watched thread's time went in the interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadRow {
    pub tid: u32,
    pub pid: u32,
    pub comm: String,
    pub on_cpu_ns: u64,
    /// All run-queue waiting: `throttled_ns` + `contention_ns`.
    pub runq_ns: u64,
    pub throttled_ns: u64,
    pub contention_ns: u64,
    pub off_cpu_ns: u64,
    /// The part of `off_cpu_ns` the thread slept while its waker was held in a run queue
    /// behind a neighbour (the wake chain; the neighbour is among `neighbours`).
    #[serde(default)]
    pub waker_delay_ns: u64,
    /// The part of `off_cpu_ns` the thread slept while its waker waited throttled.
    #[serde(default)]
    pub waker_throttled_ns: u64,
    /// The part of `off_cpu_ns` the thread slept in the kernel's I/O wait (`io_schedule()`).
    #[serde(default)]
    pub io_wait_ns: u64,
    /// The part of `off_cpu_ns` the thread stalled on memory (reclaim, `memory.high`).
    #[serde(default)]
    pub memory_stall_ns: u64,
    /// The part of `off_cpu_ns` the thread slept in a page fault (a major fault's read).
    #[serde(default)]
    pub fault_wait_ns: u64,
    /// The part of `on_cpu_ns` the thread spent reclaiming memory.
    #[serde(default)]
    pub reclaim_on_cpu_ns: u64,
    /// The part of `on_cpu_ns` the hypervisor took from the thread's CPU (steal time).
    #[serde(default)]
    pub steal_ns: u64,
    /// The part of `off_cpu_ns` the thread slept in `futex`, beyond its releasers' delays.
    #[serde(default)]
    pub lock_wait_ns: u64,
    pub longest_on_cpu_ns: u64,
    pub longest_runq_ns: u64,
    pub longest_off_cpu_ns: u64,
    /// Who held the CPU while this thread waited, most time first.
    pub neighbours: Vec<NeighbourRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeighbourRow {
    pub pid: u32,
    pub comm: Option<String>,
    pub ns: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionRow {
    pub local: String,
    pub remote: String,
    pub pid: Option<u32>,
    pub retransmits: u64,
    pub cost_ns: u64,
}

/// One watched cgroup's throttling: the kernel's own `cpu.stat` counters next to what the
/// agent attributed to the watched threads in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThrottleRow {
    /// The directory whose `cpu.stat` was read (v1 `cpu` controller or v2).
    pub cgroup: String,
    pub nr_throttled: u64,
    pub cpu_stat_throttled_ns: u64,
    /// Sum of the throttled run-queue time of the watched threads in the cgroup.
    pub threads_throttled_ns: u64,
    /// Wall time during which at least one watched thread of the cgroup waited throttled:
    /// comparable to `cpu_stat_throttled_ns` (the sum counts one throttle once per thread).
    #[serde(default)]
    pub threads_throttled_wall_ns: u64,
    pub episodes: Vec<ThrottleEpisode>,
}

impl Signals {
    /// Everything seen since the previous call (or `start`), with the watched threads' states
    /// as `live` holds them: read after the records of what the threads did before (see the
    /// report tick in `daemon`), so that no closed interval is missing from both.
    pub(crate) fn interval(&mut self, live: &LiveSnapshot) -> Interval {
        let now_ns = monotonic_ns();
        let (start_ns, end_ns) = (self.last_report_ns, now_ns);
        self.last_report_ns = now_ns;
        self.poll_throttling();

        let mut cgroups = self.runq.collect(&mut self.paths);
        if let Some(prefix) = &self.cgroup_prefix {
            cgroups.retain(|c| c.cgroup.starts_with(prefix.as_str()));
        }
        let breakdowns = self.thread_breakdowns(live, start_ns, end_ns);
        let throttling = self.throttle_rows(live, &breakdowns, start_ns, end_ns);
        let threads = breakdowns
            .into_iter()
            .map(|(tid, tgid, b)| thread_row(tid, tgid, &b))
            .collect();
        let retransmits = std::mem::take(&mut self.pending_retransmits);
        let connections = connection_rows(&retransmits);
        let oom_kills = std::mem::take(&mut self.pending_oom_kills);
        let mut tgids: Vec<u32> = self.watch.live_all().map(|(_, tgid, _)| tgid).collect();
        tgids.sort_unstable();
        tgids.dedup();
        let listeners = self.listen_queues.rows(&tgids);
        let mut drops = self.drops.read();
        drops.insert("oom_kills_unreported".into(), self.oom_kills_unreported);
        drops.insert("thread_store_evicted".into(), self.store.evicted());
        drops.insert("retransmits_unreported".into(), self.retransmits_unreported);
        drops.insert(
            "thread_registration_failed".into(),
            self.watch.registration_failures,
        );
        drops.insert(
            "thread_context_unlocated".into(),
            self.watch.contexts.locate_failures,
        );
        self.store.expire(now_ns);
        self.expire_retransmits(now_ns);
        Interval {
            mono_ns: now_ns,
            cgroups,
            threads,
            retransmits,
            connections,
            throttling,
            oom_kills,
            listeners,
            drops,
            degraded: self.degraded.clone(),
        }
    }

    fn thread_breakdowns(
        &self,
        live: &LiveSnapshot,
        start_ns: u64,
        end_ns: u64,
    ) -> Vec<(u32, u32, Breakdown)> {
        let mut tids: Vec<u32> = live.keys().copied().collect();
        tids.extend(self.store.tids());
        tids.sort_unstable();
        tids.dedup();
        let mut rows: Vec<(u32, u32, Breakdown)> = tids
            .into_iter()
            .filter_map(|tid| {
                let live = live.get(&tid).copied();
                let tgid = live
                    .map(|(tgid, _)| tgid)
                    .filter(|&t| t != 0)
                    .or_else(|| self.store.tgid_of(tid))?;
                let b = self
                    .store
                    .breakdown(tid, start_ns, end_ns, live.as_ref().map(|(_, l)| l));
                (b.observed_ns() > 0).then_some((tid, tgid, b))
            })
            .collect();
        rows.sort_by_key(|(tid, tgid, _)| (*tgid, *tid));
        rows
    }

    fn throttle_rows(
        &mut self,
        live: &LiveSnapshot,
        breakdowns: &[(u32, u32, Breakdown)],
        start_ns: u64,
        end_ns: u64,
    ) -> Vec<ThrottleRow> {
        let mut episodes: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for ep in self.throttle.take_episodes() {
            episodes.entry(ep.cgroup.clone()).or_default().push(ep);
        }
        let now = self.cpu_stats();
        let rows = now
            .iter()
            .map(|(dir, stat)| {
                let before = self.last_cpu_stat.get(dir).copied().unwrap_or(*stat);
                let in_cgroup: Vec<&(u32, u32, Breakdown)> = breakdowns
                    .iter()
                    .filter(|(_, tgid, _)| self.watch.cpu_cgroups.get(tgid) == Some(dir))
                    .collect();
                let threads_throttled_ns = in_cgroup.iter().map(|(_, _, b)| b.throttled_ns).sum();
                let threads_throttled_wall_ns =
                    self.throttled_wall_ns(live, &in_cgroup, start_ns, end_ns);
                let cgroup = dir.display().to_string();
                ThrottleRow {
                    nr_throttled: stat.nr_throttled.saturating_sub(before.nr_throttled),
                    cpu_stat_throttled_ns: stat.throttled_ns.saturating_sub(before.throttled_ns),
                    threads_throttled_ns,
                    threads_throttled_wall_ns,
                    episodes: episodes.remove(&cgroup).unwrap_or_default(),
                    cgroup,
                }
            })
            .collect();
        self.last_cpu_stat = now;
        rows
    }

    /// Wall time during which at least one of the threads waited throttled: what the cgroup's
    /// own `cpu.stat` counts, whereas the threads' sum counts a throttle once per waiting thread.
    fn throttled_wall_ns(
        &self,
        live: &LiveSnapshot,
        threads: &[&(u32, u32, Breakdown)],
        start_ns: u64,
        end_ns: u64,
    ) -> u64 {
        let mut intervals = Vec::new();
        let mut unplaced_ns = 0;
        for (tid, _, _) in threads {
            let live = live.get(tid).copied();
            let (mut placed, short_ns) = self.store.throttled_intervals(
                *tid,
                start_ns,
                end_ns,
                live.as_ref().map(|(_, l)| l),
            );
            intervals.append(&mut placed);
            unplaced_ns += short_ns;
        }
        union_ns(intervals) + unplaced_ns
    }
}

fn thread_row(tid: u32, tgid: u32, b: &Breakdown) -> ThreadRow {
    ThreadRow {
        tid,
        pid: tgid,
        comm: procfs::comm(tid).unwrap_or_default(),
        on_cpu_ns: b.on_cpu_ns,
        runq_ns: b.runq_ns,
        throttled_ns: b.throttled_ns,
        contention_ns: b.contention_ns(),
        off_cpu_ns: b.off_cpu_ns,
        waker_delay_ns: b.waker_delay_ns,
        waker_throttled_ns: b.waker_throttled_ns,
        io_wait_ns: b.io_wait_ns,
        memory_stall_ns: b.memory_stall_ns,
        fault_wait_ns: b.fault_wait_ns,
        reclaim_on_cpu_ns: b.reclaim_on_cpu_ns,
        steal_ns: b.steal_ns,
        lock_wait_ns: b.lock_wait_ns,
        longest_on_cpu_ns: b.longest_on_cpu_ns,
        longest_runq_ns: b.longest_runq_ns,
        longest_off_cpu_ns: b.longest_off_cpu_ns,
        neighbours: b
            .top_neighbours(3)
            .into_iter()
            .map(|(pid, ns)| NeighbourRow {
                pid,
                comm: procfs::comm(pid),
                ns,
            })
            .collect(),
    }
}

/// Retransmits per connection, most first.
pub(crate) fn connection_rows(rows: &[RetransmitRow]) -> Vec<ConnectionRow> {
    let mut by_conn: BTreeMap<(String, String), ConnectionRow> = BTreeMap::new();
    for r in rows {
        let c = by_conn
            .entry((r.local.clone(), r.remote.clone()))
            .or_insert_with(|| ConnectionRow {
                local: r.local.clone(),
                remote: r.remote.clone(),
                pid: r.pid,
                retransmits: 0,
                cost_ns: 0,
            });
        c.retransmits += 1;
        c.cost_ns += r.cost_ns;
        c.pid = c.pid.or(r.pid);
    }
    let mut out: Vec<ConnectionRow> = by_conn.into_values().collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.retransmits));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn row(local: &str, remote: &str, cost_ns: u64) -> RetransmitRow {
        RetransmitRow {
            mono_ns: 0,
            kind: "segment".into(),
            state: "ESTABLISHED".into(),
            local: local.into(),
            remote: remote.into(),
            pid: Some(1),
            tid: None,
            comm: None,
            owner_from: "socket".into(),
            cost_ns,
            cost_from: "since_send".into(),
        }
    }

    #[test]
    fn connections_are_counted_and_ranked() {
        let rows = vec![
            row("a:1", "b:2", 10),
            row("a:1", "b:2", 20),
            row("c:3", "d:4", 5),
        ];
        let conns = connection_rows(&rows);
        assert_eq!(conns.len(), 2);
        assert_eq!(
            (
                conns[0].local.as_str(),
                conns[0].retransmits,
                conns[0].cost_ns
            ),
            ("a:1", 2, 30)
        );
        assert_eq!(conns[1].retransmits, 1);
        assert!(connection_rows(&[]).is_empty());
    }
}
