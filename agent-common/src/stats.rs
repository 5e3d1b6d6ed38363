//! Loss accounting: every place the kernel side can lose data has a counter.

/// Index into the per-CPU `DROPS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropCounter {
    /// The run-queue histogram map was full: a new cgroup's samples were lost.
    RunqHistFull = 0,
    /// A kernel struct read failed (bad offset or unmapped memory).
    TaskReadFailed = 1,
    /// Recording a thread's enqueue time failed.
    RunqEnqueueFailed = 2,
}

impl DropCounter {
    pub const COUNT: u32 = 3;
    pub const ALL: [DropCounter; Self::COUNT as usize] = [
        DropCounter::RunqHistFull,
        DropCounter::TaskReadFailed,
        DropCounter::RunqEnqueueFailed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DropCounter::RunqHistFull => "runq_hist_map_full",
            DropCounter::TaskReadFailed => "task_read_failed",
            DropCounter::RunqEnqueueFailed => "runq_enqueue_failed",
        }
    }
}
