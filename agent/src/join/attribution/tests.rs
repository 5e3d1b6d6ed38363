use super::*;

const MS: u64 = 1_000_000;

fn m(on: u64, runq: u64, throttled: u64, off: u64, rtx: u64) -> Measured {
    Measured {
        wall_ns: (on + runq + off) * MS,
        on_cpu_ns: on * MS,
        runq_ns: runq * MS,
        throttled_ns: throttled * MS,
        off_cpu_ns: off * MS,
        retransmit_wait_ns: rtx * MS,
        join: "thread",
        threads: 1,
        ..Measured::default()
    }
}

#[test]
fn contention_dominates_when_the_cpu_was_taken() {
    let a = attribute(&m(20, 40, 0, 2, 0));
    assert_eq!(a.cause, "cpu.contention");
    assert!((a.cause_share - 40.0 / 62.0).abs() < 1e-9);
    assert!((a.runqueue_s - 0.040).abs() < 1e-9);
    assert_eq!(a.coverage, 1.0);
}

#[test]
fn throttling_is_split_from_contention() {
    let a = attribute(&m(10, 80, 75, 1, 0));
    assert_eq!(a.cause, "cpu.throttling");
    assert!((a.throttled_s - 0.075).abs() < 1e-9);
}

#[test]
fn retransmit_wait_explains_off_cpu_time() {
    let a = attribute(&m(2, 0, 0, 210, 200));
    assert_eq!(a.cause, "tcp.retransmit");
    assert!((a.retransmit_wait_s - 0.2).abs() < 1e-9);
    assert_eq!(a.connect_retransmit_wait_s, 0.0);
}

#[test]
fn a_stalled_handshake_is_a_connect_stall_not_lost_data() {
    // 1 s in `connect` for a SYN's retransmit, then 30 ms losing data.
    let mut x = m(2, 0, 0, 1100, 1030);
    x.connect_retransmit_wait_ns = 1000 * MS;
    let a = attribute(&x);
    assert_eq!(a.cause, "tcp.connect_retransmit");
    assert!((a.retransmit_wait_s - 1.03).abs() < 1e-9, "{a:?}");
    assert!((a.connect_retransmit_wait_s - 1.0).abs() < 1e-9, "{a:?}");
    let parts = crate::join::parts::Parts::of(&a, 1102.0);
    assert!(
        (parts.connect_retransmit_ms - 1000.0).abs() < 1e-6,
        "{parts:?}"
    );
    assert!((parts.retransmit_ms - 30.0).abs() < 1e-6, "{parts:?}");
    // Never more than the whole retransmit wait, whatever the sums say.
    x.connect_retransmit_wait_ns = 5000 * MS;
    let a = attribute(&x);
    assert!((a.connect_retransmit_wait_s - 1.03).abs() < 1e-9, "{a:?}");
}

#[test]
fn a_wait_before_the_span_is_the_backlog_beyond_its_readers_cpu_waits() {
    // A 5 ms request that waited 15 ms to be read: 3 ms of it its reader queued for a CPU, 1 ms
    // throttled; the rest every worker busy.
    let mut x = m(5, 0, 0, 0, 0);
    x.queue_wait_ns = 15 * MS;
    x.queue_runq_ns = 3 * MS;
    x.queue_throttled_ns = MS;
    let a = attribute(&x);
    assert_eq!(a.cause, "queue.backlog");
    // Of what the client saw (20 ms), 11 ms.
    assert!((a.cause_share - 11.0 / 20.0).abs() < 1e-9, "{a:?}");
    assert!((a.queue_wait_s - 0.015).abs() < 1e-9);
    let parts = crate::join::parts::Parts::of(&a, 5.0);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    assert!(close(parts.queue_ms, 11.0), "{parts:?}");
    assert!(close(parts.contention_ms, 3.0), "{parts:?}");
    assert!(close(parts.throttled_ms, 1.0), "{parts:?}");
    assert!(close(parts.on_cpu_ms, 5.0), "{parts:?}");
    assert!(close(parts.unobserved_ms, 0.0), "{parts:?}");
    assert!(close(parts.total_ms(), 20.0), "{parts:?}");
    // A reader that waited for a CPU the whole time: contention, not a backlog.
    x.queue_runq_ns = 15 * MS;
    x.queue_throttled_ns = 0;
    let a = attribute(&x);
    assert_eq!(a.cause, "cpu.contention");
    assert!((a.cause_share - 0.75).abs() < 1e-9, "{a:?}");
    // A short wait (an idle server's wakeup) names nothing.
    x.queue_wait_ns = MS / 10;
    x.queue_runq_ns = 0;
    assert_eq!(attribute(&x).cause, "on_cpu");
    // Sums that disagree are bounded by the wait.
    x.queue_wait_ns = 4 * MS;
    x.queue_runq_ns = 9 * MS;
    x.queue_throttled_ns = 9 * MS;
    let a = attribute(&x);
    assert!((a.queue_throttled_s - 0.004).abs() < 1e-9, "{a:?}");
    assert_eq!(a.queue_runq_s, 0.0);
}

