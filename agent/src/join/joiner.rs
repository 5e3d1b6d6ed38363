//! Holds received spans until the kernel events of their window have arrived (bounded), then
//! adds the culprit attributes and hands them on, in arrival order. A span is never dropped or
//! delayed beyond the bound because signals are missing: it goes out with `culprit.cause =
//! unknown` and a low `culprit.coverage` instead.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value::Value, trace::v1::Span,
};
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedSemaphorePermit;

use super::{
    annotated::{self, SpanExtras},
    attribution::{Attribution, attribute},
    identity::{self, IdentifiedBy, Identifier, PROCESS_PID, Sender, Trust},
    recent_calls::{MAX_RECENT_CALLS, RecentCalls},
    resource::{Identity, annotate, mark_unidentified},
    retries,
    span_traces::SpanTraces,
};
use crate::{
    host::{
        block_devices,
        clock::{ClockOffset, monotonic_ns},
        k8s::IdentityCache,
        procfs,
    },
    kernel::connections::ConnectionOpeners,
    otlp::{self, Origin},
    signals::{ProcessView, SpanOwnership, WindowView},
};
use culprit_common::context::span_key;

/// Spans whose trace is remembered, for the thread-context join (~40 bytes each).
const MAX_TRACED_SPANS: usize = 65_536;

/// The span attribute naming the OS thread that served the span. Semantic conventions'
/// `thread.id` is the runtime's managed id (not the kernel's tid), so it is not used.
pub(crate) const THREAD_TID_ATTRIBUTE: &str = "culprit.thread.tid";

#[derive(Debug, Default)]
pub(crate) struct JoinStats {
    pub spans_joined: AtomicU64,
    /// Spans whose sender could not be identified: forwarded unchanged.
    pub spans_unidentified: AtomicU64,
    /// Joined spans whose sender the kernel named (`culprit.identity = verified`).
    pub spans_verified: AtomicU64,
    /// Spans whose payload contradicted the kernel-verified sender (its `process.pid`,
    /// `container.id` or `k8s.pod.uid`, or a `culprit.thread.tid` of another process).
    pub spans_identity_mismatch: AtomicU64,
    /// Joined spans by how their sender was identified, in [`IdentifiedBy::ALL`]'s order.
    pub spans_identified_by: [AtomicU64; IdentifiedBy::ALL.len()],
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinCounts {
    pub spans_joined: u64,
    pub spans_unidentified: u64,
    #[serde(default)]
    pub spans_verified: u64,
    #[serde(default)]
    pub spans_identity_mismatch: u64,
    /// Joined spans by how their sender was identified: `peer_credentials`,
    /// `connection_opener` and `socket_table` are verified, the `claimed_*` are not.
    #[serde(default)]
    pub spans_identified_by: std::collections::BTreeMap<String, u64>,
    /// Full /proc scans for senders refused because too many were asked for in a second.
    #[serde(default)]
    pub identity_scans_refused: u64,
    pub batches_held: u64,
}

/// One attributed span, as printed (`--output json`: one per line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanLine {
    pub trace_id: String,
    pub span_id: String,
    pub name: String,
    /// The resource's `service.name`.
    pub service: Option<String>,
    pub pid: u32,
    /// The thread whose time was measured: named by the span or inferred (`culprit.join`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    /// Start of the span on the kernel's monotonic clock (as in the agent's reports).
    pub start_mono_ns: u64,
    pub duration_ms: f64,
    pub attribution: Attribution,
}

/// A released request: the spans as received, their culprit attributes, and their lines.
pub(crate) struct Released {
    pub request: ExportTraceServiceRequest,
    pub extras: SpanExtras,
    pub lines: Vec<SpanLine>,
    pub spans: u64,
}

impl Released {
    /// The request with the attributes added, encoded for export.
    pub(crate) fn encode(&self) -> Vec<u8> {
        annotated::encode(&self.request, &self.extras)
    }
}

