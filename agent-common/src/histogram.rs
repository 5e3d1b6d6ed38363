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

/// [`hist_slot`] with a bounds check the BPF verifier sees: the compiler knows `hist_slot` is in
/// range and would drop a plain check, but the verifier cannot follow the bit arithmetic, so a
/// volatile read hides the range from the compiler and the check survives.
#[inline(always)]
pub fn checked_hist_slot(value_ns: u64) -> Option<usize> {
    let slot = hist_slot(value_ns);
    let slot = unsafe { core::ptr::read_volatile(&slot) };
    (slot < HIST_SLOTS).then_some(slot)
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Slots of the per-CPU run-queue histograms: the busiest cgroups the agent gave one. On a node
/// with more cgroups, the rest stay on the shared histogram per cgroup ([`RunqHist`]).
pub const RUNQ_CPU_SLOTS: u32 = 256;

/// One cgroup's run-queue waits on one CPU, in a slot the agent gave the cgroup: the switch
/// adds to it with no hash lookup and no atomic add. The counters are `u32` (and the sum wraps)
/// to halve the per-CPU memory: the agent takes wrapping differences between reads, a second
/// apart, far fewer than 2^32 waits on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunqCpuHist {
    /// The cgroup the slot is for (0: free). The kernel adds only to a slot of the waiting
    /// task's cgroup, so a slot handed to another cgroup never mixes the two.
    pub cgroup_id: u64,
    /// Sum of the waits (wrapping).
    pub total_ns: u64,
    pub slots: [u32; HIST_SLOTS],
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<RunqCpuHist>() == 16 + 4 * HIST_SLOTS + 4);
const _: () = assert!(core::mem::size_of::<RunqCpuHist>().is_multiple_of(8));

impl RunqCpuHist {
    /// A slot given to `cgroup_id`, with nothing counted yet.
    pub const fn empty(cgroup_id: u64) -> Self {
        Self {
            cgroup_id,
            total_ns: 0,
            slots: [0; HIST_SLOTS],
            _pad: 0,
        }
    }

    /// Counts a wait of `delay_ns` if the slot is `cgroup_id`'s; false otherwise.
    #[inline(always)]
    pub fn add(&mut self, cgroup_id: u64, delay_ns: u64) -> bool {
        if self.cgroup_id != cgroup_id || cgroup_id == 0 {
            return false;
        }
        let Some(slot) = checked_hist_slot(delay_ns) else {
            return false;
        };
        self.total_ns = self.total_ns.wrapping_add(delay_ns);
        self.slots[slot] = self.slots[slot].wrapping_add(1);
        true
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for RunqCpuHist {}

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
    fn a_per_cpu_slot_counts_only_its_own_cgroups_waits_and_wraps() {
        let mut h = RunqCpuHist::empty(7);
        assert!(h.add(7, 1_500));
        assert!(!h.add(8, 1_500), "another cgroup's wait");
        assert!(
            !RunqCpuHist::empty(0).add(0, 10),
            "a free slot takes nothing"
        );
        assert_eq!((h.total_ns, h.slots[hist_slot(1_500)]), (1_500, 1));
        h.slots[hist_slot(5)] = u32::MAX;
        h.total_ns = u64::MAX;
        assert!(h.add(7, 5));
        assert_eq!((h.total_ns, h.slots[hist_slot(5)]), (4, 0));
    }

    #[test]
    fn slot_width_is_a_quarter_of_its_power_of_two() {
        // 1024..2048 is split into 256-ns wide slots.
        assert_eq!(hist_slot(1024), hist_slot(1279));
        assert_ne!(hist_slot(1279), hist_slot(1280));
    }
}
