//! Child processes: where the workspace's binaries are, and children that are always reaped,
//! so that a test failing half-way leaves nothing running.

pub mod binaries;
pub mod reaped;
pub mod schedstat;
pub mod slowdown;
