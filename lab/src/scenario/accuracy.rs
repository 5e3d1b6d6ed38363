//! How well the agent's per-request decomposition matches the cause the lab injected: pure
//! arithmetic over the decomposed requests of one scenario.
//!
//! Definitions (ACCURACY.md repeats them):
//! - a request's *excess* is its latency minus the median latency of its route in the reference
//!   phase (the same service and load, nothing injected);
//! - the *slow* requests are those at or above the 90th latency percentile of their phase (the
//!   requests that started while the same fault, or none, was injected);
//! - *accuracy* is the share of the slow requests' excess that the agent attributed to the cause
//!   injected at the time (each request counts at most its own excess);
//! - the *label share* is the share of the slow requests really slowed (excess over
//!   [`SLOWED_FRACTION`] of their reference) on a route the fault reaches whose
//!   `culprit.cause` is the injected cause: the verdict a responder reads, not only the time
//!   behind it.

use std::collections::BTreeMap;

use culprit::cause::Cause;
pub use culprit::live::view::quantile;
pub use culprit::model::Parts;
use culprit::model::SpanLine;
use serde::{Deserialize, Serialize};

/// The causes the lab injects, named (in `culprit.cause` and in results.json) as the agent names
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "Cause", try_from = "Cause")]
pub enum Injected {
    Contention,
    Throttling,
    Retransmit,
    DiskIo,
    MemoryReclaim,
    PageFault,
    ConnectRetransmit,
    QueueBacklog,
}

impl Injected {
    pub fn cause(self) -> Cause {
        match self {
            Injected::Contention => Cause::CpuContention,
            Injected::Throttling => Cause::CpuThrottling,
            Injected::Retransmit => Cause::TcpRetransmit,
            Injected::DiskIo => Cause::DiskIo,
            Injected::MemoryReclaim => Cause::MemoryReclaim,
            Injected::PageFault => Cause::PageFault,
            Injected::ConnectRetransmit => Cause::TcpConnectRetransmit,
            Injected::QueueBacklog => Cause::QueueBacklog,
        }
    }

    pub fn cause_name(self) -> &'static str {
        self.cause().as_str()
    }

    /// Whether `verdict` names this fault: its own cause, or for lost packets a connect stall
    /// too (a handshake's packets are lost as well).
    pub fn named_by(self, verdict: Cause) -> bool {
        verdict == self.cause()
            || (self == Injected::Retransmit && verdict == Cause::TcpConnectRetransmit)
    }

    /// Whether the fault can slow a request of `route`: lost packets on the downstream
    /// connection slow only the requests that use it; a `/cpu` request slow in that phase was
    /// slowed by something else (seen: waiting for the CPU behind the service's other worker),
    /// and its label is no verdict on the fault.
    pub fn reaches(self, route: &str) -> bool {
        match self {
            Injected::Retransmit => [
                crate::service::server::DOWNSTREAM_ROUTE,
                crate::service::server::RETRY_ROUTE,
            ]
            .contains(&route),
            Injected::ConnectRetransmit => route == crate::service::server::CONNECT_ROUTE,
            _ => true,
        }
    }
}

impl Injected {
    /// The least a fault adds to a request it hits: a lost segment waits for a retransmit timer
    /// (200 ms at least), a lost SYN for a second. A request slowed by less was slowed by
    /// something else (seen: a `/connect` request 5 ms behind the service's other worker), and
    /// its label is no verdict on the fault.
    pub fn least_effect_ms(self) -> f64 {
        match self {
            Injected::Retransmit => 100.0,
            Injected::ConnectRetransmit => 500.0,
            _ => 0.0,
        }
    }
}

impl From<Injected> for Cause {
    fn from(i: Injected) -> Cause {
        i.cause()
    }
}

impl TryFrom<Cause> for Injected {
    type Error = String;

    fn try_from(c: Cause) -> Result<Self, String> {
        [
            Injected::Contention,
            Injected::Throttling,
            Injected::Retransmit,
            Injected::DiskIo,
            Injected::MemoryReclaim,
            Injected::PageFault,
            Injected::ConnectRetransmit,
            Injected::QueueBacklog,
        ]
        .into_iter()
        .find(|i| i.cause() == c)
        .ok_or_else(|| format!("the lab does not inject {c}"))
    }
}

