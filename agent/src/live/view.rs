//! What the agent has seen lately, kept for the local API: the recent decomposed requests and
//! reports, and the summaries built from them. Pure (the clock is a parameter), so that the API
//! contract is tested on fixed inputs.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

pub use super::vitals::{Health, TaskFailure};
use super::vitals::{LOOP_STUCK_AFTER_MS, Vitals};
use crate::{
    cause::Cause,
    join::{SpanLine, attribution::KERNEL_CAUSE_MIN_SHARE, parts::Parts},
    kernel::probes::{HookHealth, SignalHealth},
    report::{
        OtlpCounts, Report,
        series::{MAX_LABEL_BYTES, bounded},
    },
    signals::{OomKill, RetransmitRow, ThrottleRow},
};

/// Requests kept for the API, newest last.
pub const MAX_REQUESTS: usize = 20_000;
/// OOM kills kept for `culprit top`.
const MAX_KEPT_KILLS: usize = 20;
/// Reports kept (one per interval).
pub const MAX_REPORTS: usize = 120;
/// Retransmits kept per report: the view's peers come from these.
const MAX_KEPT_RETRANSMITS: usize = 500;
/// Summaries cover this much of the recent past unless asked otherwise.
pub const DEFAULT_WINDOW_MS: u64 = 60_000;

/// One decomposed request, as the API serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestView {
    pub trace_id: String,
    pub span_id: String,
    pub name: String,
    pub service: Option<String>,
    pub pid: u32,
    /// The process's cgroup v2 path, and the container id found in it, where there is one.
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
    /// When the agent released the span.
    pub seen_unix_ms: u64,
    pub duration_ms: f64,
    pub cause: Cause,
    pub cause_share: f64,
    pub parts: Parts,
    pub neighbour: Option<String>,
    pub retransmit_peer: Option<String>,
    pub retransmits: u64,
    /// Who woke its thread for most of its time off CPU (`culprit.waker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waker: Option<String>,
    /// The thread that released the lock it waited on (`culprit.lock.holder`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_holder: Option<String>,
    /// The block device of its I/O wait (`culprit.disk.device`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_device: Option<String>,
    pub join: String,
    pub coverage: f64,
}

/// Where a request's process lives, looked up once per process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    pub cgroup: Option<String>,
    pub container_id: Option<String>,
}

impl RequestView {
    /// The strings a sender chose are cut to `MAX_LABEL_BYTES`: the view's memory is bounded by
    /// its request count.
    pub fn new(line: &SpanLine, placement: &Placement, seen_unix_ms: u64) -> Self {
        let a = &line.attribution;
        let cut = |s: &str| bounded(s, MAX_LABEL_BYTES).to_string();
        Self {
            trace_id: cut(&line.trace_id),
            span_id: cut(&line.span_id),
            name: cut(&line.name),
            service: line.service.as_deref().map(cut),
            pid: line.pid,
            cgroup: placement.cgroup.clone(),
            container_id: placement.container_id.clone(),
            seen_unix_ms,
            duration_ms: line.duration_ms,
            cause: a.cause,
            cause_share: a.cause_share,
            parts: Parts::of(a, line.duration_ms),
            neighbour: a.neighbour.clone(),
            retransmit_peer: a.retransmit_peer.clone(),
            retransmits: a.retransmits,
            waker: a.waker.as_deref().map(cut),
            lock_holder: a.lock_holder.as_deref().map(cut),
            disk_device: a.disk_device.as_deref().map(cut),
            join: a.join.clone(),
            coverage: a.coverage,
        }
    }
}

/// A service's or a container's requests over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    /// The service name, or the container id (else the cgroup path).
    pub key: String,
    pub requests: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Total request time by part.
    pub time: Parts,
    /// The part with most time, a kernel cause as soon as it holds 10% of the time.
    pub dominant_cause: Cause,
    pub dominant_share: f64,
}

/// A process that held the CPU while requests waited for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeighbourView {
    /// `comm (pid)`.
    pub neighbour: String,
    /// Requests it delayed, and the contention time they had.
    pub requests: usize,
    pub contention_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThrottledView {
    pub cgroup: String,
    pub nr_throttled: u64,
    pub cpu_stat_throttled_ms: f64,
    /// Wall time a watched thread of the cgroup waited throttled.
    pub agent_throttled_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    /// The far end as seen from the local process.
    pub peer: String,
    pub retransmits: u64,
    pub cost_ms: f64,
    /// Local processes that had the connections, where known.
    pub pids: Vec<u32>,
}

