//! The context sampler: a perf event per CPU that interrupts the running task at a fixed rate.
//! For a watched thread that publishes its context, a change of span since the last look ends
//! its interval on CPU there, so that a runtime switching requests on one thread without leaving
//! the CPU (async) still has each request's CPU time, to within one period. Everything else
//! returns after one hash lookup.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns},
    macros::perf_event,
    programs::PerfEventContext,
};

use crate::{config::kernel_offsets, thread_context, thread_state};

#[perf_event]
pub fn context_sample(_ctx: PerfEventContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tid, tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    if !thread_context::publishes(tgid) {
        return 0;
    }
    let task = unsafe { bpf_get_current_task() } as *const u8;
    thread_state::sample(
        task,
        tid,
        tgid,
        unsafe { bpf_ktime_get_ns() },
        &kernel_offsets(),
    );
    0
}