/// The time `parts` attribute to `cause`.
fn explained_by(parts: &Parts, cause: Injected) -> f64 {
    match cause {
        Injected::Contention => parts.contention_ms,
        Injected::Throttling => parts.throttled_ms,
        // Lost packets lose handshakes too: a connection re-opened after a failure waits for
        // its SYN's retransmit, which the agent rightly names a connect stall.
        Injected::Retransmit => parts.retransmit_ms + parts.connect_retransmit_ms,
        Injected::DiskIo => parts.disk_io_ms,
        Injected::MemoryReclaim => parts.memory_reclaim_ms,
        Injected::PageFault => parts.page_fault_ms,
        Injected::ConnectRetransmit => parts.connect_retransmit_ms,
        Injected::QueueBacklog => parts.queue_ms,
    }
}

/// One decomposed request of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub trace_id: String,
    pub route: String,
    pub start_mono_ns: u64,
    pub latency_ms: f64,
    /// The agent's verdict (`culprit.cause`).
    pub cause: Cause,
    pub neighbour: Option<String>,
    /// Who woke its thread for most of its time off CPU (`culprit.waker`).
    #[serde(default)]
    pub waker: Option<String>,
    /// The block device of its I/O wait (`culprit.disk.device`).
    #[serde(default)]
    pub disk_device: Option<String>,
    /// The thread that released most of its lock wait (`culprit.lock.holder`).
    #[serde(default)]
    pub lock_holder: Option<String>,
    pub retransmit_peer: Option<String>,
    pub parts: Parts,
    /// What the lab injected when the request started, if anything.
    pub injected: Option<Injected>,
}

impl Request {
    pub(crate) fn from_span(s: &SpanLine, injected: Option<Injected>) -> Self {
        Self {
            trace_id: s.trace_id.clone(),
            route: s.name.clone(),
            start_mono_ns: s.start_mono_ns,
            latency_ms: s.duration_ms,
            cause: s.attribution.cause,
            neighbour: s.attribution.neighbour.clone(),
            waker: s.attribution.waker.clone(),
            lock_holder: s.attribution.lock_holder.clone(),
            disk_device: s.attribution.disk_device.clone(),
            retransmit_peer: s.attribution.retransmit_peer.clone(),
            parts: Parts::of(&s.attribution, s.duration_ms),
            injected,
        }
    }
}

/// Median latency per route.
pub(crate) fn route_medians(requests: &[Request]) -> BTreeMap<String, f64> {
    let mut by_route: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in requests {
        by_route
            .entry(r.route.clone())
            .or_default()
            .push(r.latency_ms);
    }
    by_route
        .into_iter()
        .map(|(route, l)| (route, quantile(&l, 0.5)))
        .collect()
}

/// The figures of one scenario's measured phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub requests: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// Total request time by part.
    pub total: Parts,
    /// Time by part over the slow (p90+) requests only.
    pub slow_total: Parts,
    pub slow_requests: usize,
    /// Share of all request time the agent blamed on a kernel cause.
    pub kernel_share: f64,
    /// Accuracy (see the module doc), when something was injected and the slow requests had
    /// excess latency.
    pub accuracy: Option<f64>,
    /// Excess latency of the slow requests, summed.
    pub slow_excess_ms: f64,
    /// The injected causes whose slow requests had excess, with each one's own accuracy.
    pub accuracy_by_cause: BTreeMap<String, f64>,
    /// Per injected cause, the share of its slowed slow requests labelled with it (see the
    /// module doc), when it had any.
    #[serde(default)]
    pub label_by_cause: BTreeMap<String, f64>,
    /// Requests under [`SHORT_REQUEST_MS`], and how many of them got a real decomposition
    /// (see [`decomposed`]).
    #[serde(default)]
    pub short_requests: usize,
    #[serde(default)]
    pub short_decomposed: usize,
}

