//! The lab end to end, briefly: every scenario next to a live agent, with the real lab service
//! (opentelemetry-otlp) under load. Each injected cause must carry most of the slow requests'
//! excess latency, the baseline must blame almost nothing on the kernel, and the HTML report must
//! render in Chromium with one chart per scenario. The floors sit well below the goals in
//! ACCURACY.md (measured by `cargo xtask demo`): a failure here is a regression, not noise.

use std::{sync::OnceLock, time::Duration};

use culprit::cause::Cause;
use culprit_lab::{
    run::demo::{self, Outputs},
    scenario::{
        accuracy::{Injected, Request},
        outcome::ScenarioRun,
        plan::{Scenario, Timing},
    },
};
use culprit_tests::require_root;

#[path = "lab_scenarios/join.rs"]
mod join;
#[path = "lab_scenarios/report.rs"]
mod report;

const ACCURACY_FLOOR: f64 = 0.75;
const MIXED_ACCURACY_FLOOR: f64 = 0.6;
/// A `/downstream` request is slow through its downstream (or `ksoftirqd`) waiting behind the
/// hogs while the service thread sleeps: the wake chain names it contention, as the goal wants.
const CONTENTION_ACCURACY_FLOOR: f64 = 0.75;
const BASELINE_KERNEL_SHARE_CEILING: f64 = 0.15;
/// The verdict, not only the time: of the slow requests a fault really slowed, the share whose
/// `culprit.cause` names it (goal 90%, measured 100% in three demo runs on 2026-12-06).
const LABEL_FLOOR: f64 = 0.8;
/// Measured within 7% (ACCURACY.md); one CI run on a machine also compiling on the same two
/// CPUs measured +34%: waits that begin throttled count whole, including the queueing after
/// the unthrottle, which a busy CPU lengthens. Half is the regression line.
const THROTTLE_AGREEMENT_FLOOR: f64 = 0.5;

fn lab() -> &'static Result<(Vec<ScenarioRun>, Outputs), String> {
    static RUNS: OnceLock<Result<(Vec<ScenarioRun>, Outputs), String>> = OnceLock::new();
    RUNS.get_or_init(|| {
        require_root().map_err(|e| e.to_string())?;
        let out = std::env::temp_dir().join(format!("culprit-lab-test-{}", std::process::id()));
        let timing = Timing {
            reference: Duration::from_secs(3),
            fault: Duration::from_secs(9),
            ..Timing::DEMO
        };
        demo::run(&Scenario::ALL, timing, &out, &demo::DemoOptions::default())
            .map_err(|e| format!("{e:#}"))
    })
}

fn runs() -> anyhow::Result<&'static [ScenarioRun]> {
    match lab() {
        Ok((runs, _)) => Ok(runs),
        Err(e) => anyhow::bail!("the lab did not run: {e}"),
    }
}

fn run_of(scenario: Scenario) -> anyhow::Result<&'static ScenarioRun> {
    runs()?
        .iter()
        .find(|r| r.scenario == scenario)
        .ok_or_else(|| anyhow::anyhow!("{scenario} did not run"))
}

fn accuracy(run: &ScenarioRun, cause: Injected) -> f64 {
    run.summary
        .accuracy_by_cause
        .get(cause.cause_name())
        .copied()
        .unwrap_or(0.0)
}

#[test]
fn every_request_span_is_decomposed_and_no_request_fails() -> anyhow::Result<()> {
    for run in runs()? {
        assert!(
            run.spans_received as u64 * 100 >= run.spans_expected * 98,
            "{}: {} of {} spans decomposed",
            run.scenario,
            run.spans_received,
            run.spans_expected
        );
        assert!(
            run.summary.requests >= 200,
            "{}: {} requests",
            run.scenario,
            run.summary.requests
        );
        // A retry storm fails a call now and then (every attempt failed, or the client's 10 s
        // passed in reconnects): its own test judges it.
        if run.scenario != Scenario::RetryStorm {
            assert_eq!(run.client.failed, 0, "{}: failed requests", run.scenario);
        }
        // Sub-millisecond requests get a real decomposition too (goal 95%, ACCURACY.md).
        let s = &run.summary;
        assert!(
            s.short_decomposed * 100 >= s.short_requests * SHORT_DECOMPOSED_FLOOR_PCT,
            "{}: {} of {} requests under 1 ms decomposed",
            run.scenario,
            s.short_decomposed,
            s.short_requests
        );
    }
    Ok(())
}

