//! Per-thread time accounting for watched threads: every moment of a watched thread is on a
//! CPU, waiting in a run queue, or off CPU (blocked).

/// What a watched thread is doing.
pub mod state {
    /// Registered by the agent, not yet seen by the scheduler hooks.
    pub const UNKNOWN: u32 = 0;
    pub const ON_CPU: u32 = 1;
    /// Runnable, waiting for a CPU (woken or preempted).
    pub const RUNQ: u32 = 2;
    /// Blocked: sleeping, waiting for I/O, a lock, the network.
    pub const OFF_CPU: u32 = 3;
}

/// Why a watched thread left its CPU blocking, as the kernel says at that moment: what its time
/// off CPU is spent on until it is woken.
pub mod wait {
    /// Anything else: a sleep, a socket, a pipe, a poll.
    pub const OTHER: u32 = 0;
    /// In `io_schedule()` (`task_struct.in_iowait`): block I/O, a page being read in.
    pub const IO: u32 = 1;
    /// In a `futex` system call: a lock, a condition variable, a thread handing over work.
    pub const LOCK: u32 = 2;
    /// In a memory stall (`task_struct.in_memstall`): direct reclaim, the `memory.high`
    /// penalty sleep, waiting on a page that thrashes. Takes precedence over [`IO`].
    pub const MEMORY: u32 = 3;
    /// Asleep in a page fault taken in user mode (its saved registers are an exception's, not a
    /// system call's): a major fault reading the page in, or waiting for the address space's
    /// lock to map it. Takes precedence over [`IO`], yields to [`MEMORY`] (a fault that
    /// reclaims, a page that thrashes).
    pub const FAULT: u32 = 4;
}

/// Short intervals of one thread summed over one bucket, with the neighbour that took most of
/// its run-queue time in the bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadBucket {
    /// Start of the bucket (a multiple of the bucket width); 0 when empty.
    pub start_ns: u64,
    pub on_cpu_ns: u64,
    pub runq_ns: u64,
    /// The part of `runq_ns` spent while the thread's cgroup was CFS-throttled.
    pub throttled_ns: u64,
    pub off_cpu_ns: u64,
    pub neighbour_ns: u64,
    pub neighbour_tgid: u32,
    /// The process that held the CPU from the wakers of `waker_delay_ns`, the longest of them.
    pub waker_neighbour_tgid: u32,
    /// The part of `off_cpu_ns` the thread slept while its waker sat in a run queue behind a
    /// neighbour (`accounting::wake_chain`): contention through another thread.
    pub waker_delay_ns: u64,
    /// The part of `off_cpu_ns` the thread slept while its waker waited throttled by its
    /// cgroup's CFS quota: throttling through another thread.
    pub waker_throttled_ns: u64,
    /// The part of `off_cpu_ns` the thread slept in `io_schedule()`: waiting on block I/O (its
    /// reads and writes, a page being read in for it).
    pub io_wait_ns: u64,
    /// The process whose wakeups ended most of `off_cpu_ns` (0: a timer or device interrupt),
    /// and the time off CPU they ended (0: no wakeup seen). One name per bucket: a new waker
    /// takes it when one sleep of its alone outweighs the sum so far.
    pub woken_by_tgid: u32,
    /// The thread whose wakeups ended most of `lock_wait_ns`: the one that released the lock.
    pub lock_waker_tid: u32,
    pub woken_by_ns: u64,
    /// The part of `off_cpu_ns` the thread slept in a `futex` call ([`wait::LOCK`]), less what
    /// its releaser's own delays explain (`waker_delay_ns`, `waker_throttled_ns`).
    pub lock_wait_ns: u64,
    /// The part of `off_cpu_ns` the thread slept in a memory stall ([`wait::MEMORY`]).
    pub memory_stall_ns: u64,
    /// The part of `on_cpu_ns` the thread spent reclaiming memory itself (between the
    /// `mm_vmscan_*_reclaim_begin` and `_end` tracepoints).
    pub reclaim_on_cpu_ns: u64,
    /// The block device (the kernel's `dev_t`: major << 20 | minor) of most of `io_wait_ns` and `fault_wait_ns`,
    /// the one the thread last queued I/O to before each wait; 0: unknown.
    pub io_dev: u32,
    pub _pad: u32,
    /// The part of `runq_ns` (less its throttled part) the thread waited while in a memory
    /// stall (`in_memstall`): preempted while reclaiming, or woken from a stall and not yet
    /// back on a CPU. The kernel's pressure accounting (PSI) counts it as stalled on memory.
    pub memory_runq_ns: u64,
    /// The part of `off_cpu_ns` the thread slept in a page fault ([`wait::FAULT`]).
    pub fault_wait_ns: u64,
    /// The part of `on_cpu_ns` the hypervisor ran something else on the thread's virtual CPU
    /// (steal time): the thread held its CPU and made no progress.
    pub steal_ns: u64,
}