/// Everything `culprit top` shows, in one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub now_unix_ms: u64,
    pub window_ms: u64,
    pub health: Health,
    pub services: Vec<GroupSummary>,
    pub containers: Vec<GroupSummary>,
    pub neighbours: Vec<NeighbourView>,
    pub throttled: Vec<ThrottledView>,
    pub retransmits: Vec<PeerView>,
    /// The slowest requests of the window, slowest first.
    pub slow_requests: Vec<RequestView>,
    /// The most recent OOM kills, whatever the window, newest last.
    #[serde(default)]
    pub oom_kills: Vec<OomKill>,
}

/// The agent-side facts that do not change while it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentFacts {
    pub version: String,
    pub kernel: String,
    pub started_unix_ms: u64,
    pub probes: Vec<HookHealth>,
    pub signals: Vec<SignalHealth>,
}

/// The parts of a report the view serves; the rest (per-cgroup and per-thread rows) would only
/// take memory.
struct KeptReport {
    unix_time_ms: u64,
    throttling: Vec<ThrottleRow>,
    retransmits: Vec<RetransmitRow>,
    drops: BTreeMap<String, u64>,
    otlp: OtlpCounts,
}

pub struct LiveView {
    facts: AgentFacts,
    requests: VecDeque<RequestView>,
    evicted: u64,
    reports: VecDeque<KeptReport>,
    placements: HashMap<u32, Placement>,
    tasks_failed: Vec<TaskFailure>,
    vitals: Option<Vitals>,
    oom_kills: VecDeque<OomKill>,
}

impl LiveView {
    pub fn new(facts: AgentFacts) -> Self {
        Self {
            facts,
            requests: VecDeque::new(),
            evicted: 0,
            reports: VecDeque::new(),
            placements: HashMap::new(),
            tasks_failed: Vec::new(),
            vitals: None,
            oom_kills: VecDeque::new(),
        }
    }

    /// Health then reads the event loop's heartbeat, the receivers and the exporter live.
    pub(crate) fn set_vitals(&mut self, vitals: Vitals) {
        self.vitals = Some(vitals);
    }

    /// Records that one of the agent's tasks stopped on its own: the agent runs degraded.
    pub fn on_task_ended(&mut self, task: &str, error: &str) {
        self.tasks_failed.push(TaskFailure {
            task: task.to_string(),
            error: error.to_string(),
        });
    }

    /// Records released spans; `place` finds a process's cgroup (called once per process).
    pub fn on_spans(
        &mut self,
        lines: &[SpanLine],
        now_unix_ms: u64,
        mut place: impl FnMut(u32) -> Placement,
    ) {
        for line in lines {
            let placement = self
                .placements
                .entry(line.pid)
                .or_insert_with(|| place(line.pid));
            self.requests
                .push_back(RequestView::new(line, placement, now_unix_ms));
            if self.requests.len() > MAX_REQUESTS {
                self.requests.pop_front();
                self.evicted += 1;
            }
        }
    }

    pub fn on_report(&mut self, report: &Report) {
        self.reports.push_back(KeptReport {
            unix_time_ms: report.unix_time_ms,
            throttling: report.throttling.clone(),
            retransmits: report.retransmits[..report.retransmits.len().min(MAX_KEPT_RETRANSMITS)]
                .to_vec(),
            drops: report.drops.clone(),
            otlp: report.otlp.clone(),
        });
        if self.reports.len() > MAX_REPORTS {
            self.reports.pop_front();
        }
        // A kill's wall-clock time, from the report's two clocks.
        self.oom_kills.extend(report.oom_kills.iter().map(|k| {
            OomKill {
                unix_ms: Some(
                    report
                        .unix_time_ms
                        .saturating_sub(report.mono_ns.saturating_sub(k.mono_ns) / 1_000_000),
                ),
                ..k.clone()
            }
        }));
        while self.oom_kills.len() > MAX_KEPT_KILLS {
            self.oom_kills.pop_front();
        }
        // Processes come and go: forget placements of those no request mentions any more.
        let live: std::collections::HashSet<u32> = self.requests.iter().map(|r| r.pid).collect();
        self.placements.retain(|pid, _| live.contains(pid));
    }

