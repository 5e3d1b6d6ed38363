//! The signals over one span's window, as the join reads them: a narrow, read-only view, so that
//! the join never mutates the signals and can be tested against a fixed picture.

use std::collections::BTreeMap;

use super::{
    intervals::union_ns,
    retransmits::RetransmitRow,
    serving_thread::{self, Candidate, Serving},
    span_context::{self, Split},
    state::Signals,
    thread_store::Breakdown,
};
use crate::kernel::watch::LiveState;

/// What the probes measured over one span's window.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Measured {
    pub(crate) wall_ns: u64,
    pub(crate) on_cpu_ns: u64,
    /// All run-queue waiting; `throttled_ns` is part of it.
    pub(crate) runq_ns: u64,
    pub(crate) throttled_ns: u64,
    pub(crate) off_cpu_ns: u64,
    /// The part of `off_cpu_ns` its thread slept while the waker was held in a run queue.
    pub(crate) waker_delay_ns: u64,
    /// The part of `off_cpu_ns` its thread slept while the waker waited throttled.
    pub(crate) waker_throttled_ns: u64,
    /// The part of `off_cpu_ns` its thread slept in the kernel's I/O wait.
    pub(crate) io_wait_ns: u64,
    /// The block device of most of that I/O wait (kernel `dev_t`), and its name (by the join).
    pub(crate) io_device: Option<u32>,
    pub(crate) disk_device: Option<String>,
    /// The part of `off_cpu_ns` its thread stalled on memory.
    pub(crate) memory_stall_ns: u64,
    /// The part of `off_cpu_ns` its thread slept in a page fault.
    pub(crate) fault_wait_ns: u64,
    /// The part of `on_cpu_ns` its thread spent reclaiming memory.
    pub(crate) reclaim_on_cpu_ns: u64,
    /// The part of `runq_ns` (not throttled) its thread waited in a memory stall.
    pub(crate) memory_runq_ns: u64,
    /// The part of `off_cpu_ns` its thread slept in `futex`, beyond its releasers' delays.
    pub(crate) lock_wait_ns: u64,
    /// The thread that released most of that lock wait, and its name (`comm (tid)`, by the
    /// join).
    pub(crate) lock_holder_tid: Option<u32>,
    pub(crate) lock_holder: Option<String>,
    /// Time the span's process spent waiting on retransmitted segments.
    pub(crate) retransmit_wait_ns: u64,
    pub(crate) retransmits: u64,
    pub(crate) retransmit_peer: Option<String>,
    /// The process that held the CPU longest while the span waited.
    pub(crate) neighbour_pid: Option<u32>,
    /// The process whose wakeups ended most of the span's time off CPU (0: interrupts).
    pub(crate) waker_pid: Option<u32>,
    /// Its name, `comm (pid)`, or `interrupt`: filled in by the join.
    pub(crate) waker: Option<String>,
    /// Its name, `comm (pid)`, and its container: filled in by the join, which caches them.
    pub(crate) neighbour: Option<String>,
    pub(crate) neighbour_container_id: Option<String>,
    /// `context` (its thread context tagged its intervals), `thread` (the span named it),
    /// `thread.inferred` (the kernel's facts named it) or `process` (nobody could tell: no
    /// thread's timeline is used).
    pub(crate) join: &'static str,
    /// The thread whose time was measured.
    pub(crate) tid: Option<u32>,
    /// Threads whose time was summed.
    pub(crate) threads: usize,
}

/// A process's threads and their live kernel state, for joining a batch of its spans.
#[derive(Debug, Default)]
pub(crate) struct ProcessView {
    pub(crate) threads: Vec<(u32, Option<LiveState>)>,
}

impl ProcessView {
    fn live(&self, tid: u32) -> Option<LiveState> {
        self.threads
            .iter()
            .find(|(t, _)| *t == tid)
            .and_then(|(_, l)| *l)
    }
}

/// What the join may ask of the signals.
pub(crate) trait WindowView {
    /// The threads of process `pid` with what the kernel holds for each right now: read once
    /// per batch of spans (a map walk, a system call per entry), then used for all of its spans.
    fn process_view(&self, pid: u32) -> ProcessView;

    /// What the probes saw of process `pid` between two monotonic times: of the intervals its
    /// threads' published contexts tag as the span's (`span`), else of its thread `tid`, else
    /// of the thread inferred to have served it.
    fn measure(
        &self,
        view: &ProcessView,
        pid: u32,
        span: Option<&SpanOwnership>,
        tid: Option<u32>,
        start_ns: u64,
        end_ns: u64,
    ) -> Measured;
}

