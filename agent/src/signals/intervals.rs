//! Time covered by a set of possibly overlapping intervals, each instant counted once.

/// Total length of the union of `[lo, hi)` intervals (empty or inverted ones count nothing).
pub(crate) fn union_ns(mut intervals: Vec<(u64, u64)>) -> u64 {
    intervals.sort_unstable();
    let mut covered = 0;
    let mut cursor = 0;
    for (lo, hi) in intervals {
        let lo = lo.max(cursor);
        if hi > lo {
            covered += hi - lo;
        }
        cursor = cursor.max(hi);
    }
    covered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_count_once_and_gaps_not_at_all() {
        assert_eq!(union_ns(vec![]), 0);
        assert_eq!(union_ns(vec![(10, 20)]), 10);
        assert_eq!(union_ns(vec![(10, 20), (15, 30)]), 20);
        assert_eq!(union_ns(vec![(15, 30), (10, 20), (40, 50)]), 30);
        // Nested, touching, empty and inverted intervals.
        assert_eq!(union_ns(vec![(10, 50), (20, 30)]), 40);
        assert_eq!(union_ns(vec![(10, 20), (20, 30)]), 20);
        assert_eq!(union_ns(vec![(5, 5), (9, 3)]), 0);
    }
}