    fn recent(&self, now_unix_ms: u64, window_ms: u64) -> impl Iterator<Item = &RequestView> {
        let since = now_unix_ms.saturating_sub(window_ms);
        self.requests
            .iter()
            .filter(move |r| r.seen_unix_ms >= since)
    }

    fn recent_reports(
        &self,
        now_unix_ms: u64,
        window_ms: u64,
    ) -> impl Iterator<Item = &KeptReport> {
        let since = now_unix_ms.saturating_sub(window_ms);
        self.reports.iter().filter(move |r| r.unix_time_ms >= since)
    }

    pub fn health(&self, now_unix_ms: u64) -> Health {
        let last = self.reports.back();
        let f = &self.facts;
        let mut otlp = last.map(|r| r.otlp.clone()).unwrap_or_default();
        let (mut lag_ms, mut receivers) = (0, Vec::new());
        if let Some(v) = &self.vitals {
            lag_ms = v.heartbeat.lag_ms(now_unix_ms);
            receivers = v.ingress.bound();
            if let Some(export) = &v.export {
                otlp.export = export.snapshot();
            }
        }
        let alive = lag_ms < LOOP_STUCK_AFTER_MS && self.tasks_failed.is_empty();
        Health {
            version: f.version.clone(),
            kernel: f.kernel.clone(),
            started_unix_ms: f.started_unix_ms,
            uptime_s: now_unix_ms.saturating_sub(f.started_unix_ms) as f64 / 1e3,
            probes_attached: f.probes.iter().filter(|p| p.attached).count(),
            // A stand-in on standby is not needed here: "10/10 attached", not "10/11".
            probes_total: f.probes.iter().filter(|p| !p.standby).count(),
            probes: f.probes.clone(),
            signals: f.signals.clone(),
            degraded: f.signals.iter().any(|s| !s.ok) || !alive || otlp.export.failing(),
            alive,
            event_loop_lag_ms: lag_ms,
            receivers,
            tasks_failed: self.tasks_failed.clone(),
            events_lost: last.map(|r| r.drops.clone()).unwrap_or_default(),
            otlp,
            requests_kept: self.requests.len(),
            requests_evicted: self.evicted,
            last_report_unix_ms: last.map(|r| r.unix_time_ms),
        }
    }

    /// Requests of at least `min_ms`, newest first.
    pub fn requests(&self, limit: usize, min_ms: f64) -> Vec<RequestView> {
        self.requests
            .iter()
            .rev()
            .filter(|r| r.duration_ms >= min_ms)
            .take(limit)
            .cloned()
            .collect()
    }

    /// The requests of a trace (by trace id) or the one span (by span id); ids are hex and
    /// compared without regard to case.
    pub fn request(&self, id: &str) -> Vec<RequestView> {
        let id = id.to_ascii_lowercase();
        self.requests
            .iter()
            .filter(|r| r.trace_id == id || r.span_id == id)
            .cloned()
            .collect()
    }

    pub fn services(&self, now_unix_ms: u64, window_ms: u64) -> Vec<GroupSummary> {
        summarize_by(self.recent(now_unix_ms, window_ms), |r| {
            r.service.clone().or_else(|| Some(format!("pid {}", r.pid)))
        })
    }

    pub fn containers(&self, now_unix_ms: u64, window_ms: u64) -> Vec<GroupSummary> {
        summarize_by(self.recent(now_unix_ms, window_ms), |r| {
            r.container_id.clone().or_else(|| r.cgroup.clone())
        })
    }

    pub fn neighbours(&self, now_unix_ms: u64, window_ms: u64) -> Vec<NeighbourView> {
        let mut by: BTreeMap<&str, NeighbourView> = BTreeMap::new();
        for r in self.recent(now_unix_ms, window_ms) {
            let Some(n) = r.neighbour.as_deref() else {
                continue;
            };
            if r.parts.contention_ms <= 0.0 {
                continue;
            }
            let v = by.entry(n).or_insert_with(|| NeighbourView {
                neighbour: n.to_string(),
                requests: 0,
                contention_ms: 0.0,
            });
            v.requests += 1;
            v.contention_ms += r.parts.contention_ms;
        }
        let mut out: Vec<NeighbourView> = by.into_values().collect();
        out.sort_by(|a, b| b.contention_ms.total_cmp(&a.contention_ms));
        out
    }

