//! Percentiles read back from the kernel's log-linear histogram.

use culprit_common::{HIST_SLOTS, slot_lower_bound_ns};

/// Estimates the `quantile` (0..=1) of the samples counted in `slots`, interpolating linearly
/// inside the slot it falls in. `None` when there are no samples.
pub(crate) fn quantile_ns(slots: &[u64; HIST_SLOTS], quantile: f64) -> Option<u64> {
    let total: u64 = slots.iter().sum();
    if total == 0 {
        return None;
    }
    let quantile = quantile.clamp(0.0, 1.0);
    // Rank of the wanted sample, 1-based: the smallest sample for q=0, the largest for q=1.
    let rank = ((quantile * total as f64).ceil() as u64).max(1);
    let mut seen = 0u64;
    for (slot, &count) in slots.iter().enumerate() {
        if count == 0 {
            continue;
        }
        if seen + count >= rank {
            let low = slot_lower_bound_ns(slot);
            let high = if slot + 1 < HIST_SLOTS {
                slot_lower_bound_ns(slot + 1)
            } else {
                low
            };
            let within = (rank - seen) as f64 / count as f64;
            return Some(low + ((high - low) as f64 * within) as u64);
        }
        seen += count;
    }
    None
}

/// Element-wise `now - before`, for counters that only grow.
pub(crate) fn slots_delta(
    now: &[u64; HIST_SLOTS],
    before: &[u64; HIST_SLOTS],
) -> [u64; HIST_SLOTS] {
    std::array::from_fn(|i| now[i].saturating_sub(before[i]))
}

#[cfg(test)]
mod tests {
    use culprit_common::hist_slot;

    use super::*;

    fn hist_of(values: &[u64]) -> [u64; HIST_SLOTS] {
        let mut slots = [0u64; HIST_SLOTS];
        for &v in values {
            slots[hist_slot(v)] += 1;
        }
        slots
    }

    #[test]
    fn empty_histogram_has_no_quantiles() {
        assert_eq!(quantile_ns(&[0; HIST_SLOTS], 0.5), None);
    }

    #[test]
    fn quantiles_are_within_a_slot_of_the_truth() {
        let values: Vec<u64> = (1..=1000).map(|i| i * 1_000).collect();
        let slots = hist_of(&values);
        for (q, truth) in [(0.5, 500_000f64), (0.9, 900_000.0), (0.99, 990_000.0)] {
            let got = quantile_ns(&slots, q).unwrap() as f64;
            assert!(
                (got - truth).abs() / truth < 0.25,
                "q={q} got={got} truth={truth}"
            );
        }
    }

    #[test]
    fn single_value_is_found_in_its_slot() {
        let slots = hist_of(&[5_000; 10]);
        let p50 = quantile_ns(&slots, 0.5).unwrap();
        let slot = hist_slot(5_000);
        assert!(p50 >= slot_lower_bound_ns(slot) && p50 <= slot_lower_bound_ns(slot + 1));
    }

    #[test]
    fn quantiles_are_monotonic() {
        let slots = hist_of(&[10, 100, 1_000, 10_000, 100_000, 1_000_000, 7, 70_000]);
        let mut last = 0;
        for i in 0..=100 {
            let q = quantile_ns(&slots, i as f64 / 100.0).unwrap();
            assert!(q >= last);
            last = q;
        }
    }

    #[test]
    fn overflow_slot_reports_its_lower_bound() {
        let slots = hist_of(&[u64::MAX]);
        assert_eq!(
            quantile_ns(&slots, 1.0),
            Some(slot_lower_bound_ns(HIST_SLOTS - 1))
        );
    }

    #[test]
    fn delta_saturates() {
        let mut now = [0u64; HIST_SLOTS];
        let mut before = [0u64; HIST_SLOTS];
        now[3] = 10;
        before[3] = 4;
        before[4] = 1;
        let d = slots_delta(&now, &before);
        assert_eq!(d[3], 6);
        assert_eq!(d[4], 0);
    }
}
