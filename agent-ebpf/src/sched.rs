//! Scheduler hooks (BTF tracepoints). `sched_switch` has two programs, verified and measured
//! separately: the node-wide one (CPU slices, per-cgroup histograms) runs first, then the one
//! for watched threads.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use culprit_common::KernelOffsets;

use crate::{
    config::{kernel_offsets, probe_config},
    cpu_slices::{Neighbour, neighbour_of_wait, record_slice, this_cpu},
    runq_hist,
    task::{task_state, task_tid},
    thread_state,
};

const TASK_RUNNING: u32 = 0;

#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    let _ = try_wakeup(ctx.arg(0), false);
    0
}

#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    let _ = try_wakeup(ctx.arg(0), true);
    0
}

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    let _ = try_switch_node(&ctx);
    0
}

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_threads(ctx: BtfTracePointContext) -> i32 {
    let _ = try_switch_threads(&ctx);
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(_ctx: BtfTracePointContext) -> i32 {
    // The exiting task is the current one.
    let tid = bpf_get_current_pid_tgid() as u32;
    thread_state::exit(tid, unsafe { bpf_ktime_get_ns() });
    0
}

#[inline(always)]
fn try_wakeup(task: *const u8, new: bool) -> Result<(), ()> {
    let off = kernel_offsets();
    let tid = task_tid(task, &off)?;
    let now_ns = unsafe { bpf_ktime_get_ns() };
    if probe_config().node_summary != 0 {
        runq_hist::record_enqueue(task, now_ns);
    }
    if new {
        thread_state::wakeup_new(task, tid, now_ns, &off);
    } else {
        thread_state::wakeup(task, tid, now_ns, &off);
    }
    Ok(())
}

/// Whether `prev` was switched out while still runnable (preempted).
#[inline(always)]
fn prev_preempted(
    ctx: &BtfTracePointContext,
    prev: *const u8,
    off: &KernelOffsets,
) -> Result<bool, ()> {
    let prev_state = if off.switch_has_prev_state != 0 {
        ctx.arg::<u64>(3) as u32
    } else {
        task_state(prev, off)?
    };
    Ok(prev_state == TASK_RUNNING)
}

fn try_switch_node(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let off = kernel_offsets();
    let now_ns = unsafe { bpf_ktime_get_ns() };
    // The tracepoint runs before the switch: the current task is still `prev`.
    let pid_tgid = bpf_get_current_pid_tgid();
    let (prev_tid, prev_tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    let _ = record_slice(prev_tid, prev_tgid, now_ns);
    if probe_config().node_summary == 0 {
        return Ok(());
    }
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    runq_hist::record_switch_out(prev, prev_preempted(ctx, prev, &off)?, now_ns);
    runq_hist::record_dequeue(next, now_ns, &off);
    Ok(())
}

fn try_switch_threads(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let off = kernel_offsets();
    let now_ns = unsafe { bpf_ktime_get_ns() };
    let pid_tgid = bpf_get_current_pid_tgid();
    let (prev_tid, prev_tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    let preempted = prev_preempted(ctx, prev, &off)?;
    thread_state::switch_out(prev, prev_tid, prev_tgid, preempted, now_ns, &off);
    let next_tid = task_tid(next, &off)?;
    thread_state::switch_in(
        next,
        next_tid,
        now_ns,
        &off,
        |wait_start_ns| match this_cpu() {
            Some(s) => neighbour_of_wait(s, prev_tgid, prev_tid, wait_start_ns, now_ns),
            None => Neighbour::default(),
        },
    );
    Ok(())
}
