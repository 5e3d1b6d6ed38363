//! Everything the agent keeps between reports, and the report it builds from it.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::PathBuf,
    time::Duration,
};

use culprit_common::{tcp::RetransmitRecord, thread::SchedRecord};

use crate::{
    cgroup_paths::CgroupPaths,
    clock::monotonic_ns,
    cpu_stat::ThrottleMonitor,
    drops::DropCounters,
    join::attribution::Measured,
    procfs,
    report::{ConnectionRow, NeighbourRow, Report, ThreadRow, ThrottleRow},
    retransmits::{RetransmitResolver, RetransmitRow},
    runqueue::RunqCollector,
    thread_store::{Breakdown, LiveState, ThreadStore},
    watch::WatchSet,
};

pub struct Collector {
    pub runq: RunqCollector,
    pub drops: DropCounters,
    pub paths: CgroupPaths,
    pub store: ThreadStore,
    pub watch: WatchSet,
    pub throttle: ThrottleMonitor,
    resolver: RetransmitResolver,
    pending_retransmits: Vec<RetransmitRow>,
    /// Retransmits of the last minute, for joining with spans.
    recent_retransmits: VecDeque<RetransmitRow>,
    /// Local TCP endpoints of span senders: a retransmit by the other end of one of their
    /// connections delays them too.
    endpoints: HashMap<u32, Vec<String>>,
    retransmits_since_refresh: bool,
    endpoints_read_ns: u64,
    /// Command names of neighbours, so that naming one costs no file read per span.
    comms: std::cell::RefCell<HashMap<u32, String>>,
    cgroup_prefix: Option<String>,
    degraded: Vec<String>,
    last_report_ns: u64,
    /// cpu.stat counters at the previous report, per watched cgroup.
    last_cpu_stat: HashMap<PathBuf, crate::cpu_stat::CpuStat>,
}

impl Collector {
    pub fn new(
        runq: RunqCollector,
        drops: DropCounters,
        paths: CgroupPaths,
        store: ThreadStore,
        watch: WatchSet,
        cgroup_prefix: Option<String>,
        degraded: Vec<String>,
    ) -> Self {
        Self {
            runq,
            drops,
            paths,
            store,
            watch,
            throttle: ThrottleMonitor::default(),
            resolver: RetransmitResolver::default(),
            pending_retransmits: Vec::new(),
            recent_retransmits: VecDeque::new(),
            endpoints: HashMap::new(),
            retransmits_since_refresh: false,
            endpoints_read_ns: 0,
            comms: std::cell::RefCell::new(HashMap::new()),
            cgroup_prefix,
            degraded,
            last_report_ns: monotonic_ns(),
            last_cpu_stat: HashMap::new(),
        }
    }

    pub fn on_sched(&mut self, rec: SchedRecord) {
        self.store.insert(rec);
    }

    pub fn on_retransmit(&mut self, rec: RetransmitRecord) {
        let row = self.resolver.row(&rec);
        if self.recent_retransmits.len() >= RECENT_RETRANSMITS_MAX {
            self.recent_retransmits.pop_front();
        }
        self.recent_retransmits.push_back(row.clone());
        self.retransmits_since_refresh = true;
        // The first retransmit after a quiet second refreshes at once, so that a connection
        // opened since the last read is matched from its first retransmit on.
        let now_ns = monotonic_ns();
        if now_ns.saturating_sub(self.endpoints_read_ns) >= ENDPOINTS_REFRESH_NS {
            self.refresh_endpoints();
        }
        self.pending_retransmits.push(row);
    }

    /// Starts per-thread accounting of a process (a span sender), if not yet watched.
    pub fn watch_pid(&mut self, pid: u32) {
        if self.watch.add_pid(pid) {
            self.refresh_watch();
        }
        self.endpoints.entry(pid).or_insert_with(|| {
            procfs::tcp_endpoints_of(pid)
                .iter()
                .map(ToString::to_string)
                .collect()
        });
    }

    /// Re-reads the TCP endpoints of the span senders. They only serve to match retransmits,
    /// so they are re-read only after new ones arrived.
    pub fn refresh_endpoints(&mut self) {
        if !std::mem::take(&mut self.retransmits_since_refresh) {
            return;
        }
        self.endpoints_read_ns = monotonic_ns();
        self.endpoints
            .retain(|pid, _| std::path::Path::new(&format!("/proc/{pid}")).exists());
        let pids: Vec<u32> = self.endpoints.keys().copied().collect();
        for (pid, eps) in pids.iter().zip(procfs::tcp_endpoints_of_all(&pids)) {
            self.endpoints
                .insert(*pid, eps.iter().map(ToString::to_string).collect());
        }
    }

