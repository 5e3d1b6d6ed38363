//! Kernel-side programs. One module per signal family; each program is a thin entry point that
//! calls a fallible `try_*` function and never panics.
#![no_std]
#![no_main]
// Atomic adds on map values (see `runq_hist::atomic_add`); the crate builds on nightly only.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod block_io;
mod config;
mod connect;
mod context_sampler;
mod cpu_slices;
mod drops;
mod interrupts;
mod oom;
mod queue_wait;
mod reclaim;
mod runq_hist;
mod sched;
mod task;
mod task_sched;
mod task_storage;
mod tcp;
mod thread_context;
mod thread_state;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
