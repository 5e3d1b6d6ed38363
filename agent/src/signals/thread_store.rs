//! The per-thread, time-indexed store of what the kernel streamed: episodes and buckets of
//! on-CPU, run-queue and off-CPU time. Bounded in time (retention) and in memory (a record cap);
//! the oldest records go first and every eviction is counted.

use std::collections::{HashMap, VecDeque};

use culprit_common::thread::{SchedRecord, SpanTags, ThreadBucket, record, state};

use self::timeline::Timeline;
use super::{bucket_gaps, time_by_key::TimeByKey};
use crate::kernel::watch::LiveState;

/// Where a thread's time went over a window.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Breakdown {
    pub on_cpu_ns: u64,
    /// All run-queue waiting, throttled or not.
    pub runq_ns: u64,
    /// The part of `runq_ns` spent while the thread's cgroup was CFS-throttled.
    pub throttled_ns: u64,
    pub off_cpu_ns: u64,
    /// The part of `off_cpu_ns` the thread slept while its waker sat in a run queue behind a
    /// neighbour (the wake chain): contention through another thread.
    pub waker_delay_ns: u64,
    /// The part of `off_cpu_ns` the thread slept while its waker waited throttled (the wake
    /// chain): throttling through another thread.
    pub waker_throttled_ns: u64,
    /// The part of `off_cpu_ns` the thread slept in the kernel's I/O wait (`io_schedule()`).
    pub io_wait_ns: u64,
    /// The part of `off_cpu_ns` the thread stalled on memory (`in_memstall`).
    pub memory_stall_ns: u64,
    /// The part of `off_cpu_ns` the thread slept in a page fault.
    pub fault_wait_ns: u64,
    /// The part of `on_cpu_ns` the thread spent reclaiming memory.
    pub reclaim_on_cpu_ns: u64,
    /// The part of `on_cpu_ns` the hypervisor took from the thread's CPU (steal time).
    pub steal_ns: u64,
    /// The part of `runq_ns` (not throttled) the thread waited in a memory stall.
    pub memory_runq_ns: u64,
    /// The part of `off_cpu_ns` the thread slept in `futex`, beyond its releasers' delays.
    pub lock_wait_ns: u64,
    /// Block device (kernel `dev_t`) -> I/O wait on it (a major fault's read included).
    pub io_devices: TimeByKey,
    /// Releasing thread (tid) -> lock wait its wakeups ended.
    pub lock_holders: TimeByKey,
    /// Neighbour process (tgid) -> run-queue time it took from this thread or its wakers.
    pub neighbours: TimeByKey,
    /// Waking process (tgid; 0: a timer or device interrupt) -> time off CPU its wakeups ended.
    pub wakers: TimeByKey,
    pub longest_on_cpu_ns: u64,
    pub longest_runq_ns: u64,
    pub longest_off_cpu_ns: u64,
}

impl Breakdown {
    /// Run-queue time not explained by throttling or a memory stall.
    pub(crate) fn contention_ns(&self) -> u64 {
        self.runq_ns
            .saturating_sub(self.throttled_ns)
            .saturating_sub(self.memory_runq_ns)
    }

    pub(crate) fn observed_ns(&self) -> u64 {
        self.on_cpu_ns + self.runq_ns + self.off_cpu_ns
    }

    /// Adds `fraction` of a record's sums.
    pub(super) fn add(&mut self, b: &ThreadBucket, fraction: f64) {
        let part = |ns: u64| (ns as f64 * fraction).round() as u64;
        self.on_cpu_ns += part(b.on_cpu_ns);
        self.runq_ns += part(b.runq_ns);
        self.throttled_ns += part(b.throttled_ns);
        self.off_cpu_ns += part(b.off_cpu_ns);
        self.waker_delay_ns += part(b.waker_delay_ns);
        self.waker_throttled_ns += part(b.waker_throttled_ns);
        self.io_wait_ns += part(b.io_wait_ns);
        // A major fault's wait names the device it read from too.
        let device_ns = b.io_wait_ns + b.fault_wait_ns;
        if b.io_dev != 0 && device_ns > 0 {
            self.io_devices.add(b.io_dev, part(device_ns));
        }
        self.memory_stall_ns += part(b.memory_stall_ns);
        self.fault_wait_ns += part(b.fault_wait_ns);
        self.reclaim_on_cpu_ns += part(b.reclaim_on_cpu_ns);
        self.steal_ns += part(b.steal_ns);
        self.memory_runq_ns += part(b.memory_runq_ns);
        self.lock_wait_ns += part(b.lock_wait_ns);
        // The releaser is named for the lock wait and for what its own delays explain of it
        // (the chain through the lock): a bucket's waker parts are taken as its lock waits'.
        let through_lock_ns = b.lock_wait_ns + b.waker_delay_ns + b.waker_throttled_ns;
        if b.lock_waker_tid != 0 && through_lock_ns > 0 {
            self.lock_holders
                .add(b.lock_waker_tid, part(through_lock_ns));
        }
        if b.neighbour_ns > 0 {
            self.neighbours.add(b.neighbour_tgid, part(b.neighbour_ns));
        }
        if b.woken_by_ns > 0 {
            self.wakers.add(b.woken_by_tgid, part(b.woken_by_ns));
        }
        if b.waker_delay_ns > 0 {
            self.neighbours
                .add(b.waker_neighbour_tgid, part(b.waker_delay_ns));
        }
    }