/// Which context tags are a span's own: its own span id, or one of a span of its trace; and
/// which are known at all (a span the agent received).
pub(crate) struct SpanOwnership<'a> {
    pub(crate) own: &'a dyn Fn(u64) -> bool,
    pub(crate) known: &'a dyn Fn(u64) -> bool,
}

impl WindowView for Signals {
    fn process_view(&self, pid: u32) -> ProcessView {
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

    fn measure(
        &self,
        view: &ProcessView,
        pid: u32,
        span: Option<&SpanOwnership>,
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
        // Only the threads of a process whose context is read carry tags.
        let span = span.filter(|_| self.watch.contexts.publishes(pid));
        let by_context = span.and_then(|s| self.by_context(view, s, start_ns, end_ns));
        let mut total = match (by_context, tid) {
            (Some((tid, total)), _) => {
                m.join = "context";
                m.tid = Some(tid);
                total
            }
            (None, Some(tid)) => {
                m.join = "thread";
                m.tid = Some(tid);
                breakdown(tid, self.live_of(view, tid).as_ref())
            }
            (None, None) => match self.serving_thread(view, start_ns, end_ns) {
                Serving::Inferred(tid) => {
                    m.join = "thread.inferred";
                    m.tid = Some(tid);
                    breakdown(tid, self.live_of(view, tid).as_ref())
                }
                // Another request's thread would explain this one with its own time.
                Serving::Ambiguous => {
                    m.join = "process";
                    Breakdown::default()
                }
            },
        };
        // A span its thread's context never showed (it ran too briefly for any read) is not
        // charged what the context tags as other requests' time: it was suspended meanwhile.
        // A thread seen running other requests within the window interleaves them (an async
        // runtime): its time without a context is the runtime's, not this span's either.
        if let (Some(span), Some(tid), false) = (span, m.tid, m.join == "context") {
            let episodes =
                self.store
                    .episodes_after(tid, start_ns, end_ns, self.live_of(view, tid).as_ref());
            let split = Split {
                sample_period_ns: self.context_sample_period_ns,
                window_is_own: false,
            };
            // A tag of a span not received yet (its parent, sent after it) is not evidence of
            // another request.
            let other_request = |k: u64| k != 0 && !(span.own)(k) && (span.known)(k);
            let not_own = |k: u64| !(span.own)(k);
            if span_context::context_breakdown(&episodes, start_ns, end_ns, &other_request, split)
                .is_some()
                && let Some(others) =
                    span_context::context_breakdown(&episodes, start_ns, end_ns, &not_own, split)
            {
                span_context::exclude(&mut total, &others);
            }
        }
        m.on_cpu_ns = total.on_cpu_ns;
        m.runq_ns = total.runq_ns;
        m.throttled_ns = total.throttled_ns;
        m.off_cpu_ns = total.off_cpu_ns;
        m.waker_delay_ns = total.waker_delay_ns.min(total.off_cpu_ns);
        m.waker_throttled_ns = total
            .waker_throttled_ns
            .min(total.off_cpu_ns - m.waker_delay_ns);
        m.io_wait_ns = total.io_wait_ns.min(total.off_cpu_ns);
        m.io_device = total.top_io_device();
        m.memory_stall_ns = total.memory_stall_ns.min(total.off_cpu_ns);
        m.fault_wait_ns = total.fault_wait_ns.min(total.off_cpu_ns);
        m.reclaim_on_cpu_ns = total.reclaim_on_cpu_ns.min(total.on_cpu_ns);
        m.memory_runq_ns = total
            .memory_runq_ns
            .min(total.runq_ns.saturating_sub(total.throttled_ns));
        m.lock_wait_ns = total.lock_wait_ns.min(total.off_cpu_ns);
        m.lock_holder_tid = total.top_lock_holder();
        m.neighbour_pid = total.top_neighbours(1).first().map(|(npid, _)| *npid);
        m.waker_pid = total.top_waker();
        let endpoints = self.endpoints.get(&pid).map_or(&[][..], Vec::as_slice);
        // A stall on the connection to the agent's own receivers is the sender's telemetry
        // (an exporter's SYN retransmit when many connect at once): never a request's wait.
        let requests_own = |r: &&RetransmitRow| {
            ![&r.local, &r.remote]
                .iter()
                .any(|addr| port_of(addr).is_some_and(|p| self.telemetry_ports.contains(&p)))
        };
        let (wait_ns, count, peer) = retransmit_wait(
            self.recent_retransmits.iter().filter(requests_own),
            (pid, m.tid),
            endpoints,
            start_ns,
            end_ns,
        );
        m.retransmit_wait_ns = wait_ns;
        m.retransmits = count;
        m.retransmit_peer = peer;
        m
    }
}

/// The far end of a retransmitting connection as process `pid` sees it, if the connection is
/// one of its own. Its endpoints decide which side is the process's: the socket's recorded owner
/// can be wrong (a connection between two of its own threads, or an owner entry outliving its
/// socket). When both ends are the process's, the far end is the one on a port it does not
/// hold as a client: the port it dialled, not its own ephemeral one.
fn peer_of<'a>(r: &'a RetransmitRow, pid: u32, endpoints: &[String]) -> Option<&'a str> {
    let local_is_ours = endpoints.contains(&r.local);
    let remote_is_ours = endpoints.contains(&r.remote);
    match (local_is_ours, remote_is_ours) {
        (true, true) => Some(if is_ephemeral(&r.remote) && !is_ephemeral(&r.local) {
            r.local.as_str()
        } else {
            r.remote.as_str()
        }),
        (false, true) => Some(r.local.as_str()),
        (true, false) => Some(r.remote.as_str()),
        (false, false) => (r.pid == Some(pid)).then_some(r.remote.as_str()),
    }
}

