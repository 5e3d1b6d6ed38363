//! The agent's memory allocator: mimalloc, returning freed memory to the system within 10 ms.
//!
//! The join allocates and frees many small objects per span next to a few large buffers per
//! batch. glibc's allocator spent about a third of the agent's CPU on that mix (fastbin
//! consolidation); mimalloc a fraction of it. Its defaults, though, keep freed memory for a
//! second and commit arenas eagerly, which held the kernel BTF parsed at start-up (tens of MiB,
//! freed right after) in the resident set: the settings below bring the peak back down
//! (BENCHMARKS.md has both figures). Purging at once (0) cost measurable CPU in page faults.

use libmimalloc_sys::{mi_option_set, mi_option_t};

/// Option indices of the vendored mimalloc v3 (`mi_option_e` in its `mimalloc.h`); the crate
/// names only some of them.
const MI_OPTION_ARENA_EAGER_COMMIT: mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: mi_option_t = 15;
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Call first thing in `main`, before the agent allocates anything large.
pub(crate) fn configure() {
    // SAFETY: plain option stores, made before any other thread exists.
    unsafe {
        mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
    }
}