struct Held {
    release_at_ns: u64,
    request: ExportTraceServiceRequest,
    /// The sender of each `resource_spans` entry, where known.
    senders: Vec<Option<Sender>>,
    /// The request's share of the receivers' memory budget: returned when it is released.
    _budget: Option<OwnedSemaphorePermit>,
}

pub(crate) struct Joiner {
    hold_ns: u64,
    max_hold_ns: u64,
    held: VecDeque<Held>,
    identifier: Identifier,
    offset: ClockOffset,
    pub stats: Arc<JoinStats>,
    identities: IdentityCache,
    /// Command names of neighbours, so that naming one costs no file read per span.
    comms: HashMap<u32, String>,
    /// Block device names by `dev_t`, read once (a device is not renamed while it exists).
    devices: HashMap<u32, String>,
    node_name: Option<String>,
    /// The trace of recent spans: which thread-context tags are a span's own.
    traces: SpanTraces,
    /// The attempts of recent calls, for retries that arrive in a later batch.
    recent_calls: RecentCalls,
}

impl Joiner {
    /// Takes connection openers from the kernel's record: senders verified in any network
    /// namespace.
    pub(crate) fn with_connection_openers(
        mut self,
        openers: Box<dyn ConnectionOpeners + Send>,
    ) -> Self {
        self.identifier = Identifier::new(Some(openers));
        self
    }

    /// Names the node in `k8s.node.name` on every resource the agent identified.
    pub(crate) fn with_node_name(mut self, node_name: Option<String>) -> Self {
        self.node_name = node_name;
        self
    }

    pub(crate) fn new(hold: Duration, max_hold: Duration) -> Self {
        Self {
            hold_ns: hold.as_nanos() as u64,
            max_hold_ns: max_hold.as_nanos() as u64,
            held: VecDeque::new(),
            identifier: Identifier::default(),
            offset: ClockOffset::measure(),
            stats: Arc::new(JoinStats::default()),
            identities: IdentityCache::default(),
            comms: HashMap::new(),
            devices: HashMap::new(),
            node_name: None,
            traces: SpanTraces::new(MAX_TRACED_SPANS),
            recent_calls: RecentCalls::new(MAX_RECENT_CALLS),
        }
    }

    pub(crate) fn remeasure_clock(&mut self) {
        self.offset = ClockOffset::measure();
        // Longer than any span is held: a sender that exited keeps its identity until then.
        self.identities.expire(Duration::from_secs(30));
        // Pids are reused: names are re-read at most a second late. So are device numbers.
        self.comms.clear();
        self.devices.clear();
    }

