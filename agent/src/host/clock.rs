//! The kernel's clock for eBPF timestamps (`bpf_ktime_get_ns` is CLOCK_MONOTONIC).

pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// The wall clock (CLOCK_REALTIME) in ns since the Unix epoch.
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Cannot fail for these clocks with a valid pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `realtime - monotonic`: spans carry wall-clock times, kernel events monotonic ones. The wall
/// clock can be stepped (NTP), so the offset is re-measured continuously.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockOffset {
    pub realtime_minus_monotonic_ns: i128,
}

impl ClockOffset {
    /// Reads the two clocks back to back a few times and keeps the tightest pair.
    pub fn measure() -> Self {
        let mut best: Option<(u64, i128)> = None;
        for _ in 0..5 {
            let m0 = monotonic_ns();
            let r = realtime_ns();
            let m1 = monotonic_ns();
            let width = m1 - m0;
            let offset = r as i128 - (m0 + width / 2) as i128;
            if best.is_none_or(|(w, _)| width < w) {
                best = Some((width, offset));
            }
        }
        Self {
            realtime_minus_monotonic_ns: best.map_or(0, |(_, o)| o),
        }
    }

    /// A wall-clock time (ns since the epoch) on the monotonic clock.
    pub fn to_monotonic(&self, unix_ns: u64) -> u64 {
        (unix_ns as i128 - self.realtime_minus_monotonic_ns).max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_maps_now_to_now() {
        let off = ClockOffset::measure();
        let mono = off.to_monotonic(realtime_ns());
        assert!(
            mono.abs_diff(monotonic_ns()) < 5_000_000,
            "{mono} vs {}",
            monotonic_ns()
        );
        assert_eq!(
            ClockOffset {
                realtime_minus_monotonic_ns: 100
            }
            .to_monotonic(50),
            0
        );
    }
}