/// CI floor for the share of sub-millisecond requests decomposed, inside the 95% goal.
const SHORT_DECOMPOSED_FLOOR_PCT: usize = 85;

#[test]
fn the_baseline_blames_almost_nothing_on_the_kernel() -> anyhow::Result<()> {
    let run = run_of(Scenario::Baseline)?;
    assert!(
        run.summary.kernel_share < BASELINE_KERNEL_SHARE_CEILING,
        "{:.1}% of the baseline's request time blamed on the kernel",
        run.summary.kernel_share * 100.0
    );
    Ok(())
}

#[test]
fn cpu_contention_carries_the_slow_requests_with_the_hog_named() -> anyhow::Result<()> {
    let run = run_of(Scenario::CpuContention)?;
    let acc = accuracy(run, Injected::Contention);
    assert!(
        acc >= CONTENTION_ACCURACY_FLOOR,
        "contention accuracy {acc:.2}"
    );
    let named = run
        .hog_named_share()
        .expect("no slow request of the contention phase was named cpu.contention");
    assert!(named >= 0.7, "the hog named in {named:.2} of slow requests");
    Ok(())
}

#[test]
fn cpu_throttling_carries_the_slow_requests_and_agrees_with_cpu_stat() -> anyhow::Result<()> {
    let run = run_of(Scenario::CpuThrottling)?;
    let acc = accuracy(run, Injected::Throttling);
    assert!(acc >= ACCURACY_FLOOR, "throttling accuracy {acc:.2}");
    let t = run.throttle.as_ref().expect("a throttling check");
    assert!(t.cpu_stat_ms > 100.0, "the quota barely throttled: {t:?}");
    assert!(
        t.relative_error().abs() <= THROTTLE_AGREEMENT_FLOOR,
        "agent {:.0} ms vs cpu.stat {:.0} ms",
        t.agent_ms,
        t.cpu_stat_ms
    );
    Ok(())
}

#[test]
fn packet_loss_carries_the_slow_requests_with_the_downstream_named() -> anyhow::Result<()> {
    let run = run_of(Scenario::PacketLoss)?;
    let acc = accuracy(run, Injected::Retransmit);
    assert!(acc >= ACCURACY_FLOOR, "retransmit accuracy {acc:.2}");
    let blamed: Vec<_> = run
        .requests
        .iter()
        .filter(|r| r.cause == "tcp.retransmit")
        .collect();
    assert!(!blamed.is_empty());
    for r in blamed {
        assert_eq!(
            r.retransmit_peer.as_deref(),
            Some(run.downstream_peer.as_str()),
            "{r:?}"
        );
        // Only requests that wait on the downstream can wait on its packets.
        assert_eq!(r.route, "GET /downstream", "{r:?}");
    }
    Ok(())
}

