//! Who held each CPU recently: the last few slices of CPU time per CPU, so that a watched
//! thread's run-queue wait can be charged to the neighbours that ran while it waited. The ring's
//! arithmetic is `culprit_common::accounting::neighbour`.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task},
    macros::map,
    maps::{Array, PerCpuArray},
};
use culprit_common::{
    accounting::{neighbour::close_slice, wake_chain},
    thread::{CpuSlices, Delay},
};

#[map(name = "CPU_SLICES")]
static CPU_SLICES: PerCpuArray<CpuSlices> = PerCpuArray::with_max_entries(1, 0);

/// Non-zero once the agent attached every interrupt hook (`interrupts`): without them a timer's
/// wakeup would pass the interrupted task's delay on, so no delay is passed on at all.
#[map(name = "WAKE_CHAIN_ON")]
static WAKE_CHAIN_ON: Array<u32> = Array::with_max_entries(1, 0);

/// Closes the slice of the thread leaving this CPU.
#[inline(always)]
pub fn record_slice(prev_tid: u32, prev_tgid: u32, now_ns: u64) -> Option<*mut CpuSlices> {
    let s = CPU_SLICES.get_ptr_mut(0)?;
    // Per-CPU and the scheduler hooks do not nest on one CPU: plain writes are safe.
    close_slice(unsafe { &mut *s }, prev_tid, prev_tgid, now_ns);
    // No interrupt handler switches tasks: an exit missed (attached after its entry) ends here.
    unsafe { (*s).interrupt_depth = 0 };
    Some(s)
}

/// A timer or device interrupt handler begins on this CPU.
#[inline(always)]
pub fn enter_interrupt() {
    if let Some(s) = CPU_SLICES.get_ptr_mut(0) {
        let depth = unsafe { &mut (*s).interrupt_depth };
        *depth = depth.saturating_add(1);
    }
}

/// It ends.
#[inline(always)]
pub fn leave_interrupt() {
    if let Some(s) = CPU_SLICES.get_ptr_mut(0) {
        let depth = unsafe { &mut (*s).interrupt_depth };
        *depth = depth.saturating_sub(1);
    }
}

/// The process and thread waking a task now: the current ones, or 0s inside a timer or device
/// interrupt handler, whose wakeups are nobody's doing.
#[inline(always)]
pub fn waker() -> (u32, u32) {
    let in_interrupt = CPU_SLICES
        .get_ptr(0)
        .is_some_and(|s| unsafe { (*s).interrupt_depth } != 0);
    if in_interrupt {
        (0, 0)
    } else {
        let pid_tgid = bpf_get_current_pid_tgid();
        ((pid_tgid >> 32) as u32, pid_tgid as u32)
    }
}

/// The delay the current task (the waker, or the task a softirq interrupted) passes on to a
/// task it wakes at `now_ns`. The task pointer is read only when this CPU holds a delay.
#[inline(always)]
pub fn waker_delay(now_ns: u64) -> Delay {
    let Some(s) = CPU_SLICES.get_ptr(0) else {
        return Delay::NONE;
    };
    let (running, depth) = unsafe { (&(*s).running_delay, (*s).interrupt_depth) };
    if running.task == 0 || depth != 0 || WAKE_CHAIN_ON.get(0).copied().unwrap_or(0) == 0 {
        return Delay::NONE;
    }
    wake_chain::passed_on(running, unsafe { bpf_get_current_task() }, now_ns)
}