/// Whether an `address:port` is on Linux's default ephemeral port range (32768-60999): the
/// port of a connection's client end.
fn is_ephemeral(endpoint: &str) -> bool {
    endpoint
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .is_some_and(|p| (32768..=60999).contains(&p))
}

/// How far from a span's start or end the clock read may be from the instant the kernel saw: the
/// wall-to-monotonic offset is re-measured every second and good to a microsecond or two.
const INSTANT_SLACK_NS: u64 = 5_000;

impl Signals {
    fn live_of(&self, view: &ProcessView, tid: u32) -> Option<LiveState> {
        view.live(tid)
            .or_else(|| self.watch.live(tid).map(|(_, l)| l))
    }

    /// The span's time from the intervals its process's published contexts tag as its own, with
    /// the thread that has most of them; `None` when no interval in the window is tagged so.
    fn by_context(
        &self,
        view: &ProcessView,
        span: &SpanOwnership,
        start_ns: u64,
        end_ns: u64,
    ) -> Option<(u32, Breakdown)> {
        let parts: Vec<(u32, Breakdown)> = view
            .threads
            .iter()
            .filter_map(|(tid, live)| {
                let episodes = self
                    .store
                    .episodes_after(*tid, start_ns, end_ns, live.as_ref());
                span_context::context_breakdown(
                    &episodes,
                    start_ns,
                    end_ns,
                    span.own,
                    Split {
                        sample_period_ns: self.context_sample_period_ns,
                        window_is_own: true,
                    },
                )
                .map(|b| (*tid, b))
            })
            .collect();
        let main = parts
            .iter()
            .max_by_key(|(tid, b)| (b.observed_ns(), std::cmp::Reverse(*tid)))?
            .0;
        let total = span_context::merge(
            parts.into_iter().map(|(_, b)| b).collect(),
            end_ns.saturating_sub(start_ns),
        );
        Some((main, total))
    }

    /// The thread of the process that served a span without a thread attribute, from what the
    /// kernel saw of each of its threads at the span's two instants.
    fn serving_thread(&self, view: &ProcessView, start_ns: u64, end_ns: u64) -> Serving {
        let candidates: Vec<Candidate> = view
            .threads
            .iter()
            .map(|(tid, live)| {
                let live = live.as_ref();
                // A state counts only if it held on both sides of the instant.
                let known = |t: u64| {
                    let before =
                        self.store
                            .state_at(*tid, t.saturating_sub(INSTANT_SLACK_NS), live);
                    let after = self.store.state_at(*tid, t + INSTANT_SLACK_NS, live);
                    (before == after).then_some(before).flatten()
                };
                Candidate {
                    tid: *tid,
                    at_start: known(start_ns),
                    at_end: known(end_ns.saturating_sub(1)),
                    on_cpu_ns: self.store.breakdown(*tid, start_ns, end_ns, live).on_cpu_ns,
                }
            })
            .collect();
        let serving = serving_thread::infer(&candidates);
        if serving == Serving::Ambiguous {
            log::debug!("no serving thread for [{start_ns}, {end_ns}): {candidates:?}");
        }
        serving
    }
}

