//! Steal time: a thread that holds its CPU is charged the time the hypervisor took from that
//! CPU, as the kernel's own per-CPU steal counter (`/proc/stat`) says, and never more.
//!
//! The hypervisor's appetite cannot be injected from inside the guest: the test measures what
//! the host takes while it runs (on the development VMs a few ms per CPU-second) and judges
//! the agent against the kernel's counter over the same time. Under the kernel matrix's QEMU
//! (TCG, no steal clock) both are zero.

use std::{fs, time::Duration};

use culprit_lab::{
    faults::cgroup::TempCgroup,
    process::reaped::spawn_workload,
    run::agent::{RunningAgent, ThreadTotals},
};
use culprit_tests::require_root;

/// The CPU the spinner holds.
const CPU: usize = 1;
/// `/proc/stat` counts in USER_HZ ticks: two readings are each a tick coarse.
const TICK_NS: u64 = 10_000_000;

/// The steal time of one CPU so far, from `/proc/stat` (its eighth value), in ns.
fn cpu_steal_ns(cpu: usize) -> anyhow::Result<u64> {
    let stat = fs::read_to_string("/proc/stat")?;
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .ok_or_else(|| anyhow::anyhow!("no {name} in /proc/stat"))?;
    let ticks: u64 = line
        .split_whitespace()
        .nth(8)
        .ok_or_else(|| anyhow::anyhow!("no steal column: {line}"))?
        .parse()?;
    // USER_HZ is 100 on every architecture the agent builds for.
    Ok(ticks * TICK_NS)
}

#[test]
fn a_spinning_thread_is_charged_its_cpus_steal_time() -> anyhow::Result<()> {
    require_root()?;
    let cg = TempCgroup::new_v2("culprit-test-steal")?;
    // The spinner sleeps first and spins after: watched before it takes its CPU, so that its
    // interval on CPU begins with a reading of the CPU's steal clock. A thread already on its
    // CPU when it becomes watched is charged steal from its first switch on (docs/signals.md):
    // a hog that never leaves its CPU would show none (a CI run: 32 ms of the kernel's 80).
    let (sleep_s, spin_s) = (4.0, 10.0);
    let spinner = spawn_workload(
        cg.path(),
        Some(CPU),
        // Past its deadline once the spin ends: one spin, no second sleep.
        sleep_s + spin_s - 1.0,
        &[
            "wakeups",
            "--period-us",
            &((sleep_s * 1e6) as u64).to_string(),
            "--work-us",
            &((spin_s * 1e6) as u64).to_string(),
        ],
    )?;
    let pid = spinner.pid();
    let mut agent =
        RunningAgent::start(Duration::from_secs(1), &["--watch-pid", &pid.to_string()])?;
    // Registered and accounted from here on.
    agent.reports(1)?;
    // The kernel's count from when the spinner holds its CPU: steal while the CPU idles is
    // nobody's.
    let running = |pid: u32| {
        fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('R'))
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !running(pid) {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the spinner never ran"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let slept = agent.take_reports();
    assert!(
        !slept.iter().any(|r| r
            .threads
            .iter()
            .any(|t| t.pid == pid && t.on_cpu_ns > 500_000_000)),
        "the spinner was on its CPU before it was meant to spin"
    );
    let mut reports = Vec::new();
    let before_ns = cpu_steal_ns(CPU)?;
    while fs::metadata(format!("/proc/{pid}")).is_ok_and(|_| {
        fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
    }) {
        reports.push(agent.next_report()?);
        anyhow::ensure!(reports.len() < 30, "the spinner did not exit");
    }
    let truth_ns = cpu_steal_ns(CPU)? - before_ns;
    // The spinner's exit record (its last interval) arrives with the next report.
    reports.extend(agent.reports(2)?);
    agent.stop()?;
    drop(spinner);

    let t = ThreadTotals::of(&reports, pid);
    let window_ns = reports.len() as u64 * 1_000_000_000;
    eprintln!(
        "spinner: on CPU {} ms of which steal {:.1} ms; /proc/stat cpu{CPU} steal {} ms over the \
         same time ({} reports)",
        t.on_cpu_ns / 1_000_000,
        t.steal_ns as f64 / 1e6,
        truth_ns / 1_000_000,
        reports.len()
    );
    // The spinner held the CPU: the CPU's steal was taken from it.
    assert!(
        t.on_cpu_ns * 10 >= (window_ns - 3_000_000_000) * 8,
        "the spinner was on its CPU only {} ms",
        t.on_cpu_ns / 1_000_000
    );
    assert!(t.steal_ns <= t.on_cpu_ns);
    // Never more than the CPU lost, within the counter's two ticks.
    assert!(
        t.steal_ns <= truth_ns + 2 * TICK_NS,
        "agent {} ns of steal, the kernel counted {truth_ns} ns",
        t.steal_ns
    );
    // And most of it, wherever there was enough to tell from the counter's ticks.
    if truth_ns >= 4 * TICK_NS {
        assert!(
            t.steal_ns + 2 * TICK_NS >= truth_ns * 3 / 4,
            "agent {} ns of steal, the kernel counted {truth_ns} ns",
            t.steal_ns
        );
    } else {
        eprintln!("the host took too little to judge the lower bound ({truth_ns} ns)");
    }
    Ok(())
}
