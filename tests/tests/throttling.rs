//! CFS throttling: a busy loop in a cgroup with a CPU quota waits throttled, the agent's
//! throttled time matches the cgroup's own `cpu.stat`, and none of it is called contention.

use std::time::Duration;

use culprit_lab::{
    faults::cgroup::TempCgroup,
    process::reaped::spawn_workload,
    run::agent::{RunningAgent, ThreadTotals},
};
use culprit_tests::require_root;

#[test]
fn a_quota_bound_busy_loop_is_throttled_as_cpu_stat_says() -> anyhow::Result<()> {
    require_root()?;
    // 20 ms of CPU per 100 ms period: the loop spends ~80% of its time throttled.
    let quota = TempCgroup::new_cpu_quota("culprit-test-quota", 20_000, 100_000)?;
    let busy = spawn_workload(quota.path(), Some(1), 15.0, &["hog", "--threads", "1"])?;
    let pid = busy.pid().to_string();
    let mut agent = RunningAgent::start(Duration::from_secs(1), &["--watch-pid", &pid])?;
    agent.reports(2)?;
    let reports = agent.reports(4)?;
    agent.stop()?;

    let t = ThreadTotals::of(&reports, busy.pid());
    eprintln!("busy loop {t:?}");
    let rows: Vec<_> = reports
        .iter()
        .flat_map(|r| &r.throttling)
        .filter(|row| row.cgroup == quota.path().display().to_string())
        .collect();
    anyhow::ensure!(
        !rows.is_empty(),
        "no throttling rows for {}",
        quota.path().display()
    );
    let cpu_stat_ns: u64 = rows.iter().map(|r| r.cpu_stat_throttled_ns).sum();
    let agent_ns: u64 = rows.iter().map(|r| r.threads_throttled_ns).sum();
    eprintln!("cpu.stat throttled {cpu_stat_ns} ns, agent {agent_ns} ns, rows {rows:#?}");

    assert!(
        cpu_stat_ns > 1_000_000_000,
        "the quota barely throttled: {cpu_stat_ns} ns"
    );
    assert!(
        agent_ns.abs_diff(cpu_stat_ns) * 100 <= cpu_stat_ns * 15,
        "agent {agent_ns} ns vs cpu.stat {cpu_stat_ns} ns: more than 15% apart"
    );
    // Throttled, not contention: the CPU is otherwise free.
    assert!(
        t.throttled_ns > 10 * t.contention_ns,
        "throttled {} ns vs contention {} ns",
        t.throttled_ns,
        t.contention_ns
    );
    assert!(
        rows.iter().any(|r| !r.episodes.is_empty()),
        "no throttle episodes reported"
    );
    Ok(())
}