    /// The threads of process `pid` with what the kernel holds for each right now: read once
    /// per batch of spans (a map walk, a system call per entry), then used for all of its spans.
    pub fn process_view(&self, pid: u32) -> ProcessView {
        let mut threads: Vec<(u32, Option<LiveState>)> = self
            .watch
            .live_all()
            .filter(|(_, tgid, _)| *tgid == pid)
            .map(|(tid, _, live)| (tid, Some(live)))
            .collect();
        // Threads that exited still have their history in the store.
        let known = threads.len();
        for tid in self.store.tids() {
            if self.store.tgid_of(tid) == Some(pid) && !threads[..known].iter().any(|t| t.0 == tid)
            {
                threads.push((tid, None));
            }
        }
        threads.sort_unstable_by_key(|t| t.0);
        ProcessView { threads }
    }

    /// What the probes saw of process `pid` (or of its thread `tid`) between two monotonic
    /// times.
    pub fn measure(
        &self,
        view: &ProcessView,
        pid: u32,
        tid: Option<u32>,
        start_ns: u64,
        end_ns: u64,
    ) -> Measured {
        let mut m = Measured {
            wall_ns: end_ns.saturating_sub(start_ns),
            ..Measured::default()
        };
        let breakdown =
            |tid: u32, live: Option<&LiveState>| self.store.breakdown(tid, start_ns, end_ns, live);
        m.threads = 1;
        let total = match tid {
            Some(tid) => {
                m.join = "thread";
                let live = view
                    .live(tid)
                    .or_else(|| self.watch.live(tid).map(|(_, l)| l));
                breakdown(tid, live.as_ref())
            }
            None => {
                // Without the thread's name, the thread that ran (or waited to run) most in the
                // window is taken as the one that served the span: summing every thread would
                // mix in the blocked time of idle helper threads.
                m.join = "process";
                view.threads
                    .iter()
                    .map(|(tid, live)| breakdown(*tid, live.as_ref()))
                    .max_by_key(|b| b.on_cpu_ns + b.runq_ns)
                    .unwrap_or_default()
            }
        };
        m.on_cpu_ns = total.on_cpu_ns;
        m.runq_ns = total.runq_ns;
        m.throttled_ns = total.throttled_ns;
        m.off_cpu_ns = total.off_cpu_ns;
        if let Some((npid, _)) = total.top_neighbours(1).first() {
            let mut comms = self.comms.borrow_mut();
            let comm = comms
                .entry(*npid)
                .or_insert_with(|| procfs::comm(*npid).unwrap_or_else(|| "?".into()));
            m.neighbour = Some(format!("{comm} ({npid})"));
        }
        let endpoints = self.endpoints.get(&pid).map_or(&[][..], Vec::as_slice);
        let (wait_ns, count, peer) =
            retransmit_wait(&self.recent_retransmits, pid, endpoints, start_ns, end_ns);
        m.retransmit_wait_ns = wait_ns;
        m.retransmits = count;
        m.retransmit_peer = peer;
        m
    }

    /// Re-reads the watch set and the cgroups whose throttling it follows.
    pub fn refresh_watch(&mut self) {
        // Pids are reused: names are re-read at most a second late.
        self.comms.get_mut().clear();
        self.watch.refresh();
        for dir in self.watch.cpu_cgroups.values() {
            self.throttle.watch(dir);
        }
    }

    pub fn poll_throttling(&mut self) {
        self.throttle.poll(monotonic_ns());
    }

    /// The kernel's cumulative run-queue histograms, by cgroup path.
    pub fn runq_cumulative(&mut self) -> Vec<(String, culprit_common::RunqHist)> {
        self.runq.cumulative(&mut self.paths)
    }

    /// Sets the baseline the first report is measured from.
    pub fn start(&mut self) {
        let _ = self.runq.collect(&mut self.paths);
        self.refresh_watch();
        self.poll_throttling();
        self.last_cpu_stat = self.cpu_stats();
        self.last_report_ns = monotonic_ns();
    }

    fn cpu_stats(&self) -> HashMap<PathBuf, crate::cpu_stat::CpuStat> {
        self.throttle
            .watched()
            .filter_map(|d| Some((d.to_path_buf(), self.throttle.stat(d)?)))
            .collect()
    }

    pub fn report(&mut self, interval: Duration) -> Report {
        let now_ns = monotonic_ns();
        let (start_ns, end_ns) = (self.last_report_ns, now_ns);
        self.last_report_ns = now_ns;
        self.poll_throttling();

        let mut report = Report::new(interval);
        report.mono_ns = now_ns;
        report.cgroups = self.runq.collect(&mut self.paths);
        if let Some(prefix) = &self.cgroup_prefix {
            report
                .cgroups
                .retain(|c| c.cgroup.starts_with(prefix.as_str()));
        }
        let breakdowns = self.thread_breakdowns(start_ns, end_ns);
        report.throttling = self.throttle_rows(&breakdowns, start_ns, end_ns);
        report.threads = breakdowns
            .into_iter()
            .map(|(tid, tgid, b)| thread_row(tid, tgid, &b))
            .collect();
        report.retransmits = std::mem::take(&mut self.pending_retransmits);
        report.connections = connection_rows(&report.retransmits);
        report.drops = self.drops.read();
        report
            .drops
            .insert("thread_store_evicted".into(), self.store.evicted());
        report.drops.insert(
            "thread_registration_failed".into(),
            self.watch.registration_failures,
        );
        report.degraded.clone_from(&self.degraded);
        self.store.expire(now_ns);
        let horizon = now_ns.saturating_sub(RECENT_RETRANSMITS_NS);
        while self
            .recent_retransmits
            .front()
            .is_some_and(|r| r.mono_ns < horizon)
        {
            self.recent_retransmits.pop_front();
        }
        report
    }

