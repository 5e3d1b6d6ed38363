//! Why a thread slept (`wait`): each reason's sums, its names, and what the wake chain may
//! take of them.

use super::*;
use crate::accounting::wake_chain::LOOK_BACK_NS;

const CFG_ONE_BUCKET: ProbeConfig = ProbeConfig {
    episode_threshold_ns: 100 * MS,
    bucket_ns: 1000 * MS,
    ..CFG
};

/// The thread leaves its CPU blocking at `at_ns`, for `reason`.
fn leave(st: &mut ThreadState, out: &mut Records, cfg: &ProbeConfig, reason: u32, at_ns: u64) {
    switch_out(st, 50, false, reason, at_ns, 0, None, cfg, out, unthrottled);
}

/// The thread is woken at `at_ns` by thread `waker_tid` of process 50, which carried `delay`.
fn woken(
    st: &mut ThreadState,
    out: &mut Records,
    cfg: &ProbeConfig,
    at_ns: u64,
    waker_tid: u32,
    delay: &Delay,
) {
    wakeup(
        st,
        at_ns,
        50,
        waker_tid,
        delay,
        &Delay::NONE,
        cfg,
        out,
        unthrottled,
    );
}

#[test]
fn time_off_cpu_in_a_futex_is_lock_wait_named_by_its_releaser() {
    let cfg = CFG_ONE_BUCKET;
    let mut out = Records::default();
    let mut st = in_state(state::ON_CPU, T0);
    // Waits of 2 ms released by thread 7, 1 ms by 8 (not enough to take the name), 4 ms by 8
    // (alone more than the 3 ms of lock wait so far: it takes it), then a 1 ms memory stall
    // and a 4 ms plain sleep.
    let waits = [
        (wait::LOCK, 7u32, 2u64),
        (wait::LOCK, 8, 1),
        (wait::LOCK, 8, 4),
        (wait::MEMORY, 9, 1),
        (wait::OTHER, 9, 4),
    ];
    for (i, (reason, waker_tid, ms)) in waits.into_iter().enumerate() {
        let at = T0 + (i as u64 + 1) * 10 * MS;
        st.state = state::ON_CPU;
        leave(&mut st, &mut out, &cfg, reason, at);
        woken(
            &mut st,
            &mut out,
            &cfg,
            at + ms * MS,
            waker_tid,
            &Delay::NONE,
        );
        if i == 1 {
            assert_eq!(
                st.bucket.lock_waker_tid, 7,
                "1 ms of 8 does not outweigh 7's 2"
            );
        }
    }
    let b = &st.bucket;
    assert_eq!(b.off_cpu_ns, 12 * MS);
    assert_eq!((b.lock_wait_ns, b.lock_waker_tid), (7 * MS, 8));
    assert_eq!((b.memory_stall_ns, b.io_wait_ns), (MS, 0));
}

#[test]
fn a_lock_wait_behind_a_holder_preempted_before_it_began_is_the_holders_delay() {
    let cfg = CFG_ONE_BUCKET;
    let mut out = Records::default();
    let mut st = in_state(state::ON_CPU, T0);
    // The holder took the lock at T0, ran 1 ms, waited 6 ms behind a hog (T0+1..T0+7), then
    // finished its 3 ms of work with it (T0+9). A request asking for the lock at T0+4 sleeps
    // 5 ms: had the holder run on, the lock would have been free at T0+3. All of its wait is
    // the hog's, though only 3 ms of the delay fell after it began to wait.
    let holder = Delay {
        start_ns: T0 + MS,
        end_ns: T0 + 7 * MS,
        delayed_ns: 6 * MS,
        throttled_ns: 0,
        neighbour_tgid: 77,
        hops: 1,
    };
    leave(&mut st, &mut out, &cfg, wait::LOCK, T0 + 4 * MS);
    woken(&mut st, &mut out, &cfg, T0 + 9 * MS, 7, &holder);
    let b = &st.bucket;
    assert_eq!((b.off_cpu_ns, b.lock_wait_ns), (5 * MS, 0));
    assert_eq!(b.waker_delay_ns, 5 * MS);
    assert_eq!((b.waker_neighbour_tgid, b.lock_waker_tid), (77, 7));
    // Asking at T0+8 (1 ms before the release), it would have waited anyway only if the
    // holder had not been delayed at all: 1 ms, all of it the delay's.
    let mut st = in_state(state::ON_CPU, T0);
    leave(&mut st, &mut out, &cfg, wait::LOCK, T0 + 8 * MS);
    woken(&mut st, &mut out, &cfg, T0 + 9 * MS, 7, &holder);
    assert_eq!((st.bucket.off_cpu_ns, st.bucket.lock_wait_ns), (MS, 0));
    // A delay that ended long before the sleep began explains none of it.
    let mut st = in_state(state::ON_CPU, T0);
    let asked_ns = T0 + 7 * MS + LOOK_BACK_NS;
    leave(&mut st, &mut out, &cfg, wait::LOCK, asked_ns);
    woken(&mut st, &mut out, &cfg, asked_ns + 2 * MS, 7, &holder);
    assert_eq!(st.bucket.lock_wait_ns, 2 * MS);
}