const _: () = assert!(core::mem::size_of::<ThreadBucket>() == 152);

/// The kernel's per-thread record (map `THREAD_STATE`, keyed by tid). Its presence is what makes
/// a thread watched.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadState {
    /// One of [`state`].
    pub state: u32,
    pub tgid: u32,
    /// When the current state began.
    pub since_ns: u64,
    /// The cfs_rq the thread waited on, and its throttling clock, when the wait began.
    pub cfs_rq: u64,
    pub throttled_self_ns_at_enqueue: u64,
    /// Non-zero when the cfs_rq (or an ancestor) was throttled as the wait began.
    pub throttled_at_enqueue: u32,
    /// Non-zero while a scheduler hook is changing this state for the thread on the CPU: the
    /// context sampler, which can interrupt it (an NMI), then leaves the state alone.
    pub in_hook: u32,
    pub bucket: ThreadBucket,
    /// The span of the thread's published context (OTEP 4947) when the current interval began:
    /// read as the thread last left a CPU or was last sampled. 0: none or not published.
    pub span_id: u64,
    /// When a wakeup found the thread still on its CPU (0: none since it last left one). A
    /// thread that leaves its CPU blocking right after was woken as it left: it waits.
    pub woken_on_cpu_ns: u64,
    /// Why the thread left its CPU (one of [`wait`]): what its time off CPU is; for a thread
    /// preempted, [`wait::MEMORY`] or [`wait::OTHER`] (whether it was in a memory stall), and
    /// after a wakeup still the sleep's: a run-queue wait in a memory stall is the stall's.
    pub wait_reason: u32,
    /// Non-zero while the thread reclaims memory on its CPU: its time on CPU is reclaim.
    pub reclaiming: u32,
    /// The block device the thread last queued I/O to (`block_bio_queue`), as in
    /// [`ThreadBucket::io_dev`]; 0: none seen.
    pub io_dev: u32,
    /// Non-zero when `steal_clock_ns` was read as the current interval on CPU began.
    pub steal_known: u32,
    /// The CPU's steal clock (ns the hypervisor took from it, as its run queue has applied
    /// them) when the current interval on CPU began.
    pub steal_clock_ns: u64,
    /// The thread's recent memory stalls, one window (`accounting::memory_chain`): what a
    /// thread it wakes waited for meanwhile was memory.
    pub memory_stall: Delay,
}

const _: () = assert!(core::mem::size_of::<ThreadState>() == 272);

/// Record kinds on the `SCHED_EVENTS` ring buffer.
pub mod record {
    /// One interval at least the episode threshold long.
    pub const EPISODE: u32 = 1;
    /// A bucket of short intervals.
    pub const BUCKET: u32 = 2;
    /// The thread exited; its state is gone.
    pub const EXIT: u32 = 3;
}

/// The span of a thread's published context (OTEP 4947) at an interval's two ends, as the
/// first 8 bytes of the span id in memory order; 0: none. A thread cannot change its context
/// while off a CPU, so an interval off CPU or in a run queue has the same span at both ends; an
/// interval on CPU whose ends differ changed context somewhere inside.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanTags {
    pub at_start: u64,
    pub at_end: u64,
}

impl SpanTags {
    pub const NONE: SpanTags = SpanTags {
        at_start: 0,
        at_end: 0,
    };

    /// The same span at both ends.
    pub const fn steady(span_id: u64) -> SpanTags {
        SpanTags {
            at_start: span_id,
            at_end: span_id,
        }
    }

    pub const fn is_none(&self) -> bool {
        self.at_start == 0 && self.at_end == 0
    }
}

/// A record on the `SCHED_EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedRecord {
    /// One of [`record`].
    pub kind: u32,
    /// For episodes: the [`state`] the thread was in.
    pub state: u32,
    pub tid: u32,
    pub tgid: u32,
    /// Episode: its start and end. Bucket: the bucket's start and `start + width`.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Episode: the throttled part of a run-queue wait. Bucket: the bucket's sums.
    pub bucket: ThreadBucket,
    /// Episode: the context spans at its ends (a bucket has none: time of a context is never
    /// summed into one).
    pub spans: SpanTags,
}

const _: () = assert!(core::mem::size_of::<SchedRecord>() == 200);

