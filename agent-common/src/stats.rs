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
    /// The sched ring buffer was full: an episode or bucket record was lost.
    SchedRingFull = 3,
    /// `THREAD_STATE` was full: a new thread of a watched process is not accounted.
    ThreadStateFull = 4,
    /// The TCP ring buffer was full: a retransmit record was lost.
    TcpRingFull = 5,
    /// `PENDING_CONNECT` or `CONNECTION_OWNER` refused an entry: a connection to an OTLP port
    /// has no kernel-recorded opener (its sender falls back to /proc).
    ConnectionOwnerFailed = 6,
    /// A published thread context (OTEP 4947) could not be read: a thread pointer, dtv or
    /// record not readable without a page fault. The interval keeps the last span read.
    ContextReadFailed = 7,
    /// The queue ring buffer was full: a request's queue wait was lost.
    QueueRingFull = 8,
    /// `PASSIVE_SOCKETS` refused an accepted connection: its requests' queue waits go unmeasured.
    PassiveSocketFailed = 9,
    /// The OOM ring buffer was full: a kill was not reported.
    OomRingFull = 10,
}

impl DropCounter {
    pub const COUNT: u32 = 11;
    pub const ALL: [DropCounter; Self::COUNT as usize] = [
        DropCounter::RunqHistFull,
        DropCounter::TaskReadFailed,
        DropCounter::RunqEnqueueFailed,
        DropCounter::SchedRingFull,
        DropCounter::ThreadStateFull,
        DropCounter::TcpRingFull,
        DropCounter::ConnectionOwnerFailed,
        DropCounter::ContextReadFailed,
        DropCounter::QueueRingFull,
        DropCounter::PassiveSocketFailed,
        DropCounter::OomRingFull,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DropCounter::RunqHistFull => "runq_hist_map_full",
            DropCounter::TaskReadFailed => "task_read_failed",
            DropCounter::RunqEnqueueFailed => "runq_enqueue_failed",
            DropCounter::SchedRingFull => "sched_ring_full",
            DropCounter::ThreadStateFull => "thread_state_map_full",
            DropCounter::TcpRingFull => "tcp_ring_full",
            DropCounter::ConnectionOwnerFailed => "connection_owner_failed",
            DropCounter::ContextReadFailed => "context_read_failed",
            DropCounter::QueueRingFull => "queue_ring_full",
            DropCounter::PassiveSocketFailed => "passive_socket_failed",
            DropCounter::OomRingFull => "oom_ring_full",
        }
    }
}
