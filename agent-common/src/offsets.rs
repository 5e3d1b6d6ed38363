//! Kernel struct field offsets, resolved from the running kernel's BTF by the agent and handed
//! to the programs as a read-only global: no offset is compiled in.

/// Marks a field this kernel does not have; the programs fall back or skip the signal.
pub const OFFSET_ABSENT: u32 = u32::MAX;

/// Byte offsets of the fields the programs read through `bpf_probe_read_kernel`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
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
    /// `task_struct.se.cfs_rq`: `se` offset plus `sched_entity.cfs_rq` offset
    /// (CONFIG_FAIR_GROUP_SCHED). Absent: no throttling split.
    pub task_cfs_rq: u32,
    /// `cfs_rq.throttle_count`: non-zero while the cfs_rq or an ancestor is throttled.
    pub cfs_rq_throttle_count: u32,
    /// `cfs_rq.throttled_clock_self_time` (>= 6.5): cumulative ns this cfs_rq spent throttled;
    /// before 6.5 `throttled_clock_pelt_time`, the same sum on PELT's clock, added at each
    /// unthrottle. Absent: a wait is classified throttled as a whole when it began throttled.
    pub cfs_rq_throttled_self_ns: u32,
    /// `tcp_sock.retrans_stamp` (u32, ms on the tcp clock): when the stall being retransmitted
    /// began.
    pub tcp_retrans_stamp: u32,
    /// `sock_common.skc_net` (`possible_net_t`, whose only field is `struct net *`).
    pub sock_net: u32,
    /// `net.ns` plus `ns_common.inum`: the network namespace's inode, as
    /// `/proc/<pid>/ns/net` shows it.
    pub net_ns_inum: u32,
    /// `task_struct.thread` plus `thread_struct.fsbase` (x86_64): the thread pointer its user
    /// code runs with, where its TLS is. Absent: thread contexts are not read.
    pub task_fsbase: u32,
    /// `task_struct.flags`: io_uring and other user-worker threads (`PF_IO_WORKER`,
    /// `PF_USER_WORKER`) inherit their creator's thread pointer, not its context.
    pub task_flags: u32,
    /// `task_struct.in_iowait`, a one-bit field: its offset in *bits*. Set while the task sleeps
    /// in `io_schedule()` (block I/O, a page being read in). Absent: no I/O wait is told apart.
    pub task_in_iowait_bit: u32,
    /// `task_struct.in_memstall`, a one-bit field, in bits: set while the task stalls on memory
    /// (reclaim, the `memory.high` penalty, thrashing). Absent: no memory stall is told apart.
    pub task_in_memstall_bit: u32,
    /// `pt_regs.orig_ax` (x86_64): the system call a task entered, in the user registers
    /// `bpf_task_pt_regs` finds. Absent: no lock wait is told apart.
    pub pt_regs_syscall_nr: u32,
    /// The number of the `futex` system call on this architecture.
    pub syscall_futex: u32,
    /// `bio.bi_bdev` (`struct block_device *`, >= 5.12) and `block_device.bd_dev` (`dev_t`):
    /// the device a thread's block I/O goes to. Absent: the device of an I/O wait is not named.
    pub bio_bdev: u32,
    pub block_device_dev: u32,
    /// `tcp_sock.rcv_nxt` and `tcp_sock.copied_seq` (u32 sequence numbers): equal when an
    /// accepted connection has no unread bytes. Absent: no queue wait is measured.
    pub tcp_rcv_nxt: u32,
    pub tcp_copied_seq: u32,
    /// `css_set.subsys[memory_cgrp_id]`: a task's memory cgroup (`struct mem_cgroup` begins with
    /// its `css`); `cgroup_subsys_state.parent`; `mem_cgroup.memory.max` (pages). Absent: an
    /// OOM kill's limit is read from /proc and cgroupfs, if the victim is still there.
    pub css_set_memory_css: u32,
    pub css_parent: u32,
    pub mem_cgroup_max_pages: u32,
    /// `cfs_rq.rq` (CONFIG_FAIR_GROUP_SCHED) and `rq.prev_steal_time_rq`
    /// (CONFIG_PARAVIRT_TIME_ACCOUNTING), else `rq.prev_steal_time` (CONFIG_PARAVIRT, moved at
    /// each tick): the steal clock of the CPU a task's cfs_rq is on. Absent: no steal time is
    /// measured.
    pub cfs_rq_rq: u32,
    pub rq_steal_clock_ns: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 120);

