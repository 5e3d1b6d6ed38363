//! Map and global names, so that both sides refer to the same object by the same constant.

/// Task-local [`crate::thread::TaskSched`]: enqueue time and cached cgroup, node-wide.
pub const TASK_SCHED: &str = "TASK_SCHED";
/// Run-queue delay histogram per cgroup id (cgroup id -> [`crate::RunqHist`]).
pub const RUNQ_HIST: &str = "RUNQ_HIST";
/// Per-CPU run-queue histograms of the cgroups the agent gave a slot (slot ->
/// [`crate::RunqCpuHist`], [`crate::RUNQ_CPU_SLOTS`] of them).
pub const RUNQ_HIST_CPU: &str = "RUNQ_HIST_CPU";
/// The slot each of those cgroups has in `RUNQ_HIST_CPU` (cgroup id -> u32), written by the
/// agent; the kernel caches a task's in its [`crate::thread::TaskSched`].
pub const RUNQ_SLOT_OF: &str = "RUNQ_SLOT_OF";
/// Per-CPU drop counters, indexed by [`crate::DropCounter`].
pub const DROPS: &str = "DROPS";
/// One u32, set by the agent once every interrupt hook of the wake chain is attached: until
/// then no waker passes its run-queue delay on (`crate::accounting::wake_chain`).
pub const WAKE_CHAIN_ON: &str = "WAKE_CHAIN_ON";
/// Watched threads (tid -> [`crate::thread::ThreadState`]).
pub const THREAD_STATE: &str = "THREAD_STATE";
/// The watch generation (one u32): bumped by the agent after it adds threads to
/// `THREAD_STATE`, so that the kernel re-checks tasks it had cached as unwatched. Never 0.
pub const WATCH_GENERATION: &str = "WATCH_GENERATION";
/// Processes whose new threads are watched from birth (tgid -> 1).
pub const WATCHED_TGIDS: &str = "WATCHED_TGIDS";
/// Cgroup v2 ids whose new threads are watched from birth (cgroup id -> 1).
pub const WATCHED_CGROUPS: &str = "WATCHED_CGROUPS";
/// Ring buffer of [`crate::thread::SchedRecord`].
pub const SCHED_EVENTS: &str = "SCHED_EVENTS";
/// Ring buffer of [`crate::tcp::RetransmitRecord`].
pub const TCP_EVENTS: &str = "TCP_EVENTS";
/// Ring buffer of [`crate::tcp::QueueRecord`].
pub const QUEUE_EVENTS: &str = "QUEUE_EVENTS";
/// Accepted connections (`struct sock *` -> [`crate::tcp::PassiveSocket`]).
pub const PASSIVE_SOCKETS: &str = "PASSIVE_SOCKETS";
/// Ring buffer of [`crate::oom::OomRecord`].
pub const OOM_EVENTS: &str = "OOM_EVENTS";
/// Socket owners (`struct sock *` -> [`crate::tcp::SockOwner`]).
pub const SOCK_OWNER: &str = "SOCK_OWNER";
/// Connections being opened to an OTLP port (`struct sock *` -> [`crate::tcp::PendingConnect`]).
pub const PENDING_CONNECT: &str = "PENDING_CONNECT";
/// Who opened each connection to an OTLP port ([`crate::tcp::ConnectionKey`] ->
/// [`crate::tcp::ConnectionOwner`]).
pub const CONNECTION_OWNER: &str = "CONNECTION_OWNER";

/// Processes that publish an OTEP 4947 thread context (tgid ->
/// [`crate::context::ContextLocation`]).
pub const CONTEXT_LOCATIONS: &str = "CONTEXT_LOCATIONS";

/// Global variables patched by the loader.
pub const KERNEL_OFFSETS_GLOBAL: &str = "KERNEL_OFFSETS";
pub const TCP_TP_OFFSETS_GLOBAL: &str = "TCP_TP_OFFSETS";
pub const PROBE_CONFIG_GLOBAL: &str = "PROBE_CONFIG";
