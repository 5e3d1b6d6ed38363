//! Memory reclaim a watched thread does itself, on its own CPU: between the `vmscan` begin and
//! end tracepoints its time on CPU is reclaim (`memory.reclaim`); a sleep inside is already a
//! memory stall (`in_memstall`, read at the switch-out). Direct reclaim (the page allocator out
//! of free pages) and a memory cgroup's reclaim (its limit or `memory.high` reached) both run in
//! the task that needed the memory. Rare: only under memory pressure, so a plain lookup by tid.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};

use crate::{config::kernel_offsets, thread_state};

#[inline(always)]
fn edge(begin: bool) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let now_ns = unsafe { bpf_ktime_get_ns() };
    thread_state::reclaim(
        task,
        pid_tgid as u32,
        (pid_tgid >> 32) as u32,
        now_ns,
        begin,
        &kernel_offsets(),
    );
}

#[btf_tracepoint(function = "mm_vmscan_direct_reclaim_begin")]
pub fn mm_vmscan_direct_reclaim_begin(_ctx: BtfTracePointContext) -> i32 {
    edge(true);
    0
}

#[btf_tracepoint(function = "mm_vmscan_direct_reclaim_end")]
pub fn mm_vmscan_direct_reclaim_end(_ctx: BtfTracePointContext) -> i32 {
    edge(false);
    0
}

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_begin")]
pub fn mm_vmscan_memcg_reclaim_begin(_ctx: BtfTracePointContext) -> i32 {
    edge(true);
    0
}

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_end")]
pub fn mm_vmscan_memcg_reclaim_end(_ctx: BtfTracePointContext) -> i32 {
    edge(false);
    0
}
