//! OOM kills: the kernel's `oom:mark_victim`, with what the programs can tell of who was killed
//! and whose allocation asked for the memory.

/// A record on the `OOM_EVENTS` ring buffer: one task chosen and killed for memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomRecord {
    pub ts_ns: u64,
    /// The victim (its thread id, as the tracepoint names it).
    pub victim_pid: u32,
    /// The process whose allocation ran out of memory (the current task at the kill).
    pub trigger_tgid: u32,
    /// Its cgroup v2 id: the memory cgroup at its limit, or one below it.
    pub trigger_cgroup_id: u64,
    /// The victim's cgroup v2 id and name when it was itself the trigger (the usual case in a
    /// container at its limit); 0 and empty otherwise, the agent reads /proc.
    pub victim_cgroup_id: u64,
    pub victim_comm: [u8; 16],
    /// The lowest hard memory limit on the trigger's memory cgroup's way to the root, in bytes
    /// (the limit the kill enforced, for a cgroup's OOM); 0 when none or unknown.
    pub memory_limit_bytes: u64,
}

const _: () = assert!(core::mem::size_of::<OomRecord>() == 56);

#[cfg(feature = "user")]
unsafe impl aya::Pod for OomRecord {}
