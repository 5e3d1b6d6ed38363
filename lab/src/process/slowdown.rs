//! How much slower than real hardware this machine runs: `CULPRIT_SLOWDOWN` (default 1). The
//! kernel matrix sets it inside QEMU's emulation (TCG), where a Python app's start-up alone takes
//! tens of seconds. Deadlines for "this should have finished by now" stretch; what the tests
//! measure and assert does not, but for a margin where the emulation itself is measured (the
//! scheduler's switch path, which `thread_states` finds on CPU by one clock and not the other).

use std::time::Duration;

/// The factor, at least 1.
pub fn factor() -> u32 {
    std::env::var("CULPRIT_SLOWDOWN")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(1)
        .max(1)
}

/// `timeout`, stretched by the factor.
pub fn stretch(timeout: Duration) -> Duration {
    timeout * factor()
}
