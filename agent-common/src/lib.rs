//! Types shared by the kernel-side programs and the userspace agent.
//!
//! Every type here crosses the kernel/user boundary by memory layout, so each is `#[repr(C)]`,
//! has no `bool`/`Option`/enum fields, and has its size pinned by a const assertion: a layout
//! change that one side does not see fails the build instead of corrupting data.
//!
//! [`accounting`] holds no such types: it is the kernel side's accounting logic, kept here so
//! that it is tested on the host.
#![no_std]

pub mod accounting;
pub mod config;
pub mod context;
pub mod histogram;
pub mod maps;
pub mod offsets;
pub mod oom;
pub mod stats;
pub mod tcp;
pub mod thread;

pub use config::{OTLP_PORT_SLOTS, ProbeConfig};
pub use histogram::{
    HIST_SLOTS, RUNQ_CPU_SLOTS, RunqCpuHist, RunqHist, checked_hist_slot, hist_slot,
    slot_lower_bound_ns,
};
pub use offsets::{KernelOffsets, OFFSET_ABSENT, TcpTracepointOffsets};
pub use stats::DropCounter;
