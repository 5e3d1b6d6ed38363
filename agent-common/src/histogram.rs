//! Log-linear latency histogram: each power of two is split into four linear sub-buckets, so a
//! percentile read back from it is within 25% of the true value (plain log2 would be 100%),
//! while the in-kernel update stays a handful of instructions.

/// Sub-buckets per power of two, as a shift.
const SUB_BITS: u32 = 2;
const SUB_COUNT: u64 = 1 << SUB_BITS;
/// Values at or above `2^MAX_POW2` ns (~68.7 s) land in the last slot.
const MAX_POW2: u32 = 36;

/// Number of slots: values below `SUB_COUNT` map one to one, then `SUB_COUNT` slots per power of
/// two up to `MAX_POW2`, then one overflow slot.
pub const HIST_SLOTS: usize =
    (SUB_COUNT as usize) * (MAX_POW2 as usize - SUB_BITS as usize + 1) + 1;

/// The slot a duration falls in.
#[inline(always)]
pub fn hist_slot(value_ns: u64) -> usize {
    if value_ns < SUB_COUNT {
        return value_ns as usize;
    }
    let pow2 = 63 - value_ns.leading_zeros();
    if pow2 >= MAX_POW2 {
        return HIST_SLOTS - 1;
    }
    let sub = (value_ns >> (pow2 - SUB_BITS)) & (SUB_COUNT - 1);
    ((pow2 - SUB_BITS + 1) as usize) * SUB_COUNT as usize + sub as usize
}

/// The smallest duration that falls in `slot`; the slot's upper bound is the next slot's lower
/// bound.
pub fn slot_lower_bound_ns(slot: usize) -> u64 {
    let sub_count = SUB_COUNT as usize;
    if slot < sub_count {
        return slot as u64;
    }
    let pow2 = (slot / sub_count) as u32 + SUB_BITS - 1;
    let sub = (slot % sub_count) as u64;
    (1u64 << pow2) + (sub << (pow2 - SUB_BITS))
}

/// Cumulative run-queue delay statistics of one cgroup. Counters only grow: userspace takes
/// differences between reads, so no read ever races a reset.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RunqHist {
    /// Number of waits (a wakeup or preemption followed by getting a CPU). The kernel leaves it
    /// at 0 (it equals the sum of `slots`): the agent fills it in when it reads the map.
    pub count: u64,
    /// Sum of all waits.
    pub total_ns: u64,
    pub slots: [u64; HIST_SLOTS],
}

const _: () = assert!(core::mem::size_of::<RunqHist>() == 16 + 8 * HIST_SLOTS);

impl RunqHist {
    pub const ZERO: RunqHist = RunqHist {
        count: 0,
        total_ns: 0,
        slots: [0; HIST_SLOTS],
    };
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for RunqHist {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_map_one_to_one() {
        for v in 0..8u64 {
            assert_eq!(hist_slot(v), v as usize);
            assert_eq!(slot_lower_bound_ns(v as usize), v);
        }
    }

    #[test]
    fn every_value_lies_within_its_slot_bounds() {
        let mut v = 1u64;
        while v < (1u64 << MAX_POW2) {
            for probe in [v, v + v / 3, v + v / 2, 2 * v - 1] {
                let slot = hist_slot(probe);
                assert!(slot_lower_bound_ns(slot) <= probe, "{probe}");
                assert!(probe < slot_lower_bound_ns(slot + 1), "{probe}");
            }
            v *= 2;
        }
    }

    #[test]
    fn slots_are_monotonic_and_in_range() {
        let mut last = 0;
        let mut v = 0u64;
        while v < (1u64 << 40) {
            let slot = hist_slot(v);
            assert!(slot >= last && slot < HIST_SLOTS);
            last = slot;
            v = v * 9 / 8 + 1;
        }
        assert_eq!(hist_slot(u64::MAX), HIST_SLOTS - 1);
        assert_eq!(hist_slot((1 << MAX_POW2) - 1), HIST_SLOTS - 2);
        assert_eq!(slot_lower_bound_ns(HIST_SLOTS - 1), 1 << MAX_POW2);
    }

    #[test]
    fn slot_width_is_a_quarter_of_its_power_of_two() {
        // 1024..2048 is split into 256-ns wide slots.
        assert_eq!(hist_slot(1024), hist_slot(1279));
        assert_ne!(hist_slot(1279), hist_slot(1280));
    }
}
