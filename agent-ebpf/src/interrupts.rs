//! Interrupt context for the wake chain: a timer expiring or a device interrupt wakes a thread
//! on top of whatever task it interrupted, which did nothing for that thread. While one runs,
//! this CPU's running task passes no delay on (`cpu_slices::waker_delay`): a sleep that ends
//! on its timer is not its waker's delay.
//!
//! A softirq is not counted: loopback's receive work runs as one in the sending task's own
//! context, where the sender is the waker.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::cpu_slices::{enter_interrupt, leave_interrupt};

#[btf_tracepoint(function = "hrtimer_expire_entry")]
pub fn hrtimer_expire_entry(_ctx: BtfTracePointContext) -> i32 {
    enter_interrupt();
    0
}

#[btf_tracepoint(function = "hrtimer_expire_exit")]
pub fn hrtimer_expire_exit(_ctx: BtfTracePointContext) -> i32 {
    leave_interrupt();
    0
}

#[btf_tracepoint(function = "timer_expire_entry")]
pub fn timer_expire_entry(_ctx: BtfTracePointContext) -> i32 {
    enter_interrupt();
    0
}

#[btf_tracepoint(function = "timer_expire_exit")]
pub fn timer_expire_exit(_ctx: BtfTracePointContext) -> i32 {
    leave_interrupt();
    0
}

#[btf_tracepoint(function = "irq_handler_entry")]
pub fn irq_handler_entry(_ctx: BtfTracePointContext) -> i32 {
    enter_interrupt();
    0
}

#[btf_tracepoint(function = "irq_handler_exit")]
pub fn irq_handler_exit(_ctx: BtfTracePointContext) -> i32 {
    leave_interrupt();
    0
}