#[test]
fn a_downstream_call_names_the_downstream_as_its_waker() -> anyhow::Result<()> {
    let run = run_of(Scenario::Baseline)?;
    let tag = format!("({})", run.downstream_pid);
    let calls: Vec<_> = run
        .requests
        .iter()
        .filter(|r| r.route == "GET /downstream")
        .collect();
    let named = calls
        .iter()
        .filter(|r| r.waker.as_deref().is_some_and(|w| w.ends_with(&tag)))
        .count();
    // Its answer arrives on loopback, processed in the downstream's own send: it wakes the
    // service thread.
    assert!(
        !calls.is_empty() && named * 10 >= calls.len() * 8,
        "{named} of {} downstream calls name {tag} as their waker: {:?}",
        calls.len(),
        calls.iter().take(5).map(|r| &r.waker).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn disk_io_carries_the_slow_requests_of_a_loaded_disk() -> anyhow::Result<()> {
    let run = run_of(Scenario::DiskIo)?;
    let acc = accuracy(run, Injected::DiskIo);
    assert!(acc >= ACCURACY_FLOOR, "disk.io accuracy {acc:.2}");
    // The writers slowed `/disk` itself, not only its tail: its median over its reference's.
    let disk: Vec<f64> = run
        .requests
        .iter()
        .filter(|r| r.route == "GET /disk")
        .map(|r| r.latency_ms)
        .collect();
    let reference = run
        .reference_medians
        .get("GET /disk")
        .copied()
        .unwrap_or(0.0);
    let median = culprit_lab::scenario::accuracy::quantile(&disk, 0.5);
    assert!(
        median > 1.5 * reference,
        "the writers barely slowed /disk: median {median:.1} ms vs {reference:.1} ms"
    );
    // The device is named: the one holding `/disk`'s file (or its whole disk, for a partition).
    let (named, blamed, device) = naming_the_data_device(run, Cause::DiskIo);
    assert!(
        named * 10 >= blamed * 9 && blamed > 0,
        "{named} of {blamed} disk.io requests name {device}"
    );
    Ok(())
}

/// Of the requests blamed on `cause`, how many name the device of the lab's data directory
/// (or its whole disk, for a partition), how many there are, and the device.
fn naming_the_data_device(run: &ScenarioRun, cause: Cause) -> (usize, usize, String) {
    let device = culprit_lab::workloads::block_device_name(std::path::Path::new(
        culprit_lab::run::lab::DISK_DIR,
    ))
    .expect("the data directory's device");
    let blamed: Vec<&Request> = run.requests.iter().filter(|r| r.cause == cause).collect();
    let named = blamed
        .iter()
        .filter(|r| {
            r.disk_device
                .as_deref()
                .is_some_and(|d| device.starts_with(d) || d.starts_with(&device))
        })
        .count();
    (named, blamed.len(), device)
}

/// The chain of two: `/lock` requests wait in `futex` for a thread that a hog on its own CPU
/// delays while it holds their lock. Contention, with the hog as neighbour and the holder named;
/// the holder's own time with the lock is `lock.wait`.
#[test]
fn a_lock_holder_behind_a_hog_is_contention_through_the_lock() -> anyhow::Result<()> {
    let run = run_of(Scenario::LockContention)?;
    let acc = accuracy(run, Injected::Contention);
    assert!(acc >= ACCURACY_FLOOR, "lock chain accuracy {acc:.2}");
    let reference = run
        .reference_medians
        .get("GET /lock")
        .copied()
        .unwrap_or(0.0);
    let hog = format!("({})", run.hog_pid.expect("the hog ran"));
    let lock: Vec<&Request> = run
        .requests
        .iter()
        .filter(|r| r.route == "GET /lock")
        .collect();
    // Slowed well past a collision with an undelayed hold.
    let chained: Vec<&&Request> = lock
        .iter()
        .filter(|r| r.latency_ms > reference + 4.0 && r.cause == Cause::CpuContention)
        .collect();
    assert!(
        chained.len() >= 5,
        "only {} /lock requests slowed by 4 ms and blamed on contention",
        chained.len()
    );
    let share = |f: &dyn Fn(&Request) -> bool| {
        chained.iter().filter(|r| f(r)).count() as f64 / chained.len() as f64
    };
    let hog_named = share(&|r| r.neighbour.as_deref().is_some_and(|n| n.ends_with(&hog)));
    let holder_named = share(&|r| {
        r.lock_holder
            .as_deref()
            .is_some_and(|h| h.starts_with(culprit_lab::workloads::lock::HOLDER_NAME))
    });
    assert!(hog_named >= 0.7, "the hog named in {hog_named:.2}");
    assert!(
        holder_named >= 0.7,
        "the lock holder named in {holder_named:.2}"
    );
    // The holder's own time with the lock is the application's: `lock.wait`, its holder named.
    // (Some runs have none: the holder, a background thread behind the hogs, is delayed in
    // every hold, and each sleep on the lock is the chain's; `wait_reasons.rs` measures a lock
    // wait alone.)
    for r in lock.iter().filter(|r| r.parts.lock_wait_ms >= 0.5) {
        assert!(
            r.lock_holder.is_some(),
            "a lock wait without its holder: {r:?}"
        );
    }
    Ok(())
}

/// A memory cgroup at its limit with a neighbour dirtying page cache in it: `/alloc` requests
/// fault in fresh memory only after reclaim, on their CPU and asleep waiting on writeback.
#[test]
fn memory_pressure_carries_the_slow_requests_of_a_full_cgroup() -> anyhow::Result<()> {
    let run = run_of(Scenario::MemoryPressure)?;
    let acc = accuracy(run, Injected::MemoryReclaim);
    assert!(acc >= ACCURACY_FLOOR, "memory.reclaim accuracy {acc:.2}");
    // `/cpu` allocates next to nothing (a page its heap grows by reclaims too, rarely): the
    // pressure is blamed where it was felt.
    let cpu: Vec<&Request> = run
        .requests
        .iter()
        .filter(|r| r.route == "GET /cpu")
        .collect();
    let cpu_blamed = cpu
        .iter()
        .filter(|r| r.cause == Cause::MemoryReclaim)
        .count();
    assert!(
        cpu_blamed * 10 <= cpu.len(),
        "{cpu_blamed} of {} /cpu requests blamed on memory.reclaim",
        cpu.len()
    );
    Ok(())
}

/// The pages `/mapped` reads dropped from the page cache: each is a major fault, asleep
/// reading the page in; the fault is the cause (not `disk.io`), with the device it read from.
#[test]
fn evicted_pages_make_major_faults_the_cause() -> anyhow::Result<()> {
    let run = run_of(Scenario::PageFault)?;
    let acc = accuracy(run, Injected::PageFault);
    assert!(acc >= ACCURACY_FLOOR, "page_fault.major accuracy {acc:.2}");
    assert!(
        run.requests
            .iter()
            .filter(|r| r.cause == Cause::PageFault)
            .all(|r| r.route == "GET /mapped"),
        "a request that maps nothing blamed on page faults"
    );
    let (named, blamed, device) = naming_the_data_device(run, Cause::PageFault);
    assert!(
        named * 10 >= blamed * 8 && blamed > 0,
        "{named} of {blamed} page_fault.major requests name {device}"
    );
    Ok(())
}

/// SYNs to the downstream dropped: `/connect` requests, which dial it afresh, stall in `connect`
/// for the SYN's retransmit; the stall is a connect's (`tcp.connect_retransmit`), not a data
/// retransmit, and names the downstream.
#[test]
fn a_lost_syn_is_a_connect_stall() -> anyhow::Result<()> {
    let run = run_of(Scenario::ConnectLoss)?;
    let acc = accuracy(run, Injected::ConnectRetransmit);
    assert!(
        acc >= ACCURACY_FLOOR,
        "tcp.connect_retransmit accuracy {acc:.2}"
    );
    let stalled: Vec<&Request> = run
        .requests
        .iter()
        .filter(|r| r.cause == Cause::TcpConnectRetransmit)
        .collect();
    assert!(!stalled.is_empty(), "no request stalled in connect");
    for r in stalled {
        assert_eq!(r.route, "GET /connect", "{r:?}");
        // The SYN's retransmit timeout is a second.
        assert!(r.parts.connect_retransmit_ms >= 800.0, "{r:?}");
        assert_eq!(
            r.retransmit_peer.as_deref(),
            Some(run.downstream_peer.as_str()),
            "{r:?}"
        );
    }
    Ok(())
}

#[test]
fn the_slowed_requests_of_every_fault_are_labelled_with_it() -> anyhow::Result<()> {
    for run in runs()? {
        for cause in run.scenario.fault_phases().into_iter().flatten() {
            let label = run.summary.label_by_cause.get(cause.cause_name()).copied();
            assert!(
                label.is_some_and(|l| l >= LABEL_FLOOR),
                "{}: {} labelled on {label:?} of its slowed requests ({:?})",
                run.scenario,
                cause.cause_name(),
                run.summary.label_by_cause
            );
        }
    }
    Ok(())
}

#[test]
fn mixed_faults_are_each_found_in_their_own_phase() -> anyhow::Result<()> {
    let run = run_of(Scenario::Mixed)?;
    for cause in [
        Injected::Contention,
        Injected::Throttling,
        Injected::Retransmit,
    ] {
        let acc = accuracy(run, cause);
        // Each phase of `mixed` is a third as long: fewer slow requests, one floor for all.
        let floor = MIXED_ACCURACY_FLOOR;
        assert!(
            acc >= floor,
            "{}: accuracy {acc:.2} ({:?})",
            cause.cause_name(),
            run.summary.accuracy_by_cause
        );
    }
    Ok(())
}

/// A pool of two workers given bursts of three times its size: the requests that wait for a
/// worker wait in the kernel before their spans start; the client's excess is `queue.backlog`,
/// measured from the request's arrival to its read, on the worker that read it.
#[test]
fn a_saturated_pool_queues_its_requests_before_their_spans() -> anyhow::Result<()> {
    let run = run_of(Scenario::Saturation)?;
    let acc = accuracy(run, Injected::QueueBacklog);
    assert!(acc >= ACCURACY_FLOOR, "queue.backlog accuracy {acc:.2}");
    let queued: Vec<&Request> = run
        .requests
        .iter()
        .filter(|r| r.cause == Cause::QueueBacklog)
        .collect();
    assert!(!queued.is_empty(), "no request queued");
    for r in queued {
        // The client saw the wait, the span did not: its latency is the client's.
        assert!(
            r.parts.queue_ms > 0.0 && r.latency_ms >= r.parts.queue_ms,
            "{r:?}"
        );
    }
    Ok(())
}

/// A client that retries, its downstream losing packets: the agent counts the attempts per call
/// from the attempts' own spans (their `http.request.resend_count`) as the service counted them,
/// and blames the failed attempts' time on the retransmits that failed them.
#[test]
fn a_retry_storm_is_counted_and_its_failures_blamed_on_the_kernel() -> anyhow::Result<()> {
    let run = run_of(Scenario::RetryStorm)?;
    let retry = run.retry.expect("retries counted");
    let (truth, agent) = retry.amplification();
    assert!(truth > 1.0, "no retry happened: {retry:?}");
    assert!(
        (agent - truth).abs() <= 0.1 * truth,
        "amplification {agent:.3} by the agent, {truth:.3} by the service"
    );
    assert!(
        retry.failed_retransmit_ms >= 0.75 * retry.failed_ms,
        "failed attempts blamed on retransmits: {retry:?}"
    );
    Ok(())
}

#[test]
fn every_oom_kill_is_reported_with_its_cgroup_and_limit() -> anyhow::Result<()> {
    let run = run_of(Scenario::Oom)?;
    let oom = run.oom.as_ref().expect("the OOM job ran");
    let killed = oom.truth.killed_pids.len();
    // Workers of 256 MiB in 64 MiB, one every few hundred ms through the fault phase.
    assert!(
        killed >= 3,
        "the kernel killed only {killed} workers: {oom:?}"
    );
    assert_eq!(oom.reported, killed, "{oom:?}");
    assert_eq!(oom.identified, killed, "{oom:?}");
    Ok(())
}
