//! Wakeups seen in the waker: what a sleeper's waker carried, and a thread woken while still
//! on its way off its CPU.

use super::*;

#[test]
fn a_thread_woken_as_it_left_its_cpu_waited_from_its_switch_out() {
    // The waker's `sched_waking` ran while the thread was still on its CPU, then the thread
    // left it blocking and was queued at once: a wait, with its cgroup's throttling read as it
    // leaves.
    let throttled = Throttling {
        cfs_rq: 0x1000,
        throttle_count: 1,
        throttled_self_ns: 0,
    };
    let mut st = in_state(state::ON_CPU, T0);
    let mut out = Records::default();
    woken_by_interrupt(&mut st, T0 + MS, &CFG, &mut out, unthrottled);
    assert_eq!((st.state, st.since_ns), (state::ON_CPU, T0));
    let left_ns = T0 + MS + MS / 2;
    switch_out(
        &mut st,
        50,
        false,
        wait::OTHER,
        left_ns,
        0,
        None,
        &CFG,
        &mut out,
        || Some(throttled),
    );
    assert_eq!((st.state, st.woken_on_cpu_ns), (state::RUNQ, 0));
    let mut out = Records::default();
    switch_in(
        &mut st,
        T0 + 5 * MS,
        None,
        &CFG,
        &mut out,
        no_neighbour,
        unthrottled,
    );
    let [wait] = out.0.as_slice() else {
        panic!("{:?}", out.0)
    };
    assert_eq!(
        (wait.state, wait.bucket.runq_ns),
        (state::RUNQ, 3 * MS + MS / 2)
    );
    assert_eq!(wait.bucket.throttled_ns, 3 * MS + MS / 2);

    // Woken on its CPU, it kept running; it blocks for real 2 ms later: off CPU.
    let mut st = in_state(state::ON_CPU, T0);
    woken_by_interrupt(&mut st, T0 + MS, &CFG, &mut out, unthrottled);
    switch_out(
        &mut st,
        50,
        false,
        wait::OTHER,
        T0 + 3 * MS,
        0,
        None,
        &CFG,
        &mut out,
        unthrottled,
    );
    assert_eq!((st.state, st.woken_on_cpu_ns), (state::OFF_CPU, 0));

    // A switch-in while still known off CPU (the race not recognised): a wait from the
    // switch-out, whether throttled unknown.
    let mut out = Records::default();
    switch_in(
        &mut st,
        T0 + 5 * MS,
        None,
        &CFG,
        &mut out,
        no_neighbour,
        unthrottled,
    );
    assert_eq!(charged(&out), Some((state::RUNQ, 2 * MS)));
    assert_eq!((st.state, st.since_ns), (state::ON_CPU, T0 + 5 * MS));
}

#[test]
fn a_sleep_names_the_part_its_waker_spent_behind_a_neighbour() {
    // Asleep from T0 + 3 ms for 10 ms; the waker sat 7 ms behind process 77, 1 ms of it before
    // the sleep began: not a lock's releaser, it is charged the 6 ms within the sleep.
    let waker_delay = Delay {
        start_ns: T0 + 2 * MS,
        end_ns: T0 + 9 * MS,
        delayed_ns: 7 * MS,
        throttled_ns: 0,
        neighbour_tgid: 77,
        hops: 1,
    };
    let mut st = in_state(state::OFF_CPU, T0 + 3 * MS);
    let mut out = Records::default();
    wakeup(
        &mut st,
        T0 + 13 * MS,
        0,
        0,
        &waker_delay,
        &Delay::NONE,
        &CFG,
        &mut out,
        unthrottled,
    );
    let [episode] = out.0.as_slice() else {
        panic!("{:?}", out.0)
    };
    assert_eq!(
        (episode.kind, episode.state),
        (record::EPISODE, state::OFF_CPU)
    );
    assert_eq!(episode.bucket.off_cpu_ns, 10 * MS);
    assert_eq!(episode.bucket.waker_delay_ns, 6 * MS);
    assert_eq!(episode.bucket.waker_neighbour_tgid, 77);
    // Short sleeps sum their wakers' delays into the bucket; a new neighbour takes the name
    // when its delay alone is longer than all the bucket's so far.
    let mut st = in_state(state::OFF_CPU, T0 + 20 * MS);
    let cfg = ProbeConfig {
        episode_threshold_ns: 100 * MS,
        ..CFG
    };
    let mut out = Records::default();
    for (i, (tgid, delay_ms)) in [(77u32, 1u64), (88, 1), (88, 3)].into_iter().enumerate() {
        let at = T0 + 20 * MS + (i as u64) * 3 * MS;
        st.state = state::OFF_CPU;
        st.since_ns = at;
        let d = Delay {
            start_ns: at,
            end_ns: at + delay_ms * MS,
            delayed_ns: delay_ms * MS,
            throttled_ns: 0,
            neighbour_tgid: tgid,
            hops: 2,
        };
        wakeup(
            &mut st,
            at + 3 * MS,
            0,
            0,
            &d,
            &Delay::NONE,
            &cfg,
            &mut out,
            unthrottled,
        );
    }
    assert_eq!(st.bucket.off_cpu_ns, 9 * MS);
    assert_eq!(st.bucket.waker_delay_ns, 5 * MS);
    assert_eq!(st.bucket.waker_neighbour_tgid, 88);
}