/// Time process `pid` spent waiting on retransmitted segments within the window: its own
/// retransmits, and those of the other end of its connections (`endpoints`: its local TCP
/// endpoints). Each retransmit at `t` with cost `c` covers `[t - c, t]`. Also the count, and the
/// peer with most. With the span's serving thread known (`tid`), a connection of the process
/// that another of its threads is known to use (the socket's owner, seen sending or receiving on
/// it: an exporter's, a pool's) kept some other request waiting, not this one.
pub(crate) fn retransmit_wait<'a>(
    rows: impl IntoIterator<Item = &'a RetransmitRow>,
    (pid, tid): (u32, Option<u32>),
    endpoints: &[String],
    start_ns: u64,
    end_ns: u64,
) -> (u64, u64, Option<String>) {
    let mut intervals: Vec<(u64, u64)> = Vec::new();
    let mut peers: BTreeMap<&str, u64> = BTreeMap::new();
    for r in rows {
        let Some(peer) = peer_of(r, pid, endpoints) else {
            continue;
        };
        let another_threads = r.pid == Some(pid)
            && r.owner_from == "socket"
            && tid.is_some()
            && r.tid.is_some()
            && r.tid != tid;
        if another_threads {
            continue;
        }
        let lo = r.mono_ns.saturating_sub(r.cost_ns).max(start_ns);
        let hi = r.mono_ns.min(end_ns);
        if hi > lo {
            intervals.push((lo, hi));
            *peers.entry(peer).or_default() += 1;
        }
    }
    // Retransmits of one stall overlap: count covered time once.
    let count = intervals.len() as u64;
    let covered = union_ns(intervals);
    let peer = peers
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(p, _)| p.to_string());
    (covered, count, peer)
}

/// The port of an `address:port` endpoint.
fn port_of(endpoint: &str) -> Option<u16> {
    endpoint.rsplit(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    use crate::signals::interval::tests::row;

    #[test]
    fn an_endpoints_port_is_after_its_last_colon() {
        assert_eq!(port_of("127.0.0.1:4317"), Some(4317));
        assert_eq!(port_of("[::1]:4318"), Some(4318));
        assert_eq!(port_of("nowhere"), None);
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
        let (wait, n, peer) = retransmit_wait(&rows, (1, None), &[], 0, 5000);
        assert_eq!((wait, n, peer.as_deref()), (300, 2, Some("b:2")));
        // Clipped to the window.
        assert_eq!(retransmit_wait(&rows, (1, None), &[], 950, 1050).0, 100);
        assert_eq!(
            retransmit_wait(&rows, (1, None), &[], 2000, 3000),
            (0, 0, None)
        );
        // Process 7 holds b:2, the far end of process 99's retransmitting connection.
        let (wait, n, peer) = retransmit_wait(&rows, (7, None), &["b:2".to_string()], 0, 5000);
        assert_eq!((wait, n, peer.as_deref()), (300, 3, Some("a:1")));
    }

    #[test]
    fn a_connection_another_thread_of_the_process_uses_does_not_stall_this_span() {
        let mut r = row("a:1", "b:2", 200);
        r.mono_ns = 1000;
        (r.pid, r.tid, r.owner_from) = (Some(1), Some(11), "socket".into());
        let rows = VecDeque::from([r.clone()]);
        // Thread 11 uses the connection; a span served by thread 12 was not waiting on it.
        assert_eq!(retransmit_wait(&rows, (1, Some(11)), &[], 0, 5000).0, 200);
        assert_eq!(retransmit_wait(&rows, (1, Some(12)), &[], 0, 5000).0, 0);
        // Without a known serving thread, or an owner known only from /proc: the process's.
        assert_eq!(retransmit_wait(&rows, (1, None), &[], 0, 5000).0, 200);
        r.owner_from = "proc".into();
        let rows = VecDeque::from([r]);
        assert_eq!(retransmit_wait(&rows, (1, Some(12)), &[], 0, 5000).0, 200);
    }

    #[test]
    fn the_peer_is_named_from_the_waiting_processs_side() {
        let eps = |e: &[&str]| e.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // The downstream's socket, wrongly owned by the caller (a stale owner entry): the
        // caller's own ephemeral end is not its peer.
        let mut r = row("127.0.0.1:18090", "127.0.0.1:45000", 200);
        r.pid = Some(1);
        assert_eq!(
            peer_of(&r, 1, &eps(&["127.0.0.1:45000"])),
            Some("127.0.0.1:18090")
        );
        // Both ends the caller's (its own server thread): the port it dialled.
        assert_eq!(
            peer_of(&r, 1, &eps(&["127.0.0.1:45000", "127.0.0.1:18090"])),
            Some("127.0.0.1:18090")
        );
        let mut back = row("127.0.0.1:45000", "127.0.0.1:18090", 200);
        back.pid = Some(1);
        assert_eq!(
            peer_of(&back, 1, &eps(&["127.0.0.1:45000", "127.0.0.1:18090"])),
            Some("127.0.0.1:18090")
        );
        // Its own socket, endpoints not read yet.
        assert_eq!(peer_of(&back, 1, &[]), Some("127.0.0.1:18090"));
        // Somebody else's connection.
        assert_eq!(peer_of(&back, 2, &[]), None);
        assert!(is_ephemeral("[::1]:40000") && !is_ephemeral("10.0.0.1:8080"));
        assert!(!is_ephemeral("garbage"));
    }
}
