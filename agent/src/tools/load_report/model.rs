//! What a load report says, computed from the agent's decomposed requests (and, for a load test,
//! the load generator's own latencies joined by trace id): pure arithmetic, tested here.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::{
    cause::{Cause, Part},
    join::parts::Parts,
    live::view::{RequestView, quantile},
};

/// One request as the load generator saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientRequest {
    pub trace_id: String,
    pub latency_ms: f64,
    /// The load generator's grouping (k6's `scenario` tag, or its test run id), if any.
    pub group: Option<String>,
}

/// A request in the report: the agent's decomposition of its entry span, with what the client
/// saw where a load generator's results were joined. Its parts add up to its latency: the span,
/// the wait before it, and (joined) the time outside the server as `unobserved`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRequest {
    pub trace_id: String,
    pub name: String,
    pub service: String,
    pub seen_unix_ms: u64,
    pub latency_ms: f64,
    /// The load generator's latency, when joined.
    pub client_ms: Option<f64>,
    pub group: Option<String>,
    pub cause: Cause,
    pub parts: Parts,
    pub neighbour: Option<String>,
    pub retransmit_peer: Option<String>,
    pub disk_device: Option<String>,
    pub lock_holder: Option<String>,
    pub cgroup: Option<String>,
}

/// Each trace's entry span (the longest of its spans the agent decomposed), joined with the
/// client's latency of the same trace where there is one.
pub fn requests(views: &[RequestView], client: &[ClientRequest]) -> Vec<ReportRequest> {
    let mut entry: HashMap<&str, &RequestView> = HashMap::new();
    for v in views {
        let e = entry.entry(&v.trace_id).or_insert(v);
        if v.duration_ms > e.duration_ms {
            *e = v;
        }
    }
    let by_trace: HashMap<&str, &ClientRequest> =
        client.iter().map(|c| (c.trace_id.as_str(), c)).collect();
    let mut out: Vec<ReportRequest> = entry
        .into_values()
        .map(|v| {
            let joined = by_trace.get(v.trace_id.as_str());
            let mut parts = v.parts;
            let server_ms = parts.total_ms();
            let latency_ms = match joined {
                Some(c) => {
                    // The time outside the server: the network and the client itself.
                    parts.unobserved_ms += (c.latency_ms - server_ms).max(0.0);
                    c.latency_ms.max(server_ms)
                }
                None => server_ms.max(v.duration_ms),
            };
            ReportRequest {
                trace_id: v.trace_id.clone(),
                name: v.name.clone(),
                service: v
                    .service
                    .clone()
                    .unwrap_or_else(|| format!("pid {}", v.pid)),
                seen_unix_ms: v.seen_unix_ms,
                latency_ms,
                client_ms: joined.map(|c| c.latency_ms),
                group: joined.and_then(|c| c.group.clone()),
                cause: v.cause,
                parts,
                neighbour: v.neighbour.clone(),
                retransmit_peer: v.retransmit_peer.clone(),
                disk_device: v.disk_device.clone(),
                lock_holder: v.lock_holder.clone(),
                cgroup: v.cgroup.clone(),
            }
        })
        .collect();
    out.sort_by_key(|r| r.seen_unix_ms);
    out
}

/// Who is behind a cause: the neighbour, the peer, the device, the lock's holder or the cgroup
/// a request names for it.
fn who(r: &ReportRequest, cause: Cause) -> Option<&str> {
    match cause {
        Cause::CpuContention => r.neighbour.as_deref(),
        Cause::TcpRetransmit | Cause::TcpConnectRetransmit => r.retransmit_peer.as_deref(),
        Cause::DiskIo | Cause::PageFault => r.disk_device.as_deref(),
        Cause::LockWait => r.lock_holder.as_deref(),
        Cause::CpuThrottling | Cause::MemoryReclaim => r.cgroup.as_deref(),
        Cause::QueueBacklog => Some(r.name.as_str()),
        Cause::CpuSteal => Some("the hypervisor"),
        _ => None,
    }
}

