//! The signals over one span's window, as the join reads them: a narrow, read-only view, so that
//! the join never mutates the signals and can be tested against a fixed picture.

use super::{
    retransmit_wait::{port_of, retransmit_wait},
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
    /// The part of `on_cpu_ns` the hypervisor took from its thread's CPU.
    pub(crate) steal_ns: u64,
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
    /// Of the above, the time spent waiting on a retransmitted handshake (a SYN or SYN-ACK):
    /// a connect stalled, not a connection losing data.
    pub(crate) connect_retransmit_wait_ns: u64,
    /// How long the request waited before its thread read it, and the parts of that wait the
    /// reader spent in a run queue (throttled or not).
    pub(crate) queue_wait_ns: u64,
    pub(crate) queue_runq_ns: u64,
    pub(crate) queue_throttled_ns: u64,
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
                (Serving::Inferred(tid), total) => {
                    m.join = "thread.inferred";
                    m.tid = Some(tid);
                    total
                }
                // Another request's thread would explain this one with its own time.
                (Serving::Ambiguous, _) => {
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
            if span_context::context_breakdown(
                episodes.iter(),
                start_ns,
                end_ns,
                &other_request,
                split,
            )
            .is_some()
                && let Some(others) = span_context::context_breakdown(
                    episodes.iter(),
                    start_ns,
                    end_ns,
                    &not_own,
                    split,
                )
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
        // Reclaim is the kernel's own work on the CPU, steal the hypervisor's taking it: apart.
        m.steal_ns = total.steal_ns.min(total.on_cpu_ns - m.reclaim_on_cpu_ns);
        m.memory_runq_ns = total
            .memory_runq_ns
            .min(total.runq_ns.saturating_sub(total.throttled_ns));
        m.lock_wait_ns = total.lock_wait_ns.min(total.off_cpu_ns);
        m.lock_holder_tid = total.top_lock_holder();
        m.neighbour_pid = total.top_neighbours(1).first().map(|(npid, _)| *npid);
        m.waker_pid = total.top_waker();
        if let Some(tid) = m.tid
            && let Some(read) = self.queue_reads.before_span(tid, start_ns)
        {
            // What the reader did while the request waited: busy (on CPU with earlier requests,
            // or queued behind the process's other workers: the backlog), or itself waiting for
            // a CPU another process held (contention) or its quota denied (throttling).
            let wait_ns = read.wait_ns();
            let reader = self.store.breakdown(
                tid,
                read.arrived_ns,
                read.read_ns,
                self.live_of(view, tid).as_ref(),
            );
            m.queue_wait_ns = wait_ns;
            m.queue_throttled_ns = reader.throttled_ns.min(wait_ns);
            let behind_own_ns = reader.neighbours.get(pid).unwrap_or(0);
            m.queue_runq_ns = reader
                .runq_ns
                .saturating_sub(reader.throttled_ns)
                .saturating_sub(behind_own_ns)
                .min(wait_ns - m.queue_throttled_ns);
        }
        let endpoints = self.endpoints.get(&pid).map_or(&[][..], Vec::as_slice);
        // A stall on the connection to the agent's own receivers is the sender's telemetry
        // (an exporter's SYN retransmit when many connect at once): never a request's wait.
        let requests_own = |r: &&RetransmitRow| {
            ![&r.local, &r.remote]
                .iter()
                .any(|addr| port_of(addr).is_some_and(|p| self.telemetry_ports.contains(&p)))
        };
        // The window first: an integer compare, where the ports are parsed from text.
        let in_window = |r: &&RetransmitRow| {
            r.mono_ns > start_ns && r.mono_ns.saturating_sub(r.cost_ns) < end_ns
        };
        // A connect stall is told apart by the state the socket was in (a handshake's).
        let (wait_ns, count, peer, handshake_ns) = retransmit_wait(
            self.recent_retransmits
                .iter()
                .filter(in_window)
                .filter(requests_own),
            (pid, m.tid),
            endpoints,
            start_ns,
            end_ns,
        );
        m.retransmit_wait_ns = wait_ns;
        m.retransmits = count;
        m.retransmit_peer = peer;
        m.connect_retransmit_wait_ns = handshake_ns.min(wait_ns);
        m
    }
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
                    episodes.iter(),
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
    /// kernel saw of each of its threads at the span's two instants, with its breakdown of the
    /// window (the inferred thread's, else an empty one).
    fn serving_thread(
        &self,
        view: &ProcessView,
        start_ns: u64,
        end_ns: u64,
    ) -> (Serving, Breakdown) {
        let mut totals: Vec<Breakdown> = Vec::new();
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
                let (at_start, at_end) = (known(start_ns), known(end_ns.saturating_sub(1)));
                // A thread known asleep or queued at either instant did not read the clock
                // there, whatever it ran: most of a pool, whose windows are not worth a query.
                let total = if serving_thread::could_serve(at_start, at_end) {
                    self.store.breakdown(*tid, start_ns, end_ns, live)
                } else {
                    Breakdown::default()
                };
                let on_cpu_ns = total.on_cpu_ns;
                totals.push(total);
                Candidate {
                    tid: *tid,
                    at_start,
                    at_end,
                    on_cpu_ns,
                }
            })
            .collect();
        let serving = serving_thread::infer(&candidates);
        match serving {
            Serving::Inferred(tid) => {
                let at = candidates.iter().position(|c| c.tid == tid);
                let total = at.map(|i| totals.swap_remove(i)).unwrap_or_default();
                (serving, total)
            }
            Serving::Ambiguous => {
                log::debug!("no serving thread for [{start_ns}, {end_ns}): {candidates:?}");
                (serving, Breakdown::default())
            }
        }
    }
}