    /// The process whose wakeups ended most of the time off CPU (0: interrupts), if any.
    pub(crate) fn top_waker(&self) -> Option<u32> {
        self.wakers.top()
    }

    /// The block device of most of the I/O wait, if known.
    pub(crate) fn top_io_device(&self) -> Option<u32> {
        self.io_devices.top()
    }

    /// The thread that released most of the lock wait, if any.
    pub(crate) fn top_lock_holder(&self) -> Option<u32> {
        self.lock_holders.top()
    }

    /// The neighbours by time taken, most first.
    pub(crate) fn top_neighbours(&self, n: usize) -> Vec<(u32, u64)> {
        let mut v: Vec<(u32, u64)> = self.neighbours.iter().collect();
        v.sort_by_key(|&(tgid, ns)| (std::cmp::Reverse(ns), tgid));
        v.truncate(n);
        v
    }
}

pub(crate) struct ThreadStore {
    threads: HashMap<u32, Timeline>,
    /// Arrival order of every stored record, for eviction oldest-first across threads.
    arrivals: VecDeque<(u32, u64)>,
    retention_ns: u64,
    max_records: usize,
    bucket_ns: u64,
    evicted: u64,
}

impl ThreadStore {
    pub(crate) fn new(retention_ns: u64, max_records: usize, bucket_ns: u64) -> Self {
        Self {
            threads: HashMap::new(),
            arrivals: VecDeque::new(),
            retention_ns,
            max_records: max_records.max(1),
            bucket_ns,
            evicted: 0,
        }
    }

