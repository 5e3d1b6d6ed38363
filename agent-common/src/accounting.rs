//! The decisions behind the kernel side's accounting, as plain functions over the shared types:
//! which interval a scheduler event closes, how a run-queue wait splits into throttled time and
//! contention, which neighbour a wait is charged to, when a bucket rolls over. The programs keep
//! the map lookups and kernel reads and call these; the host tests them.
//!
//! Everything here runs inside BPF programs: no panics, no loops but over fixed-size arrays, no
//! floating point, no allocation, and `#[inline(always)]` so the verifier sees one flat program.
//! Reads of the kernel that a decision may not need are passed as closures, called at most once
//! and only when needed, so that the hot path does no more work than before.

pub mod memory_chain;
pub mod neighbour;
pub mod runq_delay;
pub mod thread_time;
pub mod throttle;
pub mod wake_chain;
pub mod watch_cache;
