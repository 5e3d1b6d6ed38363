//! Reads of `task_struct` and the cgroup it belongs to, through offsets the agent resolved from
//! the running kernel's BTF.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use culprit_common::{DropCounter, TaskOffsets};

use crate::drops::count_drop;

#[unsafe(no_mangle)]
static TASK_OFFSETS: TaskOffsets = TaskOffsets {
    task_pid: 0,
    task_tgid: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    task_state: 0,
    switch_has_prev_state: 0,
};

#[inline(always)]
pub fn offsets() -> TaskOffsets {
    // Volatile: the value is patched by the loader, the compiler must not fold the zeros above.
    unsafe { core::ptr::read_volatile(&TASK_OFFSETS) }
}

#[inline(always)]
fn read_at<T>(base: *const u8, offset: u32) -> Result<T, ()> {
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T) }.map_err(|_| {
        count_drop(DropCounter::TaskReadFailed);
    })
}

/// Thread id of a task.
#[inline(always)]
pub fn task_tid(task: *const u8, off: &TaskOffsets) -> Result<u32, ()> {
    read_at::<u32>(task, off.task_pid)
}

/// Process id of a task.
#[inline(always)]
#[allow(dead_code)]
pub fn task_tgid(task: *const u8, off: &TaskOffsets) -> Result<u32, ()> {
    read_at::<u32>(task, off.task_tgid)
}

/// Scheduler state of a task (0 is runnable).
#[inline(always)]
pub fn task_state(task: *const u8, off: &TaskOffsets) -> Result<u32, ()> {
    read_at::<u32>(task, off.task_state)
}

/// The cgroup v2 id of a task: `task->cgroups->dfl_cgrp->kn->id`.
#[inline(always)]
pub fn task_cgroup_id(task: *const u8, off: &TaskOffsets) -> Result<u64, ()> {
    let css_set: *const u8 = read_at(task, off.task_cgroups)?;
    let cgroup: *const u8 = read_at(css_set, off.css_set_dfl_cgrp)?;
    let kn: *const u8 = read_at(cgroup, off.cgroup_kn)?;
    read_at::<u64>(kn, off.kernfs_node_id)
}