/// A cause's share of an excess, with who is behind it (most time first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CauseShare {
    pub cause: Cause,
    pub ms: f64,
    pub share: f64,
    pub who: Vec<(String, f64)>,
}

/// The typical request of each name: its median latency, and the mean parts of the requests no
/// slower than it (what a request has that is not excess).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Typical {
    pub median_ms: f64,
    pub parts: Parts,
}

/// How the excess latency of `slow` requests over their typical request splits by cause: a
/// part explains what it has over the typical request's (the request's own time explains its
/// excess only where it computed or slept longer), scaled down where the parts explain more
/// than the excess. The time outside the server (`unobserved`, joined) is a part like the
/// others.
pub fn excess_by_cause(
    slow: &[&ReportRequest],
    typical: &BTreeMap<String, Typical>,
) -> (f64, Vec<CauseShare>) {
    let mut total = 0.0;
    let mut by_part: BTreeMap<Part, f64> = BTreeMap::new();
    let mut who_by: BTreeMap<Part, BTreeMap<String, f64>> = BTreeMap::new();
    for r in slow {
        let base = typical.get(&r.name).cloned().unwrap_or_default();
        let excess = (r.latency_ms - base.median_ms).max(0.0);
        if excess <= 0.0 {
            continue;
        }
        total += excess;
        let capped: Vec<(Part, f64)> = r
            .parts
            .each()
            .map(|(p, ms)| (p, (ms - base.parts.get(p)).clamp(0.0, excess)))
            .collect();
        let sum: f64 = capped.iter().map(|c| c.1).sum();
        let scale = if sum > excess { excess / sum } else { 1.0 };
        for (part, ms) in capped {
            if ms <= 0.0 {
                continue;
            }
            *by_part.entry(part).or_default() += ms * scale;
            if let Some(name) = part.cause().and_then(|c| who(r, c)) {
                *who_by
                    .entry(part)
                    .or_default()
                    .entry(name.to_string())
                    .or_default() += ms * scale;
            }
        }
    }
    let mut shares: Vec<CauseShare> = by_part
        .into_iter()
        .map(|(part, ms)| {
            let mut who: Vec<(String, f64)> = who_by
                .remove(&part)
                .unwrap_or_default()
                .into_iter()
                .collect();
            who.sort_by(|a, b| b.1.total_cmp(&a.1));
            who.truncate(3);
            CauseShare {
                cause: part.cause().unwrap_or(Cause::Unknown),
                ms,
                share: if total > 0.0 { ms / total } else { 0.0 },
                who,
            }
        })
        .collect();
    shares.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    (total, shares)
}

/// The typical request per request name.
pub fn typical(requests: &[&ReportRequest]) -> BTreeMap<String, Typical> {
    let mut by_name: BTreeMap<String, Vec<&ReportRequest>> = BTreeMap::new();
    for r in requests {
        by_name.entry(r.name.clone()).or_default().push(r);
    }
    by_name
        .into_iter()
        .map(|(name, rs)| {
            let latencies: Vec<f64> = rs.iter().map(|r| r.latency_ms).collect();
            let median_ms = quantile(&latencies, 0.5);
            let mut sum = Parts::default();
            let mut n = 0usize;
            for r in rs.iter().filter(|r| r.latency_ms <= median_ms) {
                sum.add(&r.parts);
                n += 1;
            }
            let parts = sum.scaled(1.0 / n.max(1) as f64);
            (name, Typical { median_ms, parts })
        })
        .collect()
}

/// The slowest `fraction` of `requests` (at least one, when there are any).
pub fn slowest<'a>(requests: &[&'a ReportRequest], fraction: f64) -> Vec<&'a ReportRequest> {
    let latencies: Vec<f64> = requests.iter().map(|r| r.latency_ms).collect();
    let cut = quantile(&latencies, 1.0 - fraction);
    requests
        .iter()
        .copied()
        .filter(|r| r.latency_ms >= cut)
        .collect()
}

