//! The store's arithmetic on fixed records.
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
        ..SchedRecord::default()
    }
}

fn bucket(tid: u32, start_ms: u64, on: u64, runq: u64, throttled: u64, off: u64) -> SchedRecord {
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
        ..SchedRecord::default()
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
        span_id: 0,
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
        span_id: 0,
    };
    let b = s.breakdown(1, 0, 1000 * MS, Some(&live));
    assert_eq!(b.on_cpu_ns, 500 * MS);
    let waiting_throttled = LiveState {
        state: state::RUNQ,
        throttled: true,
        span_id: 0,
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

#[test]
fn a_short_request_between_long_sleeps_gets_its_gaps_share_of_the_bucket() {
    const US: u64 = 1_000;
    let mut s = ThreadStore::new(60_000 * MS, 1000, 10 * MS);
    // Asleep until 4.8 ms, served a 0.3 ms request in short slices, asleep again from 5.1 ms.
    let mut before = episode(1, state::OFF_CPU, 0, 4);
    before.end_ns = 4_800 * US;
    before.bucket.off_cpu_ns = before.end_ns;
    s.insert(before);
    let mut after = episode(1, state::OFF_CPU, 5, 10);
    after.start_ns = 5_100 * US;
    after.bucket.off_cpu_ns = after.end_ns - after.start_ns;
    s.insert(after);
    let mut b = bucket(1, 0, 0, 0, 0, 0);
    b.bucket.on_cpu_ns = 100 * US;
    b.bucket.off_cpu_ns = 200 * US;
    b.bucket.neighbour_ns = 0;
    s.insert(b);
    // The span: 0.2 ms of the 0.3 ms gap.
    let got = s.breakdown(1, 4_850 * US, 5_050 * US, None);
    assert_eq!(got.observed_ns(), 200 * US, "{got:?}");
    assert_eq!(got.on_cpu_ns, 67 * US - 333, "{got:?}");
    // Before, its share of the whole 10 ms window: 2% of 0.3 ms, a coverage of 3%.
}

#[test]
fn the_state_at_an_instant_comes_from_the_episode_covering_it() {
    let mut s = ThreadStore::new(60_000 * MS, 1000, 10 * MS);
    s.insert(episode(1, state::OFF_CPU, 0, 5));
    s.insert(bucket(1, 0, 1, 0, 0, 0));
    s.insert(episode(1, state::ON_CPU, 6, 9));
    assert_eq!(s.state_at(1, 2 * MS, None), Some(state::OFF_CPU));
    assert_eq!(s.state_at(1, 7 * MS, None), Some(state::ON_CPU));
    // Between the episodes: a bucket's gap, not placed in time.
    assert_eq!(s.state_at(1, 5 * MS + 500_000, None), None);
    assert_eq!(s.state_at(2, 2 * MS, None), None);
    // The live interval covers the present.
    let live = LiveState {
        state: state::RUNQ,
        since_ns: 9 * MS,
        bucket: ThreadBucket::default(),
        throttled: false,
        span_id: 0,
    };
    assert_eq!(s.state_at(1, 12 * MS, Some(&live)), Some(state::RUNQ));
    assert_eq!(s.state_at(1, 7 * MS, Some(&live)), Some(state::ON_CPU));
}

/// The index a query starts from: every record it skips starts at or after the instant, and it
/// skips all it can, whatever the order the records arrived in (buckets stored after episodes
/// that began inside them, some far older), also after evictions from the front.
#[test]
fn the_time_index_skips_only_records_that_start_after_the_instant() {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..50 {
        let mut t = Timeline::new(100);
        let mut clock_ms = 1_000;
        for _ in 0..200 {
            clock_ms += next(5);
            // Mostly in order; now and then a record that began up to 30 ms before the last.
            let start_ms = clock_ms.saturating_sub(if next(4) == 0 { next(30) } else { 0 });
            let rec = if next(2) == 0 {
                episode(1, state::ON_CPU, start_ms, start_ms + 1 + next(5))
            } else {
                bucket(1, start_ms, 1, 0, 0, 0)
            };
            t.push(rec);
            if next(8) == 0 {
                t.pop_front();
            }
            for from_ms in (clock_ms.saturating_sub(40)..=clock_ms + 2).step_by(3) {
                let from_ns = from_ms * MS;
                let kept = t.starting_before(from_ns).len();
                let skipped: Vec<u64> = t.records.range(kept..).map(|r| r.start_ns).collect();
                assert!(
                    skipped.iter().all(|&s| s >= from_ns),
                    "{from_ms}: {skipped:?}"
                );
                if kept > 0 {
                    let last_kept = t.records.range(kept - 1..).map(|r| r.start_ns).min();
                    assert!(last_kept < Some(from_ns), "{from_ms}: could skip more");
                }
            }
        }
    }
}