    fn thread_breakdowns(&self, start_ns: u64, end_ns: u64) -> Vec<(u32, u32, Breakdown)> {
        let mut tids: Vec<u32> = self.watch.tids();
        tids.extend(self.store.tids());
        tids.sort_unstable();
        tids.dedup();
        let mut rows: Vec<(u32, u32, Breakdown)> = tids
            .into_iter()
            .filter_map(|tid| {
                let live = self.watch.live(tid);
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
                    self.throttled_wall_ns(&in_cgroup, start_ns, end_ns);
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
        threads: &[&(u32, u32, Breakdown)],
        start_ns: u64,
        end_ns: u64,
    ) -> u64 {
        let mut intervals = Vec::new();
        let mut unplaced_ns = 0;
        for (tid, _, _) in threads {
            let live = self.watch.live(*tid);
            let (mut placed, short_ns) = self.store.throttled_intervals(
                *tid,
                start_ns,
                end_ns,
                live.as_ref().map(|(_, l)| l),
            );
            intervals.append(&mut placed);
            unplaced_ns += short_ns;
        }
        crate::intervals::union_ns(intervals) + unplaced_ns
    }
}

/// A process's threads and their live kernel state, for joining a batch of its spans.
#[derive(Debug, Default)]
pub struct ProcessView {
    pub threads: Vec<(u32, Option<LiveState>)>,
}

impl ProcessView {
    fn live(&self, tid: u32) -> Option<LiveState> {
        self.threads
            .iter()
            .find(|(t, _)| *t == tid)
            .and_then(|(_, l)| *l)
    }
}

const ENDPOINTS_REFRESH_NS: u64 = 1_000_000_000;
const RECENT_RETRANSMITS_MAX: usize = 10_000;
const RECENT_RETRANSMITS_NS: u64 = 60_000_000_000;

/// Time process `pid` spent waiting on retransmitted segments within the window: its own
/// retransmits, and those of the other end of its connections (`endpoints`: its local TCP
/// endpoints). Each retransmit at `t` with cost `c` covers `[t - c, t]`. Also the count, and the
/// peer with most.
pub fn retransmit_wait(
    rows: &VecDeque<RetransmitRow>,
    pid: u32,
    endpoints: &[String],
    start_ns: u64,
    end_ns: u64,
) -> (u64, u64, Option<String>) {
    let mut intervals: Vec<(u64, u64)> = Vec::new();
    let mut peers: BTreeMap<&str, u64> = BTreeMap::new();
    for r in rows.iter() {
        // The peer is the far end as seen from the span's process.
        let peer = if r.pid == Some(pid) {
            r.remote.as_str()
        } else if endpoints.contains(&r.remote) {
            r.local.as_str()
        } else {
            continue;
        };
        let lo = r.mono_ns.saturating_sub(r.cost_ns).max(start_ns);
        let hi = r.mono_ns.min(end_ns);
        if hi > lo {
            intervals.push((lo, hi));
            *peers.entry(peer).or_default() += 1;
        }
    }
    // Retransmits of one stall overlap: count covered time once.
    let count = intervals.len() as u64;
    let covered = crate::intervals::union_ns(intervals);
    let peer = peers
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(p, _)| p.to_string());
    (covered, count, peer)
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
pub fn connection_rows(rows: &[RetransmitRow]) -> Vec<ConnectionRow> {
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
mod tests {
    use super::*;

    fn row(local: &str, remote: &str, cost_ns: u64) -> RetransmitRow {
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
    fn retransmit_wait_counts_overlapping_stalls_once() {
        let mut rows = VecDeque::new();
        let mut r = row("a:1", "b:2", 200);
        r.mono_ns = 1000;
        rows.push_back(r.clone());
        r.mono_ns = 1100;
        rows.push_back(r.clone());
        r.pid = Some(99);
        rows.push_back(r);
        let (wait, n, peer) = retransmit_wait(&rows, 1, &[], 0, 5000);
        assert_eq!((wait, n, peer.as_deref()), (300, 2, Some("b:2")));
        // Clipped to the window.
        assert_eq!(retransmit_wait(&rows, 1, &[], 950, 1050).0, 100);
        assert_eq!(retransmit_wait(&rows, 1, &[], 2000, 3000), (0, 0, None));
        // Process 7 holds b:2, the far end of process 99's retransmitting connection.
        let (wait, n, peer) = retransmit_wait(&rows, 7, &["b:2".to_string()], 0, 5000);
        assert_eq!((wait, n, peer.as_deref()), (300, 3, Some("a:1")));
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
