//! What the signals keep between reports, and how kernel records and new senders change it.

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
};

use culprit_common::{
    oom::OomRecord,
    tcp::{QueueRecord, RetransmitRecord},
    thread::SchedRecord,
};

use super::{
    listen_queues::ListenQueues,
    oom_kills::{self, OomKill},
    queue_reads::QueueReads,
    retransmits::{RetransmitResolver, RetransmitRow},
    runqueue::RunqCollector,
    thread_store::ThreadStore,
    throttling::{CpuStat, ThrottleMonitor},
};
use crate::{
    host::{cgroups::CgroupPaths, clock::monotonic_ns, procfs, sockets},
    kernel::{
        drops::DropCounters,
        watch::{LiveSnapshot, WatchSet},
    },
};

const ENDPOINTS_REFRESH_NS: u64 = 1_000_000_000;
const RECENT_RETRANSMITS_MAX: usize = 10_000;
const RECENT_RETRANSMITS_NS: u64 = 60_000_000_000;
/// Retransmits one report lists; past it (a flood of SYN-ACK retransmits to spoofed peers) they
/// still count against spans, and the rows left out are counted.
pub(super) const MAX_REPORTED_RETRANSMITS: usize = 10_000;

/// Everything the signals keep between reports.
pub(crate) struct Signals {
    pub(super) runq: RunqCollector,
    pub(super) drops: DropCounters,
    pub(super) paths: CgroupPaths,
    pub(super) store: ThreadStore,
    pub(super) watch: WatchSet,
    pub(super) throttle: ThrottleMonitor,
    pub(super) resolver: RetransmitResolver,
    pub(super) pending_retransmits: Vec<RetransmitRow>,
    /// Retransmits left out of reports since start (`MAX_REPORTED_RETRANSMITS`).
    pub(super) retransmits_unreported: u64,
    /// Retransmits of the last minute, for joining with spans.
    pub(super) recent_retransmits: VecDeque<RetransmitRow>,
    /// The watched processes' listeners, counted at each report.
    pub(super) listen_queues: ListenQueues,
    /// OOM kills since the last report, and those left out for the bound since start.
    pub(super) pending_oom_kills: Vec<OomKill>,
    pub(super) oom_kills_unreported: u64,
    /// Reads of requests that waited, per thread, for joining with the spans they began.
    pub(super) queue_reads: QueueReads,
    /// Local TCP endpoints of span senders: a retransmit by the other end of one of their
    /// connections delays them too.
    pub(super) endpoints: HashMap<u32, Vec<String>>,
    pub(super) retransmits_since_refresh: bool,
    pub(super) endpoints_read_ns: u64,
    pub(super) cgroup_prefix: Option<String>,
    pub(super) degraded: Vec<String>,
    pub(super) last_report_ns: u64,
    /// cpu.stat counters at the previous report, per watched cgroup.
    pub(super) last_cpu_stat: HashMap<PathBuf, CpuStat>,
    /// The context sampler's period, when it runs: where a change of thread context is placed.
    pub(super) context_sample_period_ns: Option<u64>,
    /// The ports of the agent's own OTLP receivers: connections to them carry telemetry.
    pub(super) telemetry_ports: Vec<u16>,
}

/// What the signals are built from: the kernel's maps and the host's cgroup tree.
pub(crate) struct Sources {
    pub(crate) runq: RunqCollector,
    pub(crate) drops: DropCounters,
    pub(crate) paths: CgroupPaths,
    pub(crate) store: ThreadStore,
    pub(crate) watch: WatchSet,
}

impl Signals {
    /// The context sampler runs at this period (see `--context-sample-hz`).
    pub(crate) fn with_context_sampling(mut self, period_ns: Option<u64>) -> Self {
        self.context_sample_period_ns = period_ns;
        self
    }

    pub(crate) fn new(
        sources: Sources,
        cgroup_prefix: Option<String>,
        degraded: Vec<String>,
    ) -> Self {
        let Sources {
            runq,
            drops,
            paths,
            store,
            watch,
        } = sources;
        Self {
            runq,
            drops,
            paths,
            store,
            watch,
            throttle: ThrottleMonitor::default(),
            resolver: RetransmitResolver::default(),
            pending_retransmits: Vec::new(),
            retransmits_unreported: 0,
            recent_retransmits: VecDeque::new(),
            queue_reads: QueueReads::default(),
            listen_queues: ListenQueues::default(),
            pending_oom_kills: Vec::new(),
            oom_kills_unreported: 0,
            endpoints: HashMap::new(),
            retransmits_since_refresh: false,
            endpoints_read_ns: 0,
            cgroup_prefix,
            degraded,
            last_report_ns: monotonic_ns(),
            last_cpu_stat: HashMap::new(),
            context_sample_period_ns: None,
            telemetry_ports: Vec::new(),
        }
    }

