//! Where in its window a bucket's time was spent. A bucket sums a thread's intervals too short to
//! be streamed as episodes (below `--episode-threshold-ms`) over a 10 ms window; the thread's
//! episodes cover the rest of that window. The short intervals therefore lie in the window's
//! gaps between episodes, and a span's share of the bucket is its share of those gaps, not of
//! the whole window: a 0.2 ms request served between two long sleeps gets the bucket's time of
//! its own gap, not 2% of the bucket.

/// `window` minus the union of `covered` (intervals in any order, overlapping or not).
pub(crate) fn gaps(window: (u64, u64), covered: &[(u64, u64)]) -> Vec<(u64, u64)> {
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
pub(crate) fn share(gaps: &[(u64, u64)], span: (u64, u64)) -> Option<f64> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