/// Run-queue delay a task carries since it was last woken (`accounting::wake_chain`):
/// `delayed_ns` of waiting behind neighbours within `[start_ns, end_ns)`, inherited from its
/// waker or its own, the longest part while a process of `neighbour_tgid` held the CPU, of
/// which `throttled_ns` while the waiting task's cgroup was throttled; `hops` wakeups from the
/// task that waited (0: its own). `end_ns == 0`: none.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delay {
    pub start_ns: u64,
    pub end_ns: u64,
    pub delayed_ns: u64,
    pub throttled_ns: u64,
    pub neighbour_tgid: u32,
    pub hops: u32,
}

const _: () = assert!(core::mem::size_of::<Delay>() == 40);

impl Delay {
    pub const NONE: Delay = Delay {
        start_ns: 0,
        end_ns: 0,
        delayed_ns: 0,
        throttled_ns: 0,
        neighbour_tgid: 0,
        hops: 0,
    };

    #[inline(always)]
    pub const fn is_none(&self) -> bool {
        self.end_ns == 0
    }

    /// How much of the delay fell within `[start_ns, end_ns)`: the waiting's share of its
    /// window that the two windows share. Its place inside the window is not kept, so it is
    /// taken as spread evenly: a task that waited a little at a time over a long window (a
    /// `ksoftirqd` woken by interrupts, never asleep long) explains a short sleep in proportion,
    /// not up to its whole sum. One wait, filling its window, is counted exactly.
    #[inline(always)]
    pub fn overlap_ns(&self, start_ns: u64, end_ns: u64) -> u64 {
        if self.is_none() {
            return 0;
        }
        let overlap_ns = overlap_ns((self.start_ns, self.end_ns), (start_ns, end_ns));
        let window_ns = self.end_ns.saturating_sub(self.start_ns);
        if overlap_ns >= window_ns || self.delayed_ns >= window_ns {
            return if overlap_ns < self.delayed_ns {
                overlap_ns
            } else {
                self.delayed_ns
            };
        }
        // Per mille of the window, then applied (no 128-bit multiply on the BPF target).
        let per_mille = overlap_ns.wrapping_mul(1000) / window_ns;
        self.delayed_ns / 1000 * per_mille + self.delayed_ns % 1000 * per_mille / 1000
    }

    /// The throttled part of `ns` of this delay, in proportion (`ns` at most `delayed_ns`).
    /// Integer arithmetic in two steps: both factors can be large enough to overflow a product.
    #[inline(always)]
    pub fn throttled_part_ns(&self, ns: u64) -> u64 {
        if self.throttled_ns == 0 || self.delayed_ns == 0 {
            return 0;
        }
        if self.throttled_ns >= self.delayed_ns {
            return ns;
        }
        // Per mille, then applied: exact enough for a split shown to 0.1 ms. Wrapping, not
        // saturating (a 128-bit multiply the BPF target lacks): it would take 200 days.
        let per_mille = self.throttled_ns.wrapping_mul(1000) / self.delayed_ns;
        ns / 1000 * per_mille + ns % 1000 * per_mille / 1000
    }
}

/// How long the intervals `[a.0, a.1)` and `[b.0, b.1)` share (0 if they do not meet); instants
/// are the kernel's (ns since boot, far below 2^63). Branch-free: called per slot of a CPU's
/// ring, three branches each made 6.18.15's verifier walk past its million instructions on
/// `sched_switch` (6.18.44's pruned them).
#[inline(always)]
pub fn overlap_ns(a: (u64, u64), b: (u64, u64)) -> u64 {
    // LLVM turns a shift by a constant 63 into a comparison, which BPF can only branch on.
    let top_bit = core::hint::black_box(63u32);
    let lo = a.0 ^ ((a.0 ^ b.0) & below_mask(a.0, b.0, top_bit));
    let hi = a.1 ^ ((a.1 ^ b.1) & below_mask(b.1, a.1, top_bit));
    let shared = hi.wrapping_sub(lo);
    shared & !((shared as i64 >> top_bit) as u64)
}

/// All ones when `x < y`, else zero (`x`, `y` below 2^63; `top_bit` is 63).
#[inline(always)]
pub fn below_mask(x: u64, y: u64, top_bit: u32) -> u64 {
    (x.wrapping_sub(y) as i64 >> top_bit) as u64
}

/// The delay of the task running on a CPU, with the task it belongs to (its `task_struct`
/// address; 0: nobody's). See `accounting::wake_chain`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunningDelay {
    pub task: u64,
    pub delay: Delay,
}

const _: () = assert!(core::mem::size_of::<RunningDelay>() == 48);

