//! The per-thread, time-indexed store of what the kernel streamed: episodes and buckets of
//! on-CPU, run-queue and off-CPU time. Bounded in time (retention) and in memory (a record cap);
//! the oldest records go first and every eviction is counted.

use std::collections::{HashMap, VecDeque};

use culprit_common::thread::{SchedRecord, ThreadBucket, record, state};

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
    /// Neighbour process (tgid) -> run-queue time it took from this thread.
    pub neighbours: HashMap<u32, u64>,
    pub longest_on_cpu_ns: u64,
    pub longest_runq_ns: u64,
    pub longest_off_cpu_ns: u64,
}

impl Breakdown {
    /// Run-queue time not explained by throttling.
    pub(crate) fn contention_ns(&self) -> u64 {
        self.runq_ns.saturating_sub(self.throttled_ns)
    }

    pub(crate) fn observed_ns(&self) -> u64 {
        self.on_cpu_ns + self.runq_ns + self.off_cpu_ns
    }

    /// Adds `fraction` of a record's sums.
    fn add(&mut self, b: &ThreadBucket, fraction: f64) {
        let part = |ns: u64| (ns as f64 * fraction).round() as u64;
        self.on_cpu_ns += part(b.on_cpu_ns);
        self.runq_ns += part(b.runq_ns);
        self.throttled_ns += part(b.throttled_ns);
        self.off_cpu_ns += part(b.off_cpu_ns);
        if b.neighbour_ns > 0 {
            *self.neighbours.entry(b.neighbour_tgid).or_default() += part(b.neighbour_ns);
        }
    }

    /// The neighbours by time taken, most first.
    pub(crate) fn top_neighbours(&self, n: usize) -> Vec<(u32, u64)> {
        let mut v: Vec<(u32, u64)> = self.neighbours.iter().map(|(k, v)| (*k, *v)).collect();
        v.sort_by_key(|&(tgid, ns)| (std::cmp::Reverse(ns), tgid));
        v.truncate(n);
        v
    }
}