/// A slow request counts in the label share only if its excess is over this fraction of its
/// route's reference: on EEVDF a woken thread often runs its whole request ahead of a hog, and a
/// phase's p90 can then hold requests the fault did not slow at all, rightly labelled `on_cpu`.
pub const SLOWED_FRACTION: f64 = 0.1;

/// Below this a request is "short": most microservice calls, and the hardest to decompose (its
/// thread's intervals are below the episode threshold).
pub const SHORT_REQUEST_MS: f64 = 1.0;

/// Whether a request's time was observed (at least 90% of it) and given a cause.
pub(crate) fn decomposed(r: &Request) -> bool {
    r.cause != Cause::Unknown && r.parts.unobserved_ms <= 0.1 * r.latency_ms
}

pub(crate) fn summarize(
    measured: &[Request],
    reference_medians: &BTreeMap<String, f64>,
) -> Summary {
    let latencies: Vec<f64> = measured.iter().map(|r| r.latency_ms).collect();
    let p90 = quantile(&latencies, 0.9);
    // In a scenario with several faults, each phase has its own slow requests: a packet loss
    // must not hide what contention did to its phase.
    let mut by_phase: BTreeMap<Option<Injected>, Vec<f64>> = BTreeMap::new();
    for r in measured {
        by_phase.entry(r.injected).or_default().push(r.latency_ms);
    }
    let phase_p90: BTreeMap<Option<Injected>, f64> = by_phase
        .into_iter()
        .map(|(k, v)| (k, quantile(&v, 0.9)))
        .collect();
    let mut total = Parts::default();
    let mut slow_total = Parts::default();
    let mut all_ms = 0.0;
    // Per cause: (excess, explained).
    let mut by_cause: BTreeMap<Injected, (f64, f64)> = BTreeMap::new();
    // Per cause: (slowed, labelled with it).
    let mut labels: BTreeMap<Injected, (usize, usize)> = BTreeMap::new();
    let mut slow_requests = 0;
    let mut slow_excess_ms = 0.0;
    for r in measured {
        total.add(&r.parts);
        all_ms += r.latency_ms;
        if r.latency_ms < phase_p90.get(&r.injected).copied().unwrap_or(p90) {
            continue;
        }
        slow_requests += 1;
        slow_total.add(&r.parts);
        let reference = reference_medians.get(&r.route).copied().unwrap_or(0.0);
        let excess = (r.latency_ms - reference).max(0.0);
        slow_excess_ms += excess;
        if let Some(cause) = r.injected {
            let e = by_cause.entry(cause).or_default();
            e.0 += excess;
            e.1 += explained_by(&r.parts, cause).min(excess);
            if excess > SLOWED_FRACTION * reference
                && excess >= cause.least_effect_ms()
                && cause.reaches(&r.route)
            {
                let l = labels.entry(cause).or_default();
                l.0 += 1;
                l.1 += usize::from(cause.named_by(r.cause));
            }
        }
    }
    let short: Vec<&Request> = measured
        .iter()
        .filter(|r| r.latency_ms < SHORT_REQUEST_MS)
        .collect();
    let (excess, explained) = by_cause
        .values()
        .fold((0.0, 0.0), |(e, x), (e2, x2)| (e + e2, x + x2));
    Summary {
        requests: measured.len(),
        p50_ms: quantile(&latencies, 0.5),
        p90_ms: p90,
        p99_ms: quantile(&latencies, 0.99),
        total,
        slow_total,
        slow_requests,
        kernel_share: if all_ms > 0.0 {
            total.kernel_ms() / all_ms
        } else {
            0.0
        },
        accuracy: (excess > 0.0).then(|| explained / excess),
        slow_excess_ms,
        accuracy_by_cause: by_cause
            .into_iter()
            .filter(|(_, (e, _))| *e > 0.0)
            .map(|(c, (e, x))| (c.cause_name().to_string(), x / e))
            .collect(),
        label_by_cause: labels
            .into_iter()
            .map(|(c, (n, l))| (c.cause_name().to_string(), l as f64 / n as f64))
            .collect(),
        short_requests: short.len(),
        short_decomposed: short.iter().filter(|r| decomposed(r)).count(),
    }
}

#[cfg(test)]
mod tests;