#[test]
fn a_sleep_keeps_its_wakers_throttled_wait_apart_from_its_contention() {
    // The waker waited 8 ms, 6 of them throttled and 2 behind process 77; the sleep met all.
    let waker_delay = Delay {
        start_ns: T0 + MS,
        end_ns: T0 + 9 * MS,
        delayed_ns: 8 * MS,
        throttled_ns: 6 * MS,
        neighbour_tgid: 77,
        hops: 1,
    };
    let mut st = in_state(state::OFF_CPU, T0);
    let mut out = Records::default();
    wakeup(
        &mut st,
        T0 + 10 * MS,
        0,
        0,
        &waker_delay,
        &Delay::NONE,
        &CFG,
        &mut out,
        unthrottled,
    );
    let [episode] = out.0.as_slice() else {
        panic!("{:?}", out.0)
    };
    let b = &episode.bucket;
    assert_eq!((b.off_cpu_ns, b.waker_throttled_ns), (10 * MS, 6 * MS));
    assert_eq!((b.waker_delay_ns, b.waker_neighbour_tgid), (2 * MS, 77));
    // Wholly throttled: nobody is named.
    let throttled_only = Delay {
        throttled_ns: 8 * MS,
        neighbour_tgid: 0,
        ..waker_delay
    };
    let mut st = in_state(state::OFF_CPU, T0);
    let mut out = Records::default();
    wakeup(
        &mut st,
        T0 + 10 * MS,
        0,
        0,
        &throttled_only,
        &Delay::NONE,
        &CFG,
        &mut out,
        unthrottled,
    );
    let b = &out.0[0].bucket;
    assert_eq!((b.waker_throttled_ns, b.waker_delay_ns), (8 * MS, 0));
    assert_eq!(b.waker_neighbour_tgid, 0);
}

#[test]
fn time_off_cpu_blocked_in_io_schedule_is_io_wait() {
    let mut out = Records::default();
    let mut st = in_state(state::ON_CPU, T0);
    switch_out(
        &mut st,
        50,
        false,
        wait::IO,
        T0 + MS,
        0,
        None,
        &CFG,
        &mut out,
        unthrottled,
    );
    woken_by_interrupt(&mut st, T0 + 5 * MS, &CFG, &mut out, unthrottled);
    let off = out.0.last().expect("the off-CPU episode");
    assert_eq!((off.state, off.bucket.off_cpu_ns), (state::OFF_CPU, 4 * MS));
    assert_eq!(off.bucket.io_wait_ns, 4 * MS);
    // No I/O queued by the thread seen: no device named.
    assert_eq!(off.bucket.io_dev, 0);
    // The next sleep, not in io_schedule(), is plain off-CPU time.
    switch_in(
        &mut st,
        T0 + 6 * MS,
        None,
        &CFG,
        &mut out,
        no_neighbour,
        unthrottled,
    );
    switch_out(
        &mut st,
        50,
        false,
        wait::OTHER,
        T0 + 7 * MS,
        0,
        None,
        &CFG,
        &mut out,
        unthrottled,
    );
    woken_by_interrupt(&mut st, T0 + 9 * MS, &CFG, &mut out, unthrottled);
    let off = out.0.last().expect("the off-CPU episode");
    assert_eq!((off.bucket.off_cpu_ns, off.bucket.io_wait_ns), (2 * MS, 0));
}