struct Timeline {
    tgid: u32,
    records: VecDeque<SchedRecord>,
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
        let timeline = self.threads.entry(rec.tid).or_insert_with(|| Timeline {
            tgid: rec.tgid,
            records: VecDeque::new(),
        });
        if rec.tgid != 0 {
            timeline.tgid = rec.tgid;
        }
        timeline.records.push_back(rec);
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
            t.records.pop_front();
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
        if let Some(t) = self.threads.get(&tid) {
            // Newest first, stopping at the first episode that ended before the window: episodes
            // are streamed as they end, so everything stored before one ended before it. (A
            // bucket is streamed when it closes, so it never sits behind a newer episode.)
            for rec in t.records.iter().rev() {
                if rec.kind == record::EPISODE && rec.end_ns <= start_ns {
                    break;
                }
                add_record(&mut out, rec, start_ns, end_ns);
            }
        }
        if let Some(live) = live {
            if live.bucket.start_ns != 0 {
                add_record(&mut out, &self.open_bucket(live), start_ns, end_ns);
            }
            if live.since_ns != 0 && live.since_ns < end_ns && live.state != state::UNKNOWN {
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
                let current = SchedRecord {
                    kind: record::EPISODE,
                    state: live.state,
                    start_ns: live.since_ns,
                    end_ns,
                    bucket: b,
                    ..SchedRecord::default()
                };
                add_record(&mut out, &current, start_ns, end_ns);
            }
        }
        out
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
            for rec in t.records.iter().rev() {
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn episode(tid: u32, st: u32, start_ms: u64, end_ms: u64) -> SchedRecord {
        let dur = (end_ms - start_ms) * MS;
        let mut b = ThreadBucket::default();
        match st {
            state::ON_CPU => b.on_cpu_ns = dur,
            state::RUNQ => b.runq_ns = dur,
            _ => b.off_cpu_ns = dur,
        }
        SchedRecord {
            kind: record::EPISODE,
            state: st,
            tid,
            tgid: 100,
            start_ns: start_ms * MS,
            end_ns: end_ms * MS,
            bucket: b,
        }
    }

    fn bucket(
        tid: u32,
        start_ms: u64,
        on: u64,
        runq: u64,
        throttled: u64,
        off: u64,
    ) -> SchedRecord {
        SchedRecord {
            kind: record::BUCKET,
            state: 0,
            tid,
            tgid: 100,
            start_ns: start_ms * MS,
            end_ns: (start_ms + 10) * MS,
            bucket: ThreadBucket {
                start_ns: start_ms * MS,
                on_cpu_ns: on * MS,
                runq_ns: runq * MS,
                throttled_ns: throttled * MS,
                off_cpu_ns: off * MS,
                neighbour_ns: (runq - throttled) * MS,
                neighbour_tgid: 7,
                ..ThreadBucket::default()
            },
        }
    }

    #[test]
    fn throttled_waits_are_placed_at_the_end_of_their_episode() {
        let mut s = ThreadStore::new(60_000 * MS, 1000, 10 * MS);
        let mut wait = episode(1, state::RUNQ, 100, 140);
        wait.bucket.throttled_ns = 30 * MS;
        s.insert(wait);
        s.insert(episode(1, state::ON_CPU, 140, 150));
        s.insert(bucket(1, 150, 2, 3, 2, 5));
        let (placed, short) = s.throttled_intervals(1, 0, 1000 * MS, None);
        assert_eq!(placed, vec![(110 * MS, 140 * MS)]);
        assert_eq!(short, 2 * MS);
        // Clipped to the window; half the bucket is inside.
        let (placed, short) = s.throttled_intervals(1, 120 * MS, 155 * MS, None);
        assert_eq!(placed, vec![(120 * MS, 140 * MS)]);
        assert_eq!(short, MS);
        // A wait still going on that began throttled runs to the end of the window.
        let live = LiveState {
            state: state::RUNQ,
            since_ns: 900 * MS,
            bucket: ThreadBucket::default(),
            throttled: true,
        };
        let (placed, _) = s.throttled_intervals(1, 800 * MS, 950 * MS, Some(&live));
        assert_eq!(placed, vec![(900 * MS, 950 * MS)]);
        assert_eq!(s.throttled_intervals(2, 0, 1000 * MS, None), (vec![], 0));
    }

    #[test]
    fn episodes_are_clipped_to_the_window() {
        let mut s = ThreadStore::new(60_000 * MS, 1000, 10 * MS);
        s.insert(episode(1, state::OFF_CPU, 100, 150));
        s.insert(episode(1, state::ON_CPU, 150, 170));
        let b = s.breakdown(1, 0, 1000 * MS, None);
        assert_eq!((b.off_cpu_ns, b.on_cpu_ns), (50 * MS, 20 * MS));
        assert_eq!(b.longest_off_cpu_ns, 50 * MS);
        let b = s.breakdown(1, 140 * MS, 160 * MS, None);
        assert_eq!((b.off_cpu_ns, b.on_cpu_ns), (10 * MS, 10 * MS));
        assert_eq!(
            s.breakdown(1, 200 * MS, 300 * MS, None),
            Breakdown::default()
        );
        assert_eq!(s.breakdown(2, 0, 1000 * MS, None), Breakdown::default());
    }

    #[test]
    fn buckets_count_in_proportion_and_split_throttling() {
        let mut s = ThreadStore::new(60_000 * MS, 1000, 10 * MS);
        s.insert(bucket(1, 100, 4, 4, 1, 2));
        let b = s.breakdown(1, 0, 1000 * MS, None);
        assert_eq!(
            (b.on_cpu_ns, b.runq_ns, b.throttled_ns, b.off_cpu_ns),
            (4 * MS, 4 * MS, MS, 2 * MS)
        );
        assert_eq!(b.contention_ns(), 3 * MS);
        assert_eq!(b.top_neighbours(3), vec![(7, 3 * MS)]);
        // Half the bucket inside the window: half its sums.
        let b = s.breakdown(1, 105 * MS, 200 * MS, None);
        assert_eq!(b.on_cpu_ns, 2 * MS);
    }

    #[test]
    fn live_state_fills_the_present() {
        let s = ThreadStore::new(60_000 * MS, 1000, 10 * MS);
        let live = LiveState {
            state: state::ON_CPU,
            since_ns: 500 * MS,
            bucket: ThreadBucket::default(),
            throttled: false,
        };
        let b = s.breakdown(1, 0, 1000 * MS, Some(&live));
        assert_eq!(b.on_cpu_ns, 500 * MS);
        let waiting_throttled = LiveState {
            state: state::RUNQ,
            throttled: true,
            ..live
        };
        let b = s.breakdown(1, 0, 1000 * MS, Some(&waiting_throttled));
        assert_eq!(
            (b.runq_ns, b.throttled_ns, b.contention_ns()),
            (500 * MS, 500 * MS, 0)
        );
        let unknown = LiveState {
            state: state::UNKNOWN,
            ..live
        };
        assert_eq!(s.breakdown(1, 0, 1000 * MS, Some(&unknown)).on_cpu_ns, 0);
    }

    #[test]
    fn the_cap_evicts_oldest_first_and_counts() {
        let mut s = ThreadStore::new(60_000 * MS, 3, 10 * MS);
        s.insert(episode(1, state::ON_CPU, 0, 10));
        s.insert(episode(2, state::ON_CPU, 10, 20));
        s.insert(episode(1, state::ON_CPU, 20, 30));
        s.insert(episode(2, state::ON_CPU, 30, 40));
        assert_eq!((s.len(), s.evicted()), (3, 1));
        // Thread 1's first record went.
        assert_eq!(s.breakdown(1, 0, 100 * MS, None).on_cpu_ns, 10 * MS);
        assert_eq!(s.breakdown(2, 0, 100 * MS, None).on_cpu_ns, 20 * MS);
    }

    #[test]
    fn retention_expires_without_counting_loss() {
        let mut s = ThreadStore::new(100 * MS, 1000, 10 * MS);
        s.insert(episode(1, state::ON_CPU, 0, 10));
        s.insert(episode(1, state::ON_CPU, 150, 160));
        s.expire(200 * MS);
        assert_eq!((s.len(), s.evicted()), (1, 0));
        s.expire(10_000 * MS);
        assert_eq!(s.len(), 0);
        assert_eq!(s.tids().count(), 0);
    }
}