/// Slices of CPU time recently given out on one CPU (per-CPU map `CPU_SLICES`): who ran there,
/// so that a thread's run-queue wait can be charged to the neighbours that held the CPU.
pub const CPU_SLICE_SLOTS: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuSlices {
    /// When the current slice on this CPU began.
    pub last_switch_ns: u64,
    /// Next slot to overwrite.
    pub head: u32,
    /// Timer or device interrupt handlers running on this CPU now (the wake chain's
    /// `interrupts`): their wakeups are nobody's doing.
    pub interrupt_depth: u32,
    pub tgid: [u32; CPU_SLICE_SLOTS],
    pub tid: [u32; CPU_SLICE_SLOTS],
    pub start_ns: [u64; CPU_SLICE_SLOTS],
    pub end_ns: [u64; CPU_SLICE_SLOTS],
    /// The delay the task running here carries (`accounting::wake_chain`): kept with the slices,
    /// which every switch already looks up.
    pub running_delay: RunningDelay,
    /// What the switch knew of the task running here when it got the CPU
    /// (`accounting::watch_cache`): its switch-out may skip the task's local storage.
    pub running: RunningTask,
}

const _: () = assert!(core::mem::size_of::<CpuSlices>() == 16 + 24 * CPU_SLICE_SLOTS + 48 + 16);

/// The task a CPU runs, as its switch-in left it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunningTask {
    /// Its `task_struct` address (0: unknown).
    pub task: u64,
    /// The watch generation it was known unwatched at (0: not known unwatched).
    pub unwatched_gen: u32,
    /// Switch-outs on this CPU that skipped the task's local storage (wrapping): paces the ones
    /// that do not, which refresh the cached cgroup.
    pub skipped: u32,
}

const _: () = assert!(core::mem::size_of::<RunningTask>() == 16);

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::ThreadState {}
    unsafe impl aya::Pod for super::SchedRecord {}
}

/// Per-task scheduler bookkeeping kept in task-local storage (map `TASK_SCHED`): a direct
/// pointer from the task, no hashing, freed with the task.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskSched {
    /// When the task last became runnable; 0 once it got a CPU.
    pub enqueued_ns: u64,
    /// The task's cgroup v2 id, refreshed every few times it leaves a CPU (cheap then: it is
    /// the current task), so that reading it at switch-in needs no pointer chase.
    pub cgroup_id: u64,
    /// The watch generation (map `WATCH_GENERATION`) `watched` was read at; 0: never read.
    pub watch_gen: u32,
    /// Whether the task had an entry in `THREAD_STATE` at `watch_gen`: while the generation
    /// holds, an unwatched task costs its hooks no hash lookup.
    pub watched: u32,
    /// Times the task left a CPU (wrapping): paces the cgroup id refresh.
    pub switches_out: u32,
    /// The slot of `cgroup_id` in the per-CPU run-queue histograms, plus one (0: none), looked
    /// up whenever `cgroup_id` is refreshed.
    pub runq_slot: u32,
    /// The cumulative throttled clock of the task's cfs_rq as read at its last long run-queue
    /// wait (0: never read): the next long wait is throttled if it moved meanwhile.
    pub throttled_clock_ns: u64,
    /// The run-queue delay the task carries since it was last woken: its waker's, and its own
    /// long waits since (`accounting::wake_chain`).
    pub carried: Delay,
}

const _: () = assert!(core::mem::size_of::<TaskSched>() == 80);

#[cfg(test)]
mod tests {
    use super::*;

    /// The branch-free overlap against the obvious one, over every ordering of four instants
    /// (equal ones included) and at the scale of a machine up for years.
    #[test]
    fn the_overlap_is_the_shared_part_of_two_intervals_or_zero() {
        let reference = |a: (u64, u64), b: (u64, u64)| a.1.min(b.1).saturating_sub(a.0.max(b.0));
        for base in [0, 1 << 40, (1 << 62) - 16] {
            for a0 in 0..6 {
                for a1 in 0..6 {
                    for b0 in 0..6 {
                        for b1 in 0..6 {
                            let (a, b) = ((base + a0, base + a1), (base + b0, base + b1));
                            assert_eq!(overlap_ns(a, b), reference(a, b), "{a:?} {b:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn below_is_all_ones_exactly_when_less() {
        for (x, y) in [
            (0, 1),
            (1, 0),
            (5, 5),
            (0, (1 << 63) - 1),
            ((1 << 63) - 1, 0),
        ] {
            let want = if x < y { u64::MAX } else { 0 };
            assert_eq!(below_mask(x, y, 63), want, "{x} {y}");
        }
    }
}
