//! CPU contention seen per cgroup: a victim that wakes up every millisecond, first alone on its
//! CPU, then next to a CPU hog.
//!
//! The victim asks for more than the third of the CPU a fair scheduler gives it next to the
//! hog's two threads (0.7 ms of work after each 1 ms sleep): a light sleeper would be let in at
//! once by CFS's wakeup preemption (its sleeper credit, up to 6.5) and wait for the hog only under
//! EEVDF (6.6+), so it would measure the scheduler, not the contention.

use std::{collections::BTreeMap, time::Duration};

use culprit::model::Report;

use super::agent::{RunningAgent, RunqTotals, ThreadTotals};
use crate::{faults::cgroup::TempCgroup, process::reaped::spawn_workload};

/// The CPU both the victim and the hog are pinned to.
const CPU: usize = 0;

/// 0.7 ms of work after each 1 ms sleep: about 40% of a CPU when it is free.
const VICTIM: [&str; 3] = ["wakeups", "--work-us", "700"];

/// What the agent reported for the victim alone and next to the hog.
#[derive(Debug)]
pub struct ContentionOutcome {
    pub victim_alone: RunqTotals,
    pub victim_contended: RunqTotals,
    pub hog: RunqTotals,
    /// A cgroup of the experiment in which nothing ran.
    pub idle: RunqTotals,
    /// The victim's watched threads, alone and next to the hog.
    pub victim_threads_alone: ThreadTotals,
    pub victim_threads_contended: ThreadTotals,
    pub victim_pid: u32,
    pub hog_pid: u32,
    /// Kernel-side losses at the end.
    pub drops: BTreeMap<String, u64>,
}

/// Runs the two phases with a fresh agent; `on_report` sees every report used.
pub fn contention(
    interval: Duration,
    reports_per_phase: usize,
    mut on_report: impl FnMut(&str, &Report),
) -> anyhow::Result<ContentionOutcome> {
    let lab = TempCgroup::new_v2("culprit-lab")?;
    let victim_cg = lab.child("victim")?;
    let hog_cg = lab.child("noisy-neighbour")?;
    lab.child("idle")?;
    let phase_secs = (reports_per_phase + 1) as f64 * interval.as_secs_f64();
    let victim = spawn_workload(&victim_cg, Some(CPU), phase_secs * 2.0 + 15.0, &VICTIM)?;
    let victim_pid = victim.pid().to_string();
    // The agent runs off the victim's CPU: its start-up work is the reference phase's only
    // neighbour otherwise (under emulation, 10x slower, it took 0.7 s of the victim's CPU in
    // the 3 s alone and the victim waited longer alone than next to the hog).
    let mut agent = RunningAgent::start_off_cpus(
        &[CPU],
        interval,
        &[
            "--cgroup-prefix",
            &lab.agent_path(None),
            "--watch-pid",
            &victim_pid,
        ],
    )?;
    agent.next_report()?; // The probes are attached once the first report arrives.
    agent.next_report()?; // Partly before the victim was watched.
    let alone = agent.reports(reports_per_phase)?;
    alone.iter().for_each(|r| on_report("victim alone", r));

    let hog = spawn_workload(
        &hog_cg,
        Some(CPU),
        phase_secs + 5.0,
        &["hog", "--threads", "2"],
    )?;
    agent.next_report()?; // Partly before the hog started.
    let contended = agent.reports(reports_per_phase)?;
    contended
        .iter()
        .for_each(|r| on_report("victim next to a CPU hog", r));
    let drops = contended
        .last()
        .map(|r| r.drops.clone())
        .unwrap_or_default();
    agent.stop()?;

    let path = |child| lab.agent_path(Some(child));
    let victim_alone = RunqTotals::of(&alone, &path("victim"));
    let victim_contended = RunqTotals::of(&contended, &path("victim"));
    let hog_totals = RunqTotals::of(&contended, &path("noisy-neighbour"));
    let victim_threads_alone = ThreadTotals::of(&alone, victim.pid());
    let victim_threads_contended = ThreadTotals::of(&contended, victim.pid());
    let mut all = alone;
    all.extend(contended);
    Ok(ContentionOutcome {
        victim_alone,
        victim_contended,
        hog: hog_totals,
        idle: RunqTotals::of(&all, &path("idle")),
        victim_threads_alone,
        victim_threads_contended,
        victim_pid: victim.pid(),
        hog_pid: hog.pid(),
        drops,
    })
}