impl KernelOffsets {
    pub const ZERO: KernelOffsets = KernelOffsets {
        task_pid: 0,
        task_tgid: 0,
        task_cgroups: 0,
        css_set_dfl_cgrp: 0,
        cgroup_kn: 0,
        kernfs_node_id: 0,
        task_state: 0,
        switch_has_prev_state: 0,
        task_cfs_rq: OFFSET_ABSENT,
        cfs_rq_throttle_count: OFFSET_ABSENT,
        cfs_rq_throttled_self_ns: OFFSET_ABSENT,
        tcp_retrans_stamp: OFFSET_ABSENT,
        sock_net: OFFSET_ABSENT,
        net_ns_inum: OFFSET_ABSENT,
        task_fsbase: OFFSET_ABSENT,
        task_flags: OFFSET_ABSENT,
        task_in_iowait_bit: OFFSET_ABSENT,
        task_in_memstall_bit: OFFSET_ABSENT,
        pt_regs_syscall_nr: OFFSET_ABSENT,
        syscall_futex: OFFSET_ABSENT,
        bio_bdev: OFFSET_ABSENT,
        block_device_dev: OFFSET_ABSENT,
        tcp_rcv_nxt: OFFSET_ABSENT,
        tcp_copied_seq: OFFSET_ABSENT,
        css_set_memory_css: OFFSET_ABSENT,
        css_parent: OFFSET_ABSENT,
        mem_cgroup_max_pages: OFFSET_ABSENT,
        cfs_rq_rq: OFFSET_ABSENT,
        rq_steal_clock_ns: OFFSET_ABSENT,
        _pad: 0,
    };
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelOffsets {}

/// Offsets of fields in the records of classic tracepoints, parsed from their `format` files in
/// tracefs at load time (the layout changed across kernels, e.g. `err` was added).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpTracepointOffsets {
    /// `tcp:tcp_retransmit_skb` fields.
    pub rtx_skaddr: u32,
    pub rtx_state: u32,
    pub rtx_sport: u32,
    pub rtx_dport: u32,
    pub rtx_family: u32,
    pub rtx_saddr: u32,
    pub rtx_daddr: u32,
    pub rtx_saddr_v6: u32,
    pub rtx_daddr_v6: u32,
    /// `tcp:tcp_retransmit_synack` fields.
    pub synack_skaddr: u32,
    pub synack_sport: u32,
    pub synack_dport: u32,
    pub synack_family: u32,
    pub synack_saddr: u32,
    pub synack_daddr: u32,
    pub synack_saddr_v6: u32,
    pub synack_daddr_v6: u32,
    /// `sock:sock_send_length` / `sock:sock_recv_length` `sk` field.
    pub sock_len_sk: u32,
    /// `sock:inet_sock_set_state` fields.
    pub state_skaddr: u32,
    pub state_oldstate: u32,
    pub state_newstate: u32,
    pub state_sport: u32,
    pub state_dport: u32,
    pub state_family: u32,
    pub state_protocol: u32,
    pub state_saddr: u32,
    pub state_daddr: u32,
    pub state_saddr_v6: u32,
    pub state_daddr_v6: u32,
    /// `tcp:tcp_rcv_space_adjust` `skaddr` field (the owner hook of kernels before 6.3).
    pub rcv_space_sk: u32,
    /// `oom:mark_victim` `pid` field (not a TCP tracepoint: the classic tracepoints' offsets
    /// travel together).
    pub mark_victim_pid: u32,
}

const _: () = assert!(core::mem::size_of::<TcpTracepointOffsets>() == 124);

impl TcpTracepointOffsets {
    pub const ZERO: TcpTracepointOffsets = TcpTracepointOffsets {
        rtx_skaddr: 0,
        rtx_state: 0,
        rtx_sport: 0,
        rtx_dport: 0,
        rtx_family: 0,
        rtx_saddr: 0,
        rtx_daddr: 0,
        rtx_saddr_v6: 0,
        rtx_daddr_v6: 0,
        synack_skaddr: 0,
        synack_sport: 0,
        synack_dport: 0,
        synack_family: 0,
        synack_saddr: 0,
        synack_daddr: 0,
        synack_saddr_v6: 0,
        synack_daddr_v6: 0,
        sock_len_sk: 0,
        state_skaddr: 0,
        state_oldstate: 0,
        state_newstate: 0,
        state_sport: 0,
        state_dport: 0,
        state_family: 0,
        state_protocol: 0,
        state_saddr: 0,
        state_daddr: 0,
        state_saddr_v6: 0,
        state_daddr_v6: 0,
        rcv_space_sk: 0,
        mark_victim_pid: 0,
    };
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for TcpTracepointOffsets {}
