//! Run-queue delay: a CPU hog pinned to the victim's CPU must show up as clearly higher delay
//! for the victim's cgroup than the same victim alone, measured in the same test; the victim's
//! own accounting must blame contention, and name the hog.

use std::time::Duration;

use culprit_lab::run::runq_contention::contention;
use culprit_tests::require_root;

#[test]
fn a_cpu_hog_on_the_victims_cpu_is_found_as_contention_and_named() -> anyhow::Result<()> {
    require_root()?;
    let outcome = contention(Duration::from_secs(1), 3, |_, _| {})?;
    eprintln!("{outcome:#?}");
    let (alone, contended) = (outcome.victim_alone, outcome.victim_contended);

    // The victim wakes up after every millisecond of sleep (a cycle of ~2 ms alone, more next
    // to the hog): both phases must have seen it at work.
    assert!(alone.waits > 500, "victim alone barely observed: {alone:?}");
    assert!(
        contended.waits > 500,
        "victim next to hog barely observed: {contended:?}"
    );
    // By the contended phase the agent has given the victim's cgroup a per-CPU histogram slot:
    // the switch counts its waits there (no hash lookup, no atomic add), not in the shared map.
    assert!(
        contended.waits_on_cpu_slot * 10 >= contended.waits * 9,
        "only {} of the victim's {} contended waits on its per-CPU slot",
        contended.waits_on_cpu_slot,
        contended.waits
    );
    // The hog competes with the victim for one CPU: the victim's waits grow several-fold.
    assert!(
        contended.mean_wait_ns() > 3.0 * alone.mean_wait_ns(),
        "mean wait alone {:.0} ns vs contended {:.0} ns",
        alone.mean_wait_ns(),
        contended.mean_wait_ns()
    );
    // The tail at least doubles: under emulation the victim's p99 alone is already milliseconds.
    assert!(
        contended.median_p99_ns() > 2 * alone.median_p99_ns(),
        "p99 alone {:?} ns vs contended {:?} ns",
        alone.p99s_ns,
        contended.p99s_ns
    );
    // The two hog threads take turns on the CPU: each waits roughly as long as the other runs.
    assert!(
        outcome.hog.total_wait_ns > 1_000_000_000,
        "hog threads should wait for each other: {:?}",
        outcome.hog
    );
    // Nothing ran in the idle cgroup, so nothing may be attributed to it.
    assert_eq!(
        outcome.idle.waits, 0,
        "idle cgroup has waits: {:?}",
        outcome.idle
    );

    // Per-thread: the victim's run-queue wait is contention (no quota anywhere), it grew with
    // the hog, and the neighbour that took the CPU is the hog.
    let (t_alone, t) = (
        &outcome.victim_threads_alone,
        &outcome.victim_threads_contended,
    );
    assert!(
        t.runq_ns > 0 && t.contention_ns >= t.runq_ns * 95 / 100,
        "{t:?}"
    );
    assert!(
        t.contention_ns > 2 * t_alone.contention_ns,
        "alone {t_alone:?}\nwith hog {t:?}"
    );
    let (neighbour, taken_ns) = t.top_neighbour().expect("a neighbour is named");
    assert_eq!(neighbour, outcome.hog_pid, "neighbours: {:?}", t.neighbours);
    assert!(
        taken_ns > t.contention_ns / 2,
        "the hog took {taken_ns} of {t:?}"
    );

    assert!(
        outcome.drops.values().all(|&v| v == 0),
        "losses: {:?}",
        outcome.drops
    );
    Ok(())
}
