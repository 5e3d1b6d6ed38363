//! Where in its window a bucket's time was spent. A bucket sums a thread's intervals too short to
//! be streamed as episodes (below `--episode-threshold-ms`) over a 10 ms window; the thread's
//! episodes cover the rest of that window. The short intervals therefore lie in the window's
//! gaps between episodes, and a span's share of the bucket is its share of those gaps, not of
//! the whole window: a 0.2 ms request served between two long sleeps gets the bucket's time of
//! its own gap, not 2% of the bucket.

/// The union of `covered` (intervals in any order, overlapping or not, empty ones ignored) as
/// sorted, disjoint intervals: built once per query, then every bucket's gaps are read from it.
pub(crate) fn union(mut covered: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    covered.retain(|(s, e)| e > s);
    // A thread's episodes arrive nearly sorted already: this is close to linear.
    covered.sort_unstable();
    let mut merged = 0;
    for i in 0..covered.len() {
        let (s, e) = covered[i];
        if merged > 0 && s <= covered[merged - 1].1 {
            covered[merged - 1].1 = covered[merged - 1].1.max(e);
        } else {
            covered[merged] = (s, e);
            merged += 1;
        }
    }
    covered.truncate(merged);
    covered
}

/// The share of `window`'s gaps (its time outside `union`, from [`union`]) that lies inside
/// `span`; `None` when there are no gaps (the bucket's time cannot be placed: the caller falls
/// back to the share of the whole window). No allocation: one binary search, then a walk over
/// the intervals that meet the window.
pub(crate) fn gap_share(window: (u64, u64), union: &[(u64, u64)], span: (u64, u64)) -> Option<f64> {
    let (lo, hi) = window;
    if hi <= lo {
        return None;
    }
    let (mut total, mut inside) = (0u64, 0u64);
    let mut gap = |a: u64, b: u64| {
        total += b - a;
        inside += b.min(span.1).saturating_sub(a.max(span.0));
    };
    // Disjoint and sorted: the ends ascend too.
    let first = union.partition_point(|&(_, e)| e <= lo);
    let mut at = lo;
    for &(s, e) in &union[first..] {
        if s >= hi {
            break;
        }
        if s > at {
            gap(at, s);
        }
        at = at.max(e.min(hi));
    }
    if at < hi {
        gap(at, hi);
    }
    (total > 0).then(|| inside as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The reference: the gaps as a list, then the share of them inside a span.
    /// `window` minus the union of `covered` (intervals in any order, overlapping or not).
    fn gaps(window: (u64, u64), covered: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let (lo, hi) = window;
        if hi <= lo {
            return Vec::new();
        }
        let mut inside: Vec<(u64, u64)> = covered
            .iter()
            .map(|&(s, e)| (s.max(lo), e.min(hi)))
            .filter(|(s, e)| e > s)
            .collect();
        inside.sort_unstable();
        let mut out = Vec::new();
        let mut at = lo;
        for (s, e) in inside {
            if s > at {
                out.push((at, s));
            }
            at = at.max(e);
        }
        if at < hi {
            out.push((at, hi));
        }
        out
    }

    /// The share of `gaps` inside `span`; `None` when there are no gaps (the bucket's time cannot be
    /// placed: the caller falls back to the share of the whole window).
    fn share(gaps: &[(u64, u64)], span: (u64, u64)) -> Option<f64> {
        let total: u64 = gaps.iter().map(|(s, e)| e - s).sum();
        if total == 0 {
            return None;
        }
        let inside: u64 = gaps
            .iter()
            .map(|&(s, e)| e.min(span.1).saturating_sub(s.max(span.0)))
            .sum();
        Some(inside as f64 / total as f64)
    }

    #[test]
    fn gaps_are_the_window_minus_the_episodes() {
        assert_eq!(gaps((0, 100), &[]), [(0, 100)]);
        assert_eq!(gaps((0, 100), &[(0, 100)]), []);
        assert_eq!(gaps((0, 100), &[(40, 60)]), [(0, 40), (60, 100)]);
        // Out of order, overlapping, and sticking out of the window.
        assert_eq!(
            gaps((0, 100), &[(50, 120), (0, 10), (5, 20), (30, 55)]),
            [(20, 30)]
        );
        assert_eq!(gaps((10, 10), &[]), []);
    }

    #[test]
    fn a_span_gets_its_share_of_the_gaps() {
        // A 0.3 ms gap between two sleeps; the span covers two thirds of it.
        let g = gaps((0, 10_000), &[(0, 4_800), (5_100, 10_000)]);
        assert_eq!(g, [(4_800, 5_100)]);
        let f = share(&g, (4_850, 5_050)).unwrap();
        assert!((f - 2.0 / 3.0).abs() < 1e-9, "{f}");
        // Two requests in one bucket: each its own gap's part.
        let g = gaps((0, 100), &[(10, 50), (60, 100)]);
        assert_eq!(share(&g, (0, 10)), Some(0.5));
        assert_eq!(share(&g, (200, 300)), Some(0.0));
        assert_eq!(share(&[], (0, 10)), None);
    }

    #[test]
    fn the_share_from_the_union_is_the_share_of_the_listed_gaps() {
        // Every small layout of up to four intervals, buckets and spans on a 0..12 grid.
        let grid: Vec<(u64, u64)> = (0..12).flat_map(|s| (s..13).map(move |e| (s, e))).collect();
        let mut layouts: Vec<Vec<(u64, u64)>> = vec![vec![]];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..4000 {
            let n = (seed % 5) as usize;
            let mut v = Vec::new();
            for _ in 0..n {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                v.push(grid[(seed % grid.len() as u64) as usize]);
            }
            layouts.push(v);
        }
        for covered in &layouts {
            let u = union(covered.clone());
            assert!(u.windows(2).all(|w| w[0].1 < w[1].0), "{u:?}");
            for &window in grid.iter().step_by(7) {
                for &span in grid.iter().step_by(5) {
                    assert_eq!(
                        gap_share(window, &u, span),
                        share(&gaps(window, covered), span),
                        "{window:?} {covered:?} {span:?}"
                    );
                }
            }
        }
    }
}