    /// Records dropped because the store was full (expiry by age is not a loss).
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.arrivals.len()
    }

    pub(crate) fn tgid_of(&self, tid: u32) -> Option<u32> {
        self.threads.get(&tid).map(|t| t.tgid)
    }

    pub(crate) fn tids(&self) -> impl Iterator<Item = u32> + '_ {
        self.threads.keys().copied()
    }

    pub(crate) fn insert(&mut self, rec: SchedRecord) {
        if rec.kind == record::EXIT {
            return;
        }
        let timeline = self
            .threads
            .entry(rec.tid)
            .or_insert_with(|| Timeline::new(rec.tgid));
        if rec.tgid != 0 {
            timeline.tgid = rec.tgid;
        }
        timeline.push(rec);
        self.arrivals.push_back((rec.tid, rec.end_ns));
        while self.arrivals.len() > self.max_records {
            self.pop_oldest();
            self.evicted += 1;
        }
    }

    /// Drops records that ended before `now_ns - retention`.
    pub(crate) fn expire(&mut self, now_ns: u64) {
        let horizon = now_ns.saturating_sub(self.retention_ns);
        while self.arrivals.front().is_some_and(|&(_, end)| end < horizon) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        let Some((tid, _)) = self.arrivals.pop_front() else {
            return;
        };
        if let Some(t) = self.threads.get_mut(&tid) {
            t.pop_front();
            if t.records.is_empty() {
                self.threads.remove(&tid);
            }
        }
    }

    /// Where thread `tid`'s time went in `[start_ns, end_ns)`, from stored records plus, if
    /// given, what the kernel holds for it right now.
    pub(crate) fn breakdown(
        &self,
        tid: u32,
        start_ns: u64,
        end_ns: u64,
        live: Option<&LiveState>,
    ) -> Breakdown {
        let mut out = Breakdown::default();
        if end_ns <= start_ns {
            return out;
        }
        // The live interval (the thread's state right now) is accounted on its own, like an
        // episode.
        let current = live.and_then(|l| {
            (l.since_ns != 0 && l.since_ns < end_ns && l.state != state::UNKNOWN)
                .then(|| current_episode(l, end_ns))
        });
        // Newest first, back to the first episode that ended a bucket before the window: the
        // episodes that cover part of the window's buckets are needed to place the buckets' time.
        // Episodes are streamed as they end, so everything stored before one ended before it (a
        // bucket is streamed when it closes, so it never sits behind a newer episode).
        let horizon = start_ns.saturating_sub(self.bucket_ns);
        // Records starting a bucket or more after the window add nothing to it, nor place any
        // bucket that overlaps it.
        let after = end_ns.saturating_add(self.bucket_ns);
        // One walk: episodes count as they come; the buckets that meet the window wait for the
        // union of every episode walked, which places their time.
        let mut covered: Vec<(u64, u64)> = Vec::with_capacity(64);
        let mut buckets: Vec<&SchedRecord> = Vec::new();
        let walked = self.threads.get(&tid).into_iter().flat_map(|t| {
            t.starting_before(after)
                .rev()
                .take_while(|r| !(r.kind == record::EPISODE && r.end_ns <= horizon))
        });
        for rec in walked {
            if rec.kind == record::EPISODE {
                covered.push((rec.start_ns, rec.end_ns));
                add_record(&mut out, rec, start_ns, end_ns);
            } else if rec.end_ns > start_ns && rec.start_ns < end_ns {
                buckets.push(rec);
            }
        }
        // The live episode (added below) covers its part of the buckets too.
        if let Some(c) = &current {
            covered.push((c.start_ns, c.end_ns));
        }
        let covered = bucket_gaps::union(covered);
        for rec in buckets {
            add_bucket(&mut out, rec, rec.end_ns, start_ns, end_ns, &covered);
        }
        if let Some(live) = live
            && live.bucket.start_ns != 0
        {
            // The open bucket's intervals all ended before the live one began.
            let until = if live.since_ns > live.bucket.start_ns {
                live.since_ns
            } else {
                live.bucket.start_ns + self.bucket_ns
            };
            add_bucket(
                &mut out,
                &self.open_bucket(live),
                until,
                start_ns,
                end_ns,
                &covered,
            );
        }
        if let Some(current) = &current {
            add_record(&mut out, current, start_ns, end_ns);
        }
        out
    }

    /// The state thread `tid` is known to have been in at instant `t_ns`: that of the episode (or
    /// of the live interval) covering it; `None` inside a bucket's gap or without records.
    pub(crate) fn state_at(&self, tid: u32, t_ns: u64, live: Option<&LiveState>) -> Option<u32> {
        if let Some(l) = live
            && l.since_ns != 0
            && l.since_ns <= t_ns
            && l.state != state::UNKNOWN
        {
            return Some(l.state);
        }
        let t = self.threads.get(&tid)?;
        for rec in t.starting_before(t_ns.saturating_add(1)).rev() {
            if rec.kind != record::EPISODE {
                continue;
            }
            if rec.end_ns <= t_ns {
                // Everything stored before it ended before it.
                return None;
            }
            if rec.start_ns <= t_ns {
                return Some(rec.state);
            }
        }
        None
    }

    /// Thread `tid`'s episodes that end after `start_ns`, newest first, with what the kernel
    /// holds for it right now as one more (up to `end_ns`). The stored ones are borrowed: a
    /// record is 200 bytes, and this runs for every thread of a sender per span.
    pub(crate) fn episodes_after(
        &self,
        tid: u32,
        start_ns: u64,
        end_ns: u64,
        live: Option<&LiveState>,
    ) -> Episodes<'_> {
        let current = live
            .filter(|l| l.since_ns != 0 && l.since_ns < end_ns && l.state != state::UNKNOWN)
            .map(|l| current_episode(l, end_ns));
        let stored = self.threads.get(&tid).map_or_else(Vec::new, |t| {
            t.starting_before(end_ns)
                .rev()
                .filter(|r| r.kind == record::EPISODE)
                .take_while(|r| r.end_ns > start_ns)
                .filter(|r| r.start_ns < end_ns)
                .collect()
        });
        Episodes { current, stored }
    }

    /// The bucket the kernel is still filling for a thread, as a record.
    fn open_bucket(&self, live: &LiveState) -> SchedRecord {
        SchedRecord {
            kind: record::BUCKET,
            start_ns: live.bucket.start_ns,
            end_ns: live.bucket.start_ns + self.bucket_ns,
            bucket: live.bucket,
            ..SchedRecord::default()
        }
    }

    /// When thread `tid` waited throttled in `[start_ns, end_ns)`: the intervals that episodes
    /// place in time, and the throttled time of short waits, which buckets only sum. Within a
    /// wait the throttled part is placed at its end: a thread waits for the unthrottle, then runs.
    pub(crate) fn throttled_intervals(
        &self,
        tid: u32,
        start_ns: u64,
        end_ns: u64,
        live: Option<&LiveState>,
    ) -> (Vec<(u64, u64)>, u64) {
        let mut placed = Vec::new();
        let mut unplaced_ns = 0;
        if end_ns <= start_ns {
            return (placed, unplaced_ns);
        }
        let mut place = |rec_end_ns: u64, throttled_ns: u64| {
            let lo = rec_end_ns.saturating_sub(throttled_ns).max(start_ns);
            let hi = rec_end_ns.min(end_ns);
            if hi > lo {
                placed.push((lo, hi));
            }
        };
        if let Some(t) = self.threads.get(&tid) {
            // A record starting after the window has its throttled time after it too.
            for rec in t.starting_before(end_ns).rev() {
                if rec.kind == record::EPISODE && rec.end_ns <= start_ns {
                    break;
                }
                if rec.bucket.throttled_ns == 0 {
                    continue;
                }
                if rec.kind == record::EPISODE {
                    place(rec.end_ns, rec.bucket.throttled_ns);
                } else {
                    let mut part = Breakdown::default();
                    add_record(&mut part, rec, start_ns, end_ns);
                    unplaced_ns += part.throttled_ns;
                }
            }
        }
        if let Some(live) = live {
            if live.bucket.throttled_ns > 0 {
                let mut part = Breakdown::default();
                add_record(&mut part, &self.open_bucket(live), start_ns, end_ns);
                unplaced_ns += part.throttled_ns;
            }
            if live.since_ns != 0
                && live.state == state::RUNQ
                && live.throttled
                && live.since_ns < end_ns
            {
                place(end_ns, end_ns - live.since_ns.max(start_ns));
            }
        }
        (placed, unplaced_ns)
    }
}