    pub(crate) fn counts(&self) -> JoinCounts {
        JoinCounts {
            spans_joined: self.stats.spans_joined.load(Ordering::Relaxed),
            spans_unidentified: self.stats.spans_unidentified.load(Ordering::Relaxed),
            spans_verified: self.stats.spans_verified.load(Ordering::Relaxed),
            spans_identity_mismatch: self.stats.spans_identity_mismatch.load(Ordering::Relaxed),
            spans_identified_by: IdentifiedBy::ALL
                .iter()
                .zip(&self.stats.spans_identified_by)
                .map(|(by, n)| (by.key().to_string(), n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            identity_scans_refused: self.identifier.scans_refused(),
            batches_held: self.held.len() as u64,
        }
    }

    /// Takes a received request: identifies its senders and holds it until its spans' windows
    /// are covered. Returns the senders, for the signals to watch from now on.
    pub(crate) fn accept(
        &mut self,
        request: ExportTraceServiceRequest,
        origin: Origin,
        budget: Option<OwnedSemaphorePermit>,
    ) -> Vec<u32> {
        let mut senders = Vec::new();
        let now = monotonic_ns();
        let mut latest_end = 0;
        let identified = request
            .resource_spans
            .iter()
            .map(|rs| {
                let mut sender = self.identifier.identify(rs.resource.as_ref(), origin);
                if let Some(sender) = &mut sender {
                    if !self.identities.knows(sender.pid) {
                        log::debug!(
                            "span sender {} identified by {}",
                            sender.pid,
                            sender.by.as_str()
                        );
                        // A new sender can be a reused pid: names are re-read from here on.
                        self.comms.clear();
                    }
                    if sender.trust() == Trust::Verified {
                        sender.contradicted = identity::contradicted(
                            sender.pid,
                            rs.resource.as_ref(),
                            &mut self.identities,
                        );
                    }
                    if !sender.contradicted.is_empty() {
                        log::debug!(
                            "span sender {} ({}) contradicts its resource's {:?}",
                            sender.pid,
                            sender.by.as_str(),
                            sender.contradicted
                        );
                    }
                    if !senders.contains(&sender.pid) {
                        senders.push(sender.pid);
                    }
                    // Read now, while the sender surely exists.
                    self.identities.of(sender.pid);
                }
                for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                    latest_end = latest_end.max(self.offset.to_monotonic(span.end_time_unix_nano));
                    self.traces.note(span_key(&span.span_id), &span.trace_id);
                }
                sender
            })
            .collect();
        let release_at_ns = (latest_end + self.hold_ns).clamp(now, now + self.max_hold_ns);
        self.held.push_back(Held {
            release_at_ns,
            request,
            senders: identified,
            _budget: budget,
        });
        senders
    }

    /// Releases, in arrival order, every held request whose time has come (all of them with
    /// `force`), with the culprit attributes added.
    pub(crate) fn release(&mut self, signals: &impl WindowView, force: bool) -> Vec<Released> {
        let now = monotonic_ns();
        let mut out = Vec::new();
        // A sender's threads are read once per release, however many of its batches are due.
        let mut views: HashMap<u32, ProcessView> = HashMap::new();
        while self
            .held
            .front()
            .is_some_and(|h| force || h.release_at_ns <= now)
        {
            let Some(mut held) = self.held.pop_front() else {
                break;
            };
            let spans = held
                .request
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            let mut lines = Vec::with_capacity(spans);
            let mut extras = SpanExtras::with_capacity(spans);
            for (rs, sender) in held.request.resource_spans.iter_mut().zip(&held.senders) {
                let resource = rs.resource.get_or_insert_with(Default::default);
                let service = match otlp::attribute(&resource.attributes, "service.name") {
                    Some(Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                };
                let spans_here = rs.scope_spans.iter().map(|s| s.spans.len()).sum::<usize>();
                let Some(sender) = sender else {
                    mark_unidentified(resource);
                    (0..spans_here).for_each(|_| extras.push_none());
                    self.stats
                        .spans_unidentified
                        .fetch_add(spans_here as u64, Ordering::Relaxed);
                    continue;
                };
                let pid = sender.pid;
                let trust = sender.trust();
                let own_pid = sender
                    .contradicted
                    .contains(&PROCESS_PID)
                    .then(|| procfs::nspid(pid).last().copied().unwrap_or(pid));
                annotate(
                    resource,
                    &Identity {
                        trust,
                        k8s: self.identities.of(pid),
                        own_pid,
                        contradicted: &sender.contradicted,
                    },
                    self.node_name.as_deref(),
                );
                let view = views
                    .entry(pid)
                    .or_insert_with(|| signals.process_view(pid));
                let mut mismatched = if sender.contradicted.is_empty() {
                    0
                } else {
                    spans_here as u64
                };
                let spans_of_rs: Vec<&Span> =
                    rs.scope_spans.iter().flat_map(|s| &s.spans).collect();
                let attempts = retries::attempts(&spans_of_rs, &mut self.recent_calls);
                for (span, attempt) in spans_of_rs.into_iter().zip(attempts) {
                    let (mut line, foreign_thread) = self.attribute_span(span, pid, view, signals);
                    line.attribution.retry = attempt;
                    if foreign_thread && sender.contradicted.is_empty() {
                        mismatched += 1;
                    }
                    extras.push(&line.attribution);
                    line.service.clone_from(&service);
                    lines.push(line);
                }
                let add = |c: &AtomicU64, n: u64| {
                    c.fetch_add(n, Ordering::Relaxed);
                };
                add(&self.stats.spans_joined, spans_here as u64);
                if let Some(i) = IdentifiedBy::ALL.iter().position(|b| *b == sender.by) {
                    add(&self.stats.spans_identified_by[i], spans_here as u64);
                }
                if trust == Trust::Verified {
                    add(&self.stats.spans_verified, spans_here as u64);
                }
                add(&self.stats.spans_identity_mismatch, mismatched);
            }
            out.push(Released {
                request: held.request,
                extras,
                lines,
                spans: spans as u64,
            });
        }
        out
    }

    /// `comm (pid)`, the name read once per process or thread (`?` once it is gone).
    fn process_name(&mut self, pid: u32) -> String {
        let comm = self
            .comms
            .entry(pid)
            .or_insert_with(|| procfs::comm(pid).unwrap_or_else(|| "?".into()));
        format!("{comm} ({pid})")
    }

    /// The span's line, and whether it named a thread of another process (which is ignored).
    fn attribute_span(
        &mut self,
        span: &Span,
        pid: u32,
        view: &ProcessView,
        signals: &impl WindowView,
    ) -> (SpanLine, bool) {
        let start = self.offset.to_monotonic(span.start_time_unix_nano);
        let end = self.offset.to_monotonic(span.end_time_unix_nano);
        let claimed_tid = match otlp::attribute(&span.attributes, THREAD_TID_ATTRIBUTE) {
            Some(Value::IntValue(t)) => u32::try_from(*t).ok(),
            Some(Value::StringValue(s)) => s.parse().ok(),
            _ => None,
        };
        // A thread is the sender's only if the kernel says so: another process's thread would
        // show the span that process's kernel data.
        let tid = claimed_tid.filter(|&tid| {
            view.threads.iter().any(|(t, _)| *t == tid) || procfs::tgid_of(tid) == Some(pid)
        });
        let foreign_thread = claimed_tid.is_some() && tid.is_none();
        let key = span_key(&span.span_id);
        let traces = &self.traces;
        let own = |k: u64| k != 0 && (k == key || traces.in_trace(k, &span.trace_id));
        let known = |k: u64| k == key || traces.knows(k);
        let ownership = SpanOwnership {
            own: &own,
            known: &known,
        };
        let mut measured =
            signals.measure(view, pid, (key != 0).then_some(&ownership), tid, start, end);
        if let Some(npid) = measured.neighbour_pid {
            measured.neighbour = Some(self.process_name(npid));
            measured.neighbour_container_id = self.identities.of(npid).container_id.clone();
        }
        measured.waker = match measured.waker_pid {
            Some(0) => Some("interrupt".into()),
            Some(wpid) => Some(self.process_name(wpid)),
            None => None,
        };
        // Thread ids share the numbering of process ids: one cache names both.
        measured.lock_holder = measured.lock_holder_tid.map(|tid| self.process_name(tid));
        measured.disk_device = measured.io_device.map(|dev| {
            self.devices
                .entry(dev)
                .or_insert_with(|| block_devices::name(dev))
                .clone()
        });
        let attribution = attribute(&measured);
        let line = SpanLine {
            trace_id: hex(&span.trace_id),
            span_id: hex(&span.span_id),
            name: span.name.clone(),
            service: None,
            pid,
            tid: measured.tid,
            start_mono_ns: start,
            duration_ms: end.saturating_sub(start) as f64 / 1e6,
            attribution,
        };
        (line, foreign_thread)
    }
}

/// Lower-case hex, one allocation (this runs twice per span).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod hex_tests {
    #[test]
    fn hex_is_lower_case_and_padded() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(super::hex(&[]), "");
    }
}
