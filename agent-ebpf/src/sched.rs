//! Scheduler hooks (BTF tracepoints). One program per hook: `sched_switch` does the node-wide
//! work (CPU slices, per-cgroup histograms) and the watched threads' accounting in one pass, so
//! that both share the clock read and the two tasks' local storage (two programs cost the
//! node's unwatched threads ~180 ns more per switch, BENCHMARKS.md).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use culprit_common::{
    KernelOffsets,
    accounting::{
        neighbour::{Neighbour, longest_holder, neighbour_of_wait},
        wake_chain::{self, LongWait},
        watch_cache,
    },
    thread::Delay,
};

use crate::{
    config::{kernel_offsets, probe_config},
    cpu_slices::{self, record_slice},
    runq_hist,
    task::{TASK_RUNNING, task_state, task_throttling, task_tid},
    task_sched::task_sched,
    thread_state::{self, watch_generation, watched_state},
};

/// `sched_waking`, not `sched_wakeup`: it runs in the waker's context on every kernel, where
/// `sched_wakeup` of a wakeup queued to another CPU runs there, in whatever that CPU was doing.
/// The waker is what the wake chain needs; the wait starts as the waker lets the task go.
#[btf_tracepoint(function = "sched_waking")]
pub fn sched_waking(ctx: BtfTracePointContext) -> i32 {
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
    let _ = try_switch(&ctx);
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    // The exiting task is the current one, and the tracepoint's argument.
    let tid = bpf_get_current_pid_tgid() as u32;
    let task: *const u8 = ctx.arg(0);
    thread_state::exit(task, tid, unsafe { bpf_ktime_get_ns() }, &kernel_offsets());
    0
}

#[inline(always)]
fn try_wakeup(task: *const u8, new: bool) -> Result<(), ()> {
    let off = kernel_offsets();
    let now_ns = unsafe { bpf_ktime_get_ns() };
    let ts = task_sched(task);
    // Run-queue waits are known only with the node summary on: so is the wake chain.
    let node_summary = probe_config().node_summary != 0;
    let mut waker_delay = Delay::NONE;
    if node_summary && let Some(ts) = ts {
        runq_hist::record_enqueue(ts, now_ns);
        if !new {
            waker_delay = cpu_slices::waker_delay(now_ns);
            wake_chain::keep(unsafe { &mut (*ts).carried }, waker_delay);
        }
    }
    if new {
        thread_state::wakeup_new(task, task_tid(task, &off)?, now_ns, &off);
    } else if let Some((tid, st)) = watched_state(ts, watch_generation(), || task_tid(task, &off)) {
        let waker = cpu_slices::waker();
        thread_state::wakeup(st, task, tid, now_ns, waker, &waker_delay, &off);
    }
    Ok(())
}

/// The state `prev` leaves its CPU in: `TASK_RUNNING` when preempted.
#[inline(always)]
fn prev_state(ctx: &BtfTracePointContext, prev: *const u8, off: &KernelOffsets) -> Result<u32, ()> {
    if off.switch_has_prev_state != 0 {
        Ok(ctx.arg::<u64>(3) as u32)
    } else {
        task_state(prev, off)
    }
}

fn try_switch(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let off = kernel_offsets();
    let now_ns = unsafe { bpf_ktime_get_ns() };
    // The tracepoint runs before the switch: the current task is still `prev`.
    let pid_tgid = bpf_get_current_pid_tgid();
    let (prev_tid, prev_tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    let slices = record_slice(prev_tid, prev_tgid, now_ns);
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    let prev_state = prev_state(ctx, prev, &off)?;
    let generation = watch_generation();
    let node_summary = probe_config().node_summary != 0;

    // Created if missing: the per-thread cache below lives there too.
    let next_ts = task_sched(next);
    if node_summary && let Some(ts) = next_ts {
        let wait_ns = runq_hist::record_dequeue(next, ts, now_ns, &off);
        if let Some(s) = slices {
            let long_wait = wake_chain::long_wait_start_ns(wait_ns, now_ns).map(|start_ns| {
                let holder = longest_holder(unsafe { &*s }, start_ns, now_ns);
                // Only at a long wait: the throttled clock costs three reads.
                let clock_ns = task_throttling(next, &off).map_or(0, |t| t.throttled_self_ns);
                LongWait {
                    start_ns,
                    neighbour_tgid: holder.tgid,
                    throttled_ns: wake_chain::throttled_wait_ns(
                        unsafe { &mut (*ts).throttled_clock_ns },
                        clock_ns,
                        now_ns - start_ns,
                        holder.ns,
                    ),
                }
            });
            wake_chain::switch_in(
                unsafe { &mut (*s).running_delay },
                unsafe { &mut (*ts).carried },
                next as u64,
                long_wait,
                now_ns,
            );
        }
    }
    if let Some((next_tid, st)) = watched_state(next_ts, generation, || task_tid(next, &off)) {
        thread_state::switch_in(
            st,
            next,
            next_tid,
            now_ns,
            &off,
            |wait_start_ns| match slices {
                Some(s) => {
                    neighbour_of_wait(unsafe { &*s }, prev_tgid, prev_tid, wait_start_ns, now_ns)
                }
                None => Neighbour::default(),
            },
        );
    }

    // `prev` after `next`: what the verifier explored for `next` joins again here, and the
    // skip below does not double it.
    let preempted = prev_state == TASK_RUNNING;
    // A settled unwatched task going to sleep needs nothing from its local storage: the CPU
    // remembers what its switch-in knew (`watch_cache`), one lookup fewer on most switches.
    let skip_prev = slices.is_some_and(|s| {
        watch_cache::skip_switch_out(
            unsafe { &mut (*s).running },
            prev as u64,
            preempted,
            generation,
        )
    });
    if !skip_prev {
        let prev_ts = task_sched(prev);
        if node_summary && let Some(ts) = prev_ts {
            runq_hist::record_switch_out(ts, preempted, now_ns);
        }
        if let Some((_, st)) = watched_state(prev_ts, generation, || Ok(prev_tid)) {
            thread_state::switch_out(st, prev, prev_tid, prev_tgid, prev_state, now_ns, &off);
        }
    }
    // After `watched_state`, which brought next's cached answer up to this generation.
    if let Some(s) = slices {
        let ts = next_ts.map(|ts| unsafe { &*ts });
        watch_cache::switch_in(unsafe { &mut (*s).running }, next as u64, ts, generation);
    }
    Ok(())
}