#[test]
fn a_sleep_behind_a_delayed_waker_is_contention() {
    // 10 ms asleep on a downstream whose packet sat 8 ms in ksoftirqd's run queue.
    let mut x = m(1, 0, 0, 10, 0);
    x.waker_delay_ns = 8 * MS;
    let a = attribute(&x);
    assert_eq!(a.cause, "cpu.contention");
    assert!((a.cause_share - 8.0 / 11.0).abs() < 1e-9);
    assert!((a.waker_delay_s - 0.008).abs() < 1e-9);
    // The off-CPU time holds it: a record claiming more is bounded, and what retransmits
    // explain is not counted twice.
    let mut x = m(1, 0, 0, 10, 6);
    x.waker_delay_ns = 50 * MS;
    let a = attribute(&x);
    assert!((a.waker_delay_s - 0.004).abs() < 1e-9, "{a:?}");
    assert!((a.retransmit_wait_s - 0.006).abs() < 1e-9);
}

#[test]
fn why_a_thread_slept_follows_who_delayed_its_wakeup() {
    // 20 ms asleep: 6 ms of it its lock holder sat behind a hog, 10 ms more in the futex.
    let mut x = m(1, 0, 0, 20, 0);
    x.waker_delay_ns = 6 * MS;
    x.lock_wait_ns = 10 * MS;
    x.lock_holder = Some("worker (42)".into());
    let a = attribute(&x);
    // The hog's 6 ms of 21 is a kernel cause past the bar: it is named over the lock's 10.
    assert_eq!(a.cause, "cpu.contention");
    assert!((a.lock_wait_s - 0.010).abs() < 1e-9, "{a:?}");
    // The holder is named with the chain through it, even with no wait left of its own.
    let mut chain = x.clone();
    chain.lock_wait_ns = 0;
    assert_eq!(
        attribute(&chain).lock_holder.as_deref(),
        Some("worker (42)")
    );
    assert_eq!(a.lock_holder.as_deref(), Some("worker (42)"));
    let parts = crate::join::parts::Parts::of(&a, 21.0);
    assert!((parts.lock_wait_ms - 10.0).abs() < 1e-9, "{parts:?}");
    assert!((parts.off_cpu_ms - 4.0).abs() < 1e-9, "{parts:?}");
    // Without the hog the lock is the answer: the application's own waiting, beating the
    // rest of the sleep and the computing.
    x.waker_delay_ns = 0;
    let a = attribute(&x);
    assert_eq!(a.cause, "lock.wait");
    // A memory stall is the kernel's: named past the bar, and taken first; the lock wait
    // is bounded by what is left (a corrupt sum cannot exceed the sleep).
    x.memory_stall_ns = 15 * MS;
    x.lock_wait_ns = 50 * MS;
    let a = attribute(&x);
    assert_eq!(a.cause, "memory.reclaim");
    assert!((a.memory_reclaim_s - 0.015).abs() < 1e-9, "{a:?}");
    assert!((a.lock_wait_s - 0.005).abs() < 1e-9, "{a:?}");
    // Reclaim on the thread's own CPU is memory's, not the request's computing.
    let mut y = m(10, 0, 0, 0, 0);
    y.reclaim_on_cpu_ns = 4 * MS;
    let a = attribute(&y);
    assert_eq!(a.cause, "memory.reclaim");
    assert!((a.memory_reclaim_on_cpu_s - 0.004).abs() < 1e-9, "{a:?}");
    let parts = crate::join::parts::Parts::of(&a, 10.0);
    assert!((parts.on_cpu_ms - 6.0).abs() < 1e-9, "{parts:?}");
    assert!((parts.memory_reclaim_ms - 4.0).abs() < 1e-9, "{parts:?}");
    assert!(parts.off_cpu_ms.abs() < 1e-9, "{parts:?}");
    // So is a wait for the CPU inside a stall: not contention.
    let mut z = m(10, 5, 0, 0, 0);
    z.memory_runq_ns = 4 * MS;
    let a = attribute(&z);
    assert_eq!(a.cause, "memory.reclaim");
    let parts = crate::join::parts::Parts::of(&a, 15.0);
    assert!((parts.contention_ms - 1.0).abs() < 1e-9, "{parts:?}");
    assert!((parts.memory_reclaim_ms - 4.0).abs() < 1e-9, "{parts:?}");
    assert!((parts.on_cpu_ms - 10.0).abs() < 1e-9, "{parts:?}");
    // A sleep in a page fault is the fault's, its read included (taken before the I/O wait).
    let mut f = m(1, 0, 0, 9, 0);
    f.fault_wait_ns = 6 * MS;
    f.io_wait_ns = 9 * MS;
    f.disk_device = Some("vda".into());
    let a = attribute(&f);
    assert_eq!(a.cause, "page_fault.major");
    assert!((a.page_fault_s - 0.006).abs() < 1e-9, "{a:?}");
    assert!((a.disk_io_s - 0.003).abs() < 1e-9, "{a:?}");
    assert_eq!(a.disk_device.as_deref(), Some("vda"));
    let parts = crate::join::parts::Parts::of(&a, 10.0);
    assert!((parts.page_fault_ms - 6.0).abs() < 1e-9, "{parts:?}");
    assert!(parts.off_cpu_ms.abs() < 1e-9, "{parts:?}");
    // A lock wait under the bar names no holder.
    x.memory_stall_ns = 19 * MS;
    let a = attribute(&x);
    assert_eq!(a.lock_holder, None);
}