    /// Connections to these ports (the agent's OTLP receivers) are the senders' telemetry.
    pub(crate) fn with_telemetry_ports(mut self, ports: &[u16]) -> Self {
        self.telemetry_ports = ports.iter().copied().filter(|p| *p != 0).collect();
        self
    }

    pub(crate) fn on_sched(&mut self, rec: SchedRecord) {
        self.store.insert(rec);
    }

    pub(crate) fn on_oom(&mut self, rec: OomRecord) {
        let root = self.paths.root().to_path_buf();
        let kill = oom_kills::resolve(&rec, &mut self.paths, &root);
        log::warn!("OOM kill: {kill:?}");
        if self.pending_oom_kills.len() < oom_kills::MAX_PENDING_KILLS {
            self.pending_oom_kills.push(kill);
        } else {
            self.oom_kills_unreported += 1;
        }
    }

    pub(crate) fn on_queue_read(&mut self, rec: QueueRecord) {
        self.queue_reads.insert(&rec);
    }

    /// Queue reads dropped for the store's bounds, and rejected as impossible, since start.
    pub(crate) fn queue_read_losses(&self) -> (u64, u64) {
        (self.queue_reads.dropped, self.queue_reads.rejected)
    }

    pub(crate) fn on_retransmit(&mut self, rec: RetransmitRecord) {
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
        if self.pending_retransmits.len() < MAX_REPORTED_RETRANSMITS {
            self.pending_retransmits.push(row);
        } else {
            self.retransmits_unreported += 1;
        }
    }

    /// Starts per-thread accounting of a process (a span sender), if not yet watched.
    pub(crate) fn watch_pid(&mut self, pid: u32) {
        if self.watch.add_pid(pid) {
            self.refresh_watch();
        }
        self.endpoints.entry(pid).or_insert_with(|| {
            sockets::tcp_endpoints_of(pid)
                .iter()
                .map(ToString::to_string)
                .collect()
        });
    }

    /// Re-reads the TCP endpoints of the span senders. They only serve to match retransmits,
    /// so they are re-read only after new ones arrived.
    pub(crate) fn refresh_endpoints(&mut self) {
        if !std::mem::take(&mut self.retransmits_since_refresh) {
            return;
        }
        self.endpoints_read_ns = monotonic_ns();
        self.endpoints.retain(|pid, _| procfs::exists(*pid));
        let pids: Vec<u32> = self.endpoints.keys().copied().collect();
        for (pid, eps) in pids.iter().zip(sockets::tcp_endpoints_of_all(&pids)) {
            self.endpoints
                .insert(*pid, eps.iter().map(ToString::to_string).collect());
        }
    }

    /// The watched threads' live states, for `interval`.
    pub(crate) fn live_snapshot(&self) -> LiveSnapshot {
        self.watch.live_snapshot()
    }

    /// Re-reads the watch set and the cgroups whose throttling it follows.
    pub(crate) fn refresh_watch(&mut self) {
        self.watch.refresh();
        for dir in self.watch.cpu_cgroups.values() {
            self.throttle.watch(dir);
        }
    }

    pub(crate) fn poll_throttling(&mut self) {
        self.throttle.poll(monotonic_ns());
    }

    /// The kernel's cumulative run-queue histograms, by cgroup path.
    pub(crate) fn runq_cumulative(&mut self) -> Vec<(String, culprit_common::RunqHist)> {
        self.runq.cumulative(&mut self.paths)
    }

    /// Sets the baseline the first report is measured from.
    pub(crate) fn start(&mut self) {
        let _ = self.runq.collect(&mut self.paths);
        self.refresh_watch();
        self.poll_throttling();
        self.last_cpu_stat = self.cpu_stats();
        self.last_report_ns = monotonic_ns();
    }

    pub(super) fn cpu_stats(&self) -> HashMap<PathBuf, CpuStat> {
        self.throttle
            .watched()
            .filter_map(|d| Some((d.to_path_buf(), self.throttle.stat(d)?)))
            .collect()
    }

    /// Forgets retransmits too old to matter to any span still held.
    pub(super) fn expire_retransmits(&mut self, now_ns: u64) {
        self.queue_reads.expire(now_ns);
        let horizon = now_ns.saturating_sub(RECENT_RETRANSMITS_NS);
        while self
            .recent_retransmits
            .front()
            .is_some_and(|r| r.mono_ns < horizon)
        {
            self.recent_retransmits.pop_front();
        }
    }
}
