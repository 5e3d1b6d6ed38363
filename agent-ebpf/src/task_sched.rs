//! Per-task scheduler bookkeeping in task-local storage, shared by the node-wide hooks (enqueue
//! time, cgroup) and the per-thread ones (whether the task is watched).

use aya_ebpf::macros::btf_map;
use culprit_common::{DropCounter, thread::TaskSched};

use crate::{drops::count_drop, task_storage::TaskStorage};

#[btf_map(name = "TASK_SCHED")]
static TASK_SCHED: TaskStorage<TaskSched> = TaskStorage::new();

/// The task's bookkeeping, created zeroed on first use.
#[inline(always)]
pub fn task_sched(task: *const u8) -> Option<*mut TaskSched> {
    let ts = TASK_SCHED.get_or_create(task);
    if ts.is_none() {
        count_drop(DropCounter::RunqEnqueueFailed);
    }
    ts
}