    pub fn throttled(&self, now_unix_ms: u64, window_ms: u64) -> Vec<ThrottledView> {
        let mut by: BTreeMap<&str, ThrottledView> = BTreeMap::new();
        for row in self
            .recent_reports(now_unix_ms, window_ms)
            .flat_map(|r| &r.throttling)
        {
            let v = by.entry(&row.cgroup).or_insert_with(|| ThrottledView {
                cgroup: row.cgroup.clone(),
                nr_throttled: 0,
                cpu_stat_throttled_ms: 0.0,
                agent_throttled_ms: 0.0,
            });
            v.nr_throttled += row.nr_throttled;
            v.cpu_stat_throttled_ms += row.cpu_stat_throttled_ns as f64 / 1e6;
            v.agent_throttled_ms += row.threads_throttled_wall_ns as f64 / 1e6;
        }
        let mut out: Vec<ThrottledView> = by
            .into_values()
            .filter(|v| v.nr_throttled > 0 || v.cpu_stat_throttled_ms > 0.0)
            .collect();
        out.sort_by(|a, b| b.cpu_stat_throttled_ms.total_cmp(&a.cpu_stat_throttled_ms));
        out
    }

    pub fn retransmits(&self, now_unix_ms: u64, window_ms: u64) -> Vec<PeerView> {
        let mut by: BTreeMap<&str, PeerView> = BTreeMap::new();
        for row in self
            .recent_reports(now_unix_ms, window_ms)
            .flat_map(|r| &r.retransmits)
        {
            let v = by.entry(&row.remote).or_insert_with(|| PeerView {
                peer: row.remote.clone(),
                retransmits: 0,
                cost_ms: 0.0,
                pids: Vec::new(),
            });
            v.retransmits += 1;
            v.cost_ms += row.cost_ns as f64 / 1e6;
            if let Some(pid) = row.pid
                && !v.pids.contains(&pid)
            {
                v.pids.push(pid);
            }
        }
        let mut out: Vec<PeerView> = by.into_values().collect();
        out.sort_by(|a, b| b.retransmits.cmp(&a.retransmits).then(a.peer.cmp(&b.peer)));
        out
    }

    pub fn snapshot(&self, now_unix_ms: u64, window_ms: u64, slow_limit: usize) -> Snapshot {
        let mut slow: Vec<&RequestView> = self.recent(now_unix_ms, window_ms).collect();
        slow.sort_by(|a, b| b.duration_ms.total_cmp(&a.duration_ms));
        let slow: Vec<RequestView> = slow.into_iter().take(slow_limit).cloned().collect();
        Snapshot {
            now_unix_ms,
            window_ms,
            health: self.health(now_unix_ms),
            services: self.services(now_unix_ms, window_ms),
            containers: self.containers(now_unix_ms, window_ms),
            neighbours: self.neighbours(now_unix_ms, window_ms),
            throttled: self.throttled(now_unix_ms, window_ms),
            retransmits: self.retransmits(now_unix_ms, window_ms),
            slow_requests: slow,
            oom_kills: self.oom_kills.iter().cloned().collect(),
        }
    }
}

fn summarize_by<'a>(
    requests: impl Iterator<Item = &'a RequestView>,
    key: impl Fn(&RequestView) -> Option<String>,
) -> Vec<GroupSummary> {
    let mut groups: BTreeMap<String, Vec<&RequestView>> = BTreeMap::new();
    for r in requests {
        if let Some(k) = key(r) {
            groups.entry(k).or_default().push(r);
        }
    }
    let mut out: Vec<GroupSummary> = groups
        .into_iter()
        .map(|(key, rs)| {
            let mut time = Parts::default();
            rs.iter().for_each(|r| time.add(&r.parts));
            let durations: Vec<f64> = rs.iter().map(|r| r.duration_ms).collect();
            let (dominant, share) = time.dominant(KERNEL_CAUSE_MIN_SHARE);
            GroupSummary {
                key,
                requests: rs.len(),
                p50_ms: quantile(&durations, 0.5),
                p99_ms: quantile(&durations, 0.99),
                time,
                dominant_cause: dominant,
                dominant_share: share,
            }
        })
        .collect();
    // Worst tail first.
    out.sort_by(|a, b| b.p99_ms.total_cmp(&a.p99_ms).then(a.key.cmp(&b.key)));
    out
}

/// The `q` quantile (0..=1) by nearest rank; 0 when empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}