/// One service's part of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceReport {
    pub service: String,
    pub requests: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub total: Parts,
    /// The slowest 10%.
    pub slow_total: Parts,
    /// The p99 requests' excess over their names' medians, by cause.
    pub p99_excess_ms: f64,
    pub p99_by_cause: Vec<CauseShare>,
    /// Mean parts per request per time bin of `bin_s` seconds from the first request.
    pub bin_s: f64,
    pub bins: Vec<(f64, Parts)>,
    /// The slowest requests, slowest first.
    pub slowest: Vec<ReportRequest>,
    /// Every request's latency and the cause it was labelled with.
    pub histogram: Vec<(f64, Cause)>,
}

/// Bins a report's time axis is cut into at most.
const MAX_BINS: f64 = 60.0;
/// The slowest requests listed per service.
const SLOWEST_LISTED: usize = 10;

pub fn service_report(service: &str, requests: &[&ReportRequest]) -> ServiceReport {
    let latencies: Vec<f64> = requests.iter().map(|r| r.latency_ms).collect();
    let mut total = Parts::default();
    for r in requests {
        total.add(&r.parts);
    }
    let mut slow_total = Parts::default();
    for r in slowest(requests, 0.1) {
        slow_total.add(&r.parts);
    }
    let (p99_excess_ms, p99_by_cause) =
        excess_by_cause(&slowest(requests, 0.01), &typical(requests));
    let first = requests.iter().map(|r| r.seen_unix_ms).min().unwrap_or(0);
    let last = requests.iter().map(|r| r.seen_unix_ms).max().unwrap_or(0);
    let bin_s = ((last - first) as f64 / 1e3 / MAX_BINS).ceil().max(1.0);
    let mut sums: BTreeMap<u64, (Parts, usize)> = BTreeMap::new();
    for r in requests {
        let bin = ((r.seen_unix_ms - first) as f64 / 1e3 / bin_s) as u64;
        let e = sums.entry(bin).or_default();
        e.0.add(&r.parts);
        e.1 += 1;
    }
    let bins = sums
        .into_iter()
        .map(|(bin, (parts, n))| (bin as f64 * bin_s, parts.scaled(1.0 / n as f64)))
        .collect();
    let mut listed: Vec<ReportRequest> = requests.iter().map(|r| (*r).clone()).collect();
    listed.sort_by(|a, b| b.latency_ms.total_cmp(&a.latency_ms));
    listed.truncate(SLOWEST_LISTED);
    ServiceReport {
        service: service.to_string(),
        requests: requests.len(),
        p50_ms: quantile(&latencies, 0.5),
        p99_ms: quantile(&latencies, 0.99),
        total,
        slow_total,
        p99_excess_ms,
        p99_by_cause,
        bin_s,
        bins,
        slowest: listed,
        histogram: requests.iter().map(|r| (r.latency_ms, r.cause)).collect(),
    }
}

/// What the load generator saw, joined: its p99 and how its excess splits by cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientSummary {
    pub group: Option<String>,
    pub requests: usize,
    /// Client requests with a span the agent decomposed.
    pub joined: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p99_excess_ms: f64,
    pub p99_by_cause: Vec<CauseShare>,
}

/// Per load-generator group (all together when it has none), the client's view.
pub fn client_summaries(client: &[ClientRequest], joined: &[ReportRequest]) -> Vec<ClientSummary> {
    let mut groups: BTreeMap<Option<String>, (usize, Vec<&ReportRequest>)> = BTreeMap::new();
    for c in client {
        groups.entry(c.group.clone()).or_default().0 += 1;
    }
    for r in joined.iter().filter(|r| r.client_ms.is_some()) {
        groups.entry(r.group.clone()).or_default().1.push(r);
    }
    groups
        .into_iter()
        .map(|(group, (n, reqs))| {
            let latencies: Vec<f64> = reqs.iter().map(|r| r.latency_ms).collect();
            let (p99_excess_ms, p99_by_cause) =
                excess_by_cause(&slowest(&reqs, 0.01), &typical(&reqs));
            ClientSummary {
                group,
                requests: n,
                joined: reqs.len(),
                p50_ms: quantile(&latencies, 0.5),
                p99_ms: quantile(&latencies, 0.99),
                p99_excess_ms,
                p99_by_cause,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