#[test]
fn time_the_hypervisor_took_from_the_cpu_is_steal_not_the_requests_computing() {
    let mut x = m(10, 0, 0, 0, 0);
    x.steal_ns = 4 * MS;
    let a = attribute(&x);
    assert_eq!(a.cause, "cpu.steal");
    assert!((a.cause_share - 0.4).abs() < 1e-9, "{a:?}");
    assert!((a.cpu_steal_s - 0.004).abs() < 1e-9, "{a:?}");
    let parts = crate::join::parts::Parts::of(&a, 10.0);
    assert!((parts.on_cpu_ms - 6.0).abs() < 1e-9, "{parts:?}");
    assert!((parts.steal_ms - 4.0).abs() < 1e-9, "{parts:?}");
    assert!(parts.unobserved_ms.abs() < 1e-9, "{parts:?}");
    // Steal and reclaim on CPU together never take more than the time on CPU.
    x.reclaim_on_cpu_ns = 8 * MS;
    let a = attribute(&x);
    assert!((a.cpu_steal_s - 0.002).abs() < 1e-9, "{a:?}");
    let parts = crate::join::parts::Parts::of(&a, 10.0);
    assert!(parts.on_cpu_ms.abs() < 1e-9, "{parts:?}");
    // A little steal is not blamed.
    let mut y = m(100, 0, 0, 0, 0);
    y.steal_ns = 2 * MS;
    assert_eq!(attribute(&y).cause, "on_cpu");
}

#[test]
fn a_sleep_behind_a_throttled_waker_is_throttling() {
    // 10 ms asleep on a thread of a quota'd cgroup that waited 6 ms throttled and 2 ms
    // behind a neighbour before it answered.
    let mut x = m(1, 0, 0, 10, 0);
    x.waker_throttled_ns = 6 * MS;
    x.waker_delay_ns = 2 * MS;
    let a = attribute(&x);
    assert_eq!(a.cause, "cpu.throttling");
    assert!((a.cause_share - 6.0 / 11.0).abs() < 1e-9, "{a:?}");
    assert!((a.waker_throttled_s - 0.006).abs() < 1e-9);
    let parts = crate::join::parts::Parts::of(&a, 11.0);
    assert!((parts.throttled_ms - 6.0).abs() < 1e-9, "{parts:?}");
    assert!((parts.contention_ms - 2.0).abs() < 1e-9, "{parts:?}");
    assert!((parts.off_cpu_ms - 2.0).abs() < 1e-9, "{parts:?}");
    // Bounded by what the waker's contention and the retransmits leave of the sleep.
    x.waker_throttled_ns = 50 * MS;
    let a = attribute(&x);
    assert!((a.waker_throttled_s - 0.008).abs() < 1e-9, "{a:?}");
}

#[test]
fn the_waker_is_named_only_for_a_request_that_waited() {
    let mut x = m(1, 0, 0, 10, 0);
    x.waker = Some("db (7)".into());
    assert_eq!(attribute(&x).waker.as_deref(), Some("db (7)"));
    let keys: Vec<&str> = attribute_pairs(&attribute(&x)).map(|(k, _)| k).collect();
    assert!(keys.contains(&"culprit.waker"));
    // 0.1 ms asleep in a 10 ms computation: its last wakeup says nothing.
    let mut busy = m(10, 0, 0, 0, 0);
    busy.off_cpu_ns = MS / 10;
    busy.waker = Some("db (7)".into());
    assert_eq!(attribute(&busy).waker, None);
}