#[test]
fn reclaim_on_the_cpu_is_its_part_of_the_time_on_cpu() {
    let cfg = CFG_ONE_BUCKET;
    let mut out = Records::default();
    let mut st = in_state(state::ON_CPU, T0);
    // 2 ms computing, 3 ms reclaiming (1 ms of it asleep in the stall), 1 ms computing.
    reclaim(&mut st, T0 + 2 * MS, 0, true, None, &cfg, &mut out);
    leave(&mut st, &mut out, &cfg, wait::MEMORY, T0 + 3 * MS);
    woken(&mut st, &mut out, &cfg, T0 + 4 * MS, 0, &Delay::NONE);
    switch_in(
        &mut st,
        T0 + 4 * MS,
        None,
        &cfg,
        &mut out,
        no_neighbour,
        unthrottled,
    );
    reclaim(&mut st, T0 + 5 * MS, 0, false, None, &cfg, &mut out);
    close_on_cpu(&mut st, T0 + 6 * MS, 0, None, &cfg, &mut out);
    let b = &st.bucket;
    assert_eq!((b.on_cpu_ns, b.reclaim_on_cpu_ns), (5 * MS, 2 * MS));
    assert_eq!((b.off_cpu_ns, b.memory_stall_ns), (MS, MS));
    assert_eq!(st.reclaiming, 0);
}

#[test]
fn an_io_wait_names_the_device_the_thread_queued_to() {
    let mut out = Records::default();
    let mut st = in_state(state::ON_CPU, T0);
    st.io_dev = (253 << 20) | 1;
    leave(&mut st, &mut out, &CFG, wait::IO, T0 + MS);
    woken(&mut st, &mut out, &CFG, T0 + 5 * MS, 0, &Delay::NONE);
    let off = out.0.last().expect("the off-CPU episode");
    assert_eq!(
        (off.bucket.io_wait_ns, off.bucket.io_dev),
        (4 * MS, (253 << 20) | 1)
    );
}

#[test]
fn a_memory_stall_is_not_passed_to_its_waker() {
    let mut out = Records::default();
    let mut st = in_state(state::ON_CPU, T0);
    leave(&mut st, &mut out, &CFG, wait::MEMORY, T0 + MS);
    // Woken by a flusher that waited 3 ms behind a neighbour meanwhile.
    let delay = Delay {
        start_ns: T0,
        end_ns: T0 + 5 * MS,
        delayed_ns: 3 * MS,
        throttled_ns: 0,
        neighbour_tgid: 77,
        hops: 1,
    };
    woken(&mut st, &mut out, &CFG, T0 + 5 * MS, 61, &delay);
    let off = out.0.last().expect("the off-CPU episode");
    assert_eq!(off.bucket.memory_stall_ns, 4 * MS);
    assert_eq!(off.bucket.waker_delay_ns, 0);
}

#[test]
fn a_wait_for_the_cpu_inside_a_memory_stall_is_the_stalls() {
    let mut out = Records::default();
    let mut st = in_state(state::ON_CPU, T0);
    // Preempted while reclaiming, then preempted outside any stall: 2 ms in the run queue each.
    for (reason, at, memory_ns) in [
        (wait::MEMORY, T0 + MS, 2 * MS),
        (wait::OTHER, T0 + 4 * MS, 0),
    ] {
        switch_out(
            &mut st,
            50,
            true,
            reason,
            at,
            0,
            None,
            &CFG,
            &mut out,
            unthrottled,
        );
        switch_in(
            &mut st,
            at + 2 * MS,
            None,
            &CFG,
            &mut out,
            no_neighbour,
            unthrottled,
        );
        let runq = out.0.last().expect("the run-queue episode");
        assert_eq!(
            (runq.bucket.runq_ns, runq.bucket.memory_runq_ns),
            (2 * MS, memory_ns)
        );
    }
}