/// A thread's episodes in a window: the live one (owned, made up to the window's end) and the
/// stored ones.
pub(crate) struct Episodes<'a> {
    current: Option<SchedRecord>,
    stored: Vec<&'a SchedRecord>,
}

impl Episodes<'_> {
    /// Newest first: the live one, then the stored ones.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &SchedRecord> {
        self.current.iter().chain(self.stored.iter().copied())
    }
}

/// What the kernel holds for a thread right now, as an episode up to `end_ns`.
fn current_episode(live: &LiveState, end_ns: u64) -> SchedRecord {
    let mut b = ThreadBucket::default();
    let dur = end_ns - live.since_ns;
    match live.state {
        state::ON_CPU => b.on_cpu_ns = dur,
        state::RUNQ => {
            b.runq_ns = dur;
            if live.throttled {
                b.throttled_ns = dur;
            }
        }
        _ => b.off_cpu_ns = dur,
    }
    SchedRecord {
        kind: record::EPISODE,
        state: live.state,
        start_ns: live.since_ns,
        end_ns,
        bucket: b,
        // Its context at the start; on a CPU it may have changed since, unseen until it leaves.
        spans: SpanTags::steady(live.span_id),
        ..SchedRecord::default()
    }
}

/// Adds the part of bucket `rec` inside the window: its share of the gaps the episodes
/// (`covered`, their union) leave in the bucket's window up to `until_ns`, or, with no gap, its
/// share of the whole window.
fn add_bucket(
    out: &mut Breakdown,
    rec: &SchedRecord,
    until_ns: u64,
    start_ns: u64,
    end_ns: u64,
    covered: &[(u64, u64)],
) {
    if rec.end_ns <= start_ns || rec.start_ns >= end_ns {
        return;
    }
    let window = (rec.start_ns, until_ns.min(rec.end_ns));
    match bucket_gaps::gap_share(window, covered, (start_ns, end_ns)) {
        Some(fraction) => out.add(&rec.bucket, fraction),
        None => add_record(out, rec, start_ns, end_ns),
    }
}

/// Adds the part of `rec` inside the window, in proportion to the overlap.
fn add_record(out: &mut Breakdown, rec: &SchedRecord, start_ns: u64, end_ns: u64) {
    let lo = rec.start_ns.max(start_ns);
    let hi = rec.end_ns.min(end_ns);
    if hi <= lo || rec.end_ns <= rec.start_ns {
        return;
    }
    let fraction = (hi - lo) as f64 / (rec.end_ns - rec.start_ns) as f64;
    out.add(&rec.bucket, fraction);
    if rec.kind == record::EPISODE {
        let len = hi - lo;
        let longest = match rec.state {
            state::ON_CPU => &mut out.longest_on_cpu_ns,
            state::RUNQ => &mut out.longest_runq_ns,
            _ => &mut out.longest_off_cpu_ns,
        };
        *longest = (*longest).max(len);
    }
}

mod timeline;

#[cfg(test)]
mod tests;