#[test]
fn a_computing_thread_is_not_waiting_on_the_network() {
    // Another connection of the process stalled during the span, but this thread ran.
    let a = attribute(&m(50, 0, 0, 2, 50));
    assert_eq!(a.cause, "on_cpu");
    assert!((a.retransmit_wait_s - 0.002).abs() < 1e-9);
    // With no thread to look at (the process join), the stall is bounded by the span only.
    let mut blind = m(0, 0, 0, 0, 30);
    blind.wall_ns = 100 * MS;
    blind.join = "process";
    assert!((attribute(&blind).retransmit_wait_s - 0.030).abs() < 1e-9);
    // A thread that was named but not observed is not known to have waited: unknown.
    blind.join = "thread";
    let a = attribute(&blind);
    assert_eq!((a.retransmit_wait_s, a.cause), (0.0, Cause::Unknown));
}

#[test]
fn sleeping_is_off_cpu_and_computing_is_on_cpu() {
    assert_eq!(attribute(&m(1, 0, 0, 100, 0)).cause, "off_cpu");
    assert_eq!(attribute(&m(100, 1, 0, 1, 0)).cause, "on_cpu");
}

#[test]
fn a_significant_kernel_cause_is_named_over_the_requests_own_time() {
    // Half its time computing, half behind a neighbour: the neighbour is the culprit.
    let a = attribute(&m(50, 49, 0, 1, 0));
    assert_eq!(a.cause, "cpu.contention");
    assert!((a.cause_share - 0.49).abs() < 1e-9);
    // A long sleep with a throttled tenth: throttling, with its own share.
    let a = attribute(&m(1, 11, 11, 88, 0));
    assert_eq!(a.cause, "cpu.throttling");
    assert!((a.cause_share - 0.11).abs() < 1e-9);
    // Just under the bar, the request's own time is the answer.
    assert_eq!(attribute(&m(91, 9, 0, 0, 0)).cause, "on_cpu");
}

#[test]
fn small_kernel_waits_are_not_blamed() {
    // 5% contention is real but not the cause on an otherwise idle machine.
    let a = attribute(&m(50, 5, 0, 45, 0));
    assert_eq!(a.cause, "on_cpu");
    let a = attribute(&m(40, 9, 0, 51, 0));
    assert_eq!(a.cause, "off_cpu");
}

#[test]
fn unobserved_spans_are_unknown() {
    let mut x = m(1, 0, 0, 1, 0);
    x.wall_ns = 100 * MS;
    let a = attribute(&x);
    assert_eq!(a.cause, "unknown");
    assert!(a.coverage < 0.05);
    let empty = attribute(&Measured::default());
    assert_eq!(empty.cause, "unknown");
}

#[test]
fn absurd_measurements_are_bounded_not_overflowed() {
    let mut x = m(0, 0, 0, 0, 0);
    (x.on_cpu_ns, x.runq_ns, x.off_cpu_ns) = (u64::MAX, u64::MAX, u64::MAX);
    x.throttled_ns = u64::MAX;
    x.retransmit_wait_ns = u64::MAX;
    x.threads = usize::MAX;
    let a = attribute(&x);
    assert!((0.0..=1.0).contains(&a.cause_share) && (0.0..=1.0).contains(&a.coverage));
    assert!(a.on_cpu_s.is_finite() && a.retransmit_wait_s >= 0.0);
}

#[test]
fn overlapping_threads_are_scaled_to_the_span() {
    let mut x = m(100, 0, 0, 100, 0);
    x.wall_ns = 100 * MS;
    x.threads = 2;
    x.join = "process";
    let a = attribute(&x);
    assert!((a.on_cpu_s + a.off_cpu_s - 0.1).abs() < 1e-9);
    assert_eq!(a.coverage, 1.0);
}

#[test]
fn attributes_follow_the_schema() {
    let mut x = m(20, 40, 0, 2, 0);
    x.neighbour = Some("stress (42)".into());
    let attrs = to_attributes(&attribute(&x));
    let keys: Vec<&str> = attrs.iter().map(|k| k.key.as_str()).collect();
    for k in [
        "culprit.cause",
        "culprit.cause.share",
        "culprit.on_cpu.duration",
        "culprit.runqueue.duration",
        "culprit.throttled.duration",
        "culprit.off_cpu.duration",
        "culprit.waker_delay.duration",
        "culprit.retransmit_wait.duration",
        "culprit.tcp.retransmits",
        "culprit.cpu.neighbor",
        "culprit.join",
        "culprit.coverage",
    ] {
        assert!(keys.contains(&k), "{k} missing");
    }
    assert!(!keys.contains(&"culprit.tcp.retransmit.peer"));
}
