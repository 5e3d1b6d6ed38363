//! Reads of `task_struct`, its cgroup and its cfs_rq, through offsets the agent resolved from the
//! running kernel's BTF.

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated::bpf_task_pt_regs};
use culprit_common::{
    DropCounter, KernelOffsets, OFFSET_ABSENT,
    accounting::{thread_time::StealClock, throttle::Throttling},
    thread::wait,
};

use crate::drops::count_drop;

/// Reads a `T` at `offset` bytes into a kernel object; a failed read is counted.
#[inline(always)]
pub fn read_kernel<T>(base: *const u8, offset: u32) -> Result<T, ()> {
    read_at(base, offset)
}

#[inline(always)]
fn read_at<T>(base: *const u8, offset: u32) -> Result<T, ()> {
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T) }.map_err(|_| {
        count_drop(DropCounter::TaskReadFailed);
    })
}

/// Thread id of a task.
#[inline(always)]
pub fn task_tid(task: *const u8, off: &KernelOffsets) -> Result<u32, ()> {
    read_at::<u32>(task, off.task_pid)
}

/// Process id of a task.
#[inline(always)]
pub fn task_tgid(task: *const u8, off: &KernelOffsets) -> Result<u32, ()> {
    read_at::<u32>(task, off.task_tgid)
}

/// Scheduler state of a task (0 is runnable).
#[inline(always)]
pub fn task_state(task: *const u8, off: &KernelOffsets) -> Result<u32, ()> {
    read_at::<u32>(task, off.task_state)
}

/// The cgroup v2 id of a task: `task->cgroups->dfl_cgrp->kn->id`.
#[inline(always)]
pub fn task_cgroup_id(task: *const u8, off: &KernelOffsets) -> Result<u64, ()> {
    let css_set: *const u8 = read_at(task, off.task_cgroups)?;
    let cgroup: *const u8 = read_at(css_set, off.css_set_dfl_cgrp)?;
    let kn: *const u8 = read_at(cgroup, off.cgroup_kn)?;
    read_at::<u64>(kn, off.kernfs_node_id)
}

/// Whether the one-bit field of `task` at `bit` is set: false where the kernel has no such
/// field or the read fails.
#[inline(always)]
fn task_flag_bit(task: *const u8, bit: u32) -> bool {
    if bit == OFFSET_ABSENT {
        return false;
    }
    let byte = read_at::<u8>(task, bit / 8).unwrap_or(0);
    byte & (1 << (bit % 8)) != 0
}

/// A task's state when runnable: a task that leaves its CPU in it was preempted.
pub const TASK_RUNNING: u32 = 0;
/// `orig_ax` where the kernel entered from user mode through an exception or an interrupt,
/// not a system call: its entry code sets -1 there.
const NOT_A_SYSCALL: u64 = u64::MAX;
/// [`task_syscall_nr`] where the registers cannot be read.
const NR_UNKNOWN: u64 = u64::MAX - 1;
/// `TASK_UNINTERRUPTIBLE`: a page fault sleeps in it (killable or not), a stopped or traced
/// task does not.
const TASK_UNINTERRUPTIBLE: u32 = 0x2;

/// The system call `task` is in, from its saved user registers: its `orig_ax`, the call's
/// number inside one, [`NOT_A_SYSCALL`] in an exception, [`NR_UNKNOWN`] where unknown. A plain
/// value, not an `Option`: compared as one, the verifier saw an unread register on the `None`
/// path.
#[inline(always)]
fn task_syscall_nr(task: *const u8, off: &KernelOffsets) -> u64 {
    if off.pt_regs_syscall_nr == OFFSET_ABSENT {
        return NR_UNKNOWN;
    }
    let regs = unsafe { bpf_task_pt_regs(task as *mut _) } as *const u8;
    if regs.is_null() {
        return NR_UNKNOWN;
    }
    read_at::<u64>(regs, off.pt_regs_syscall_nr).unwrap_or(NR_UNKNOWN)
}

/// [`wait::MEMORY`] if `task` is in a memory stall, else [`wait::OTHER`].
#[inline(always)]
pub fn task_memory_stalled(task: *const u8, off: &KernelOffsets) -> u32 {
    if task_flag_bit(task, off.task_in_memstall_bit) {
        wait::MEMORY
    } else {
        wait::OTHER
    }
}

/// Why `task`, leaving its CPU blocking in `state`, blocks (one of `wait`): a memory stall,
/// then a page fault (asleep uninterruptibly with an exception's registers: the kernel came in
/// from user mode through the fault, not a system call), then `io_schedule()`, then a `futex`
/// call; each where the kernel says so.
#[inline(always)]
pub fn task_wait_reason(task: *const u8, state: u32, off: &KernelOffsets) -> u32 {
    if task_flag_bit(task, off.task_in_memstall_bit) {
        return wait::MEMORY;
    }
    let nr = task_syscall_nr(task, off);
    if nr == NOT_A_SYSCALL && state & TASK_UNINTERRUPTIBLE != 0 {
        wait::FAULT
    } else if task_flag_bit(task, off.task_in_iowait_bit) {
        wait::IO
    } else if nr == u64::from(off.syscall_futex) {
        wait::LOCK
    } else {
        wait::OTHER
    }
}

/// `task->se.cfs_rq` and its throttling state; `None` without CONFIG_FAIR_GROUP_SCHED.
#[inline(always)]
pub fn task_throttling(task: *const u8, off: &KernelOffsets) -> Option<Throttling> {
    if off.task_cfs_rq == OFFSET_ABSENT || off.cfs_rq_throttle_count == OFFSET_ABSENT {
        return None;
    }
    let cfs_rq: *const u8 = read_at(task, off.task_cfs_rq).ok()?;
    if cfs_rq.is_null() {
        return None;
    }
    let throttle_count = read_at::<i32>(cfs_rq, off.cfs_rq_throttle_count).ok()?;
    let throttled_self_ns = if off.cfs_rq_throttled_self_ns == OFFSET_ABSENT {
        0
    } else {
        read_at::<u64>(cfs_rq, off.cfs_rq_throttled_self_ns).ok()?
    };
    Some(Throttling {
        cfs_rq: cfs_rq as u64,
        throttle_count: throttle_count.max(0) as u32,
        throttled_self_ns,
    })
}

/// The steal clock of the CPU `task` is on (or last ran on): `task->se.cfs_rq->rq`'s
/// `prev_steal_time_rq`, what the hypervisor took from the CPU as its run queue's clock has
/// applied it (brought up to date by every `schedule()`, so exact at a switch), or where the
/// kernel has no such clock `prev_steal_time`, the steal its tick has accounted (to within a
/// tick). `None` without either or without group scheduling.
#[inline(always)]
pub fn cpu_steal_clock(task: *const u8, off: &KernelOffsets) -> StealClock {
    if off.task_cfs_rq == OFFSET_ABSENT
        || off.cfs_rq_rq == OFFSET_ABSENT
        || off.rq_steal_clock_ns == OFFSET_ABSENT
    {
        return None;
    }
    let cfs_rq: *const u8 = read_at(task, off.task_cfs_rq).ok()?;
    if cfs_rq.is_null() {
        return None;
    }
    let rq: *const u8 = read_at(cfs_rq, off.cfs_rq_rq).ok()?;
    if rq.is_null() {
        return None;
    }
    read_at::<u64>(rq, off.rq_steal_clock_ns).ok()
}
