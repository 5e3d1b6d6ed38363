//! Kernel struct field offsets, resolved from the running kernel's BTF by the agent and handed
//! to the programs as a read-only global: no offset is compiled in.

/// Byte offsets of the fields the programs read through `bpf_probe_read_kernel`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `task_struct.pid` (the thread id).
    pub task_pid: u32,
    /// `task_struct.tgid` (the process id).
    pub task_tgid: u32,
    /// `task_struct.cgroups` (`struct css_set *`).
    pub task_cgroups: u32,
    /// `css_set.dfl_cgrp` (`struct cgroup *`, the cgroup v2 membership).
    pub css_set_dfl_cgrp: u32,
    /// `cgroup.kn` (`struct kernfs_node *`).
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (`u64`, the cgroup id userspace sees as the directory inode).
    pub kernfs_node_id: u32,
    /// `task_struct.__state` (or `state` before 5.14), used when the `sched_switch`
    /// tracepoint does not pass `prev_state` (before 5.18).
    pub task_state: u32,
    /// Non-zero when `sched_switch` passes `prev_state` as its fourth argument.
    pub switch_has_prev_state: u32,
}

const _: () = assert!(core::mem::size_of::<TaskOffsets>() == 32);

#[cfg(feature = "user")]
unsafe impl aya::Pod for TaskOffsets {}