#[test]
fn time_off_cpu_names_the_process_whose_wakeups_ended_most_of_it() {
    // One bucket for all the sleeps below.
    let cfg = ProbeConfig {
        episode_threshold_ns: 100 * MS,
        bucket_ns: 1000 * MS,
        ..CFG
    };
    let mut out = Records::default();
    let mut st = in_state(state::OFF_CPU, T0);
    // Sleeps of 2 ms ended by 40, 1 ms by a timer (0), 2 ms by 40, then one of 5 ms by 50.
    for (i, (waker, sleep_ms)) in [(40u32, 2u64), (0, 1), (40, 2), (50, 5)]
        .into_iter()
        .enumerate()
    {
        let at = T0 + (i as u64) * 10 * MS;
        st.state = state::OFF_CPU;
        st.since_ns = at;
        wakeup(
            &mut st,
            at + sleep_ms * MS,
            waker,
            0,
            &Delay::NONE,
            &Delay::NONE,
            &cfg,
            &mut out,
            unthrottled,
        );
        if i == 2 {
            assert_eq!(
                (st.bucket.woken_by_tgid, st.bucket.woken_by_ns),
                (40, 4 * MS)
            );
        }
    }
    // 50's one sleep outweighs 40's two: it takes the name, with its own time only.
    assert_eq!(
        (st.bucket.woken_by_tgid, st.bucket.woken_by_ns),
        (50, 5 * MS)
    );
    // An episode names its own waker.
    let mut st = in_state(state::OFF_CPU, T0);
    woken_by_interrupt(&mut st, T0 + 200 * MS, &cfg, &mut out, unthrottled);
    let episode = out.0.last().expect("the episode");
    assert_eq!(episode.kind, record::EPISODE);
    assert_eq!(
        (episode.bucket.woken_by_tgid, episode.bucket.woken_by_ns),
        (0, 200 * MS)
    );
}

#[test]
fn a_sleep_behind_a_waker_stalled_on_memory_is_memory() {
    // The other worker reclaims in a page fault: 300 ms asleep on writeback, 20 ms reclaiming
    // on CPU, then it releases the address space's lock the sleeper waited 250 ms for.
    let mut waker = in_state(state::OFF_CPU, T0);
    waker.wait_reason = wait::MEMORY;
    let mut out = Records::default();
    woken_by_interrupt(&mut waker, T0 + 300 * MS, &CFG, &mut out, unthrottled);
    switch_in(
        &mut waker,
        T0 + 300 * MS,
        None,
        &CFG,
        &mut out,
        no_neighbour,
        unthrottled,
    );
    reclaim(&mut waker, T0 + 300 * MS, 0, true, None, &CFG, &mut out);
    reclaim(&mut waker, T0 + 320 * MS, 0, false, None, &CFG, &mut out);
    let stall = waker.memory_stall;
    assert_eq!((stall.start_ns, stall.end_ns), (T0, T0 + 320 * MS));
    assert_eq!(stall.delayed_ns, 320 * MS);

    // The sleeper's own stall stays its own; a fault waiting for the lock is memory's and not
    // the fault's too; a waker never stalled explains nothing.
    for (reason, waker_stall, memory_ns) in [
        (wait::OTHER, stall, 250 * MS),
        (wait::MEMORY, stall, 250 * MS),
        (wait::FAULT, stall, 250 * MS),
        (wait::LOCK, stall, 250 * MS),
        (wait::OTHER, Delay::NONE, 0),
    ] {
        let mut sleeper = in_state(state::OFF_CPU, T0 + 70 * MS);
        sleeper.wait_reason = reason;
        let mut out = Records::default();
        wakeup(
            &mut sleeper,
            T0 + 320 * MS,
            50,
            51,
            &Delay::NONE,
            &waker_stall,
            &CFG,
            &mut out,
            unthrottled,
        );
        let [slept] = out.0.as_slice() else {
            panic!("{:?}", out.0)
        };
        let b = slept.bucket;
        assert_eq!((b.off_cpu_ns, b.memory_stall_ns), (250 * MS, memory_ns));
        // All of each sleep was the waker's stall, or a plain sleep: nothing left for a reason.
        assert_eq!(b.fault_wait_ns + b.lock_wait_ns, 0, "{reason}");
    }
}
