//! Map names, so that both sides refer to the same object by the same constant.

/// Per-thread timestamp of the moment the thread became runnable (tid -> ns).
pub const RUNQ_ENQUEUED_NS: &str = "RUNQ_ENQUEUED_NS";
/// Run-queue delay histogram per cgroup id (cgroup id -> [`crate::RunqHist`]).
pub const RUNQ_HIST: &str = "RUNQ_HIST";
/// Per-CPU drop counters, indexed by [`crate::DropCounter`].
pub const DROPS: &str = "DROPS";

/// Global variable holding the kernel struct offsets resolved from BTF at load time.
pub const TASK_OFFSETS_GLOBAL: &str = "TASK_OFFSETS";
