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

use super::{
    annotated::{self, SpanExtras},
    attribution::{Attribution, attribute},
    identity::Identifier,
    resource::annotate,
};
use crate::{
    host::{
        clock::{ClockOffset, monotonic_ns},
        k8s::IdentityCache,
        procfs,
    },
    otlp::{self, Origin},
    signals::{ProcessView, WindowView},
};

/// The span attribute naming the OS thread that served the span. Semantic conventions'
/// `thread.id` is the runtime's managed id (not the kernel's tid), so it is not used.
pub(crate) const THREAD_TID_ATTRIBUTE: &str = "culprit.thread.tid";

#[derive(Debug, Default)]
pub(crate) struct JoinStats {
    pub spans_joined: AtomicU64,
    /// Spans whose sender could not be identified: forwarded unchanged.
    pub spans_unidentified: AtomicU64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinCounts {
    pub spans_joined: u64,
    pub spans_unidentified: u64,
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
    pids: Vec<Option<u32>>,
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
    node_name: Option<String>,
}

impl Joiner {
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
            node_name: None,
        }
    }

    pub(crate) fn remeasure_clock(&mut self) {
        self.offset = ClockOffset::measure();
        // Longer than any span is held: a sender that exited keeps its identity until then.
        self.identities.expire(Duration::from_secs(30));
        // Pids are reused: names are re-read at most a second late.
        self.comms.clear();
    }

    pub(crate) fn counts(&self) -> JoinCounts {
        JoinCounts {
            spans_joined: self.stats.spans_joined.load(Ordering::Relaxed),
            spans_unidentified: self.stats.spans_unidentified.load(Ordering::Relaxed),
            batches_held: self.held.len() as u64,
        }
    }

    /// Takes a received request: identifies its senders and holds it until its spans' windows
    /// are covered. Returns the senders, for the signals to watch from now on.
    pub(crate) fn accept(
        &mut self,
        request: ExportTraceServiceRequest,
        origin: Origin,
    ) -> Vec<u32> {
        let mut senders = Vec::new();
        let now = monotonic_ns();
        let mut latest_end = 0;
        let pids = request
            .resource_spans
            .iter()
            .map(|rs| {
                let identified = self.identifier.identify(rs.resource.as_ref(), origin);
                if let Some((pid, by)) = identified
                    && !self.identities.knows(pid)
                {
                    log::debug!("span sender {pid} identified by {}", by.as_str());
                    // A new sender can be a reused pid: names are re-read from here on.
                    self.comms.clear();
                }
                let pid = identified.map(|(p, _)| p);
                if let Some(pid) = pid {
                    if !senders.contains(&pid) {
                        senders.push(pid);
                    }
                    // Read now, while the sender surely exists.
                    self.identities.of(pid);
                }
                for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                    latest_end = latest_end.max(self.offset.to_monotonic(span.end_time_unix_nano));
                }
                pid
            })
            .collect();
        let release_at_ns = (latest_end + self.hold_ns).clamp(now, now + self.max_hold_ns);
        self.held.push_back(Held {
            release_at_ns,
            request,
            pids,
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
            for (rs, pid) in held.request.resource_spans.iter_mut().zip(&held.pids) {
                let no_view = ProcessView::default();
                let view = match pid {
                    Some(p) => views.entry(*p).or_insert_with(|| signals.process_view(*p)),
                    None => &no_view,
                };
                if let Some(pid) = pid {
                    let identity = self.identities.of(*pid);
                    annotate(
                        rs.resource.get_or_insert_with(Default::default),
                        identity,
                        self.node_name.as_deref(),
                    );
                }
                let service = rs.resource.as_ref().and_then(|r| {
                    match otlp::attribute(&r.attributes, "service.name")? {
                        Value::StringValue(s) => Some(s.clone()),
                        _ => None,
                    }
                });
                for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                    match pid {
                        Some(pid) => {
                            let mut line = self.attribute_span(span, *pid, view, signals);
                            extras.push(&line.attribution);
                            line.service.clone_from(&service);
                            lines.push(line);
                            self.stats.spans_joined.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            extras.push_none();
                            self.stats
                                .spans_unidentified
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
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

    fn attribute_span(
        &mut self,
        span: &Span,
        pid: u32,
        view: &ProcessView,
        signals: &impl WindowView,
    ) -> SpanLine {
        let start = self.offset.to_monotonic(span.start_time_unix_nano);
        let end = self.offset.to_monotonic(span.end_time_unix_nano);
        let tid = match otlp::attribute(&span.attributes, THREAD_TID_ATTRIBUTE) {
            Some(Value::IntValue(t)) => u32::try_from(*t).ok(),
            Some(Value::StringValue(s)) => s.parse().ok(),
            _ => None,
        };
        let mut measured = signals.measure(view, pid, tid, start, end);
        if let Some(npid) = measured.neighbour_pid {
            let comm = self
                .comms
                .entry(npid)
                .or_insert_with(|| procfs::comm(npid).unwrap_or_else(|| "?".into()));
            measured.neighbour = Some(format!("{comm} ({npid})"));
            measured.neighbour_container_id = self.identities.of(npid).container_id.clone();
        }
        let attribution = attribute(&measured);
        SpanLine {
            trace_id: hex(&span.trace_id),
            span_id: hex(&span.span_id),
            name: span.name.clone(),
            service: None,
            pid,
            start_mono_ns: start,
            duration_ms: end.saturating_sub(start) as f64 / 1e6,
            attribution,
        }
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
