//! A load test as a user runs one: k6 (the real binary, `lab/k6/load.js`) or Locust
//! (`lab/locust/locustfile.py`) loads the lab service (its accept pool, whose wait before a span
//! the kernel measures) while CPU hogs share its CPU; `culprit report --k6` (alias
//! `--client-results`) joins the generator's own latencies with the agent's decompositions by
//! trace id. Of the p99 excess the generator saw, most must be the contention, with the hog
//! named, and the HTML report must render in Chromium, one chart per service.

use std::time::Duration;

use culprit::{
    cause::Cause,
    tools::load_report::{model::CauseShare, render::LoadReport},
};
use culprit_lab::{
    report::browser,
    run::demo::{self, DemoOptions, LoadGenerator},
    scenario::plan::{Scenario, Timing},
};
use culprit_tests::require_root;

/// Of the server's part of k6's p99 excess, the contention's: 83-96% measured (ACCURACY.md);
/// below this is a regression.
const P99_EXCESS_FLOOR: f64 = 0.75;
/// Locust's p99 is its slowest few requests, and 70-85% of their excess is Locust's own client
/// time (Python on the harness's CPU, next to the agent): the server's part of it is a few
/// milliseconds over 3-4 requests, 50-88% contention in 11 runs here (2026-12-07, the service
/// in its own network namespace or not alike), the rest the pool's queue and the other worker.
const LOCUST_P99_EXCESS_FLOOR: f64 = 0.45;
/// Of k6's whole p99 excess, the contention's: 78-92% in runs here, 52% in one CI run whose k6
/// spent 38% of its p99 excess outside the server (its own client time on the harness's CPU),
/// which the report rightly does not blame on the server. Half is the regression line.
const K6_WHOLE_EXCESS_FLOOR: f64 = 0.5;

#[test]
fn a_k6_run_under_contention_is_explained_by_the_hog() -> anyhow::Result<()> {
    load_test_under_contention(LoadGenerator::K6)
}

#[test]
fn a_locust_run_under_contention_is_explained_by_the_hog() -> anyhow::Result<()> {
    load_test_under_contention(LoadGenerator::Locust)
}

/// The lab's contention scenario loaded by `generator`, judged by `culprit report`'s join.
fn load_test_under_contention(generator: LoadGenerator) -> anyhow::Result<()> {
    require_root()?;
    let out = std::env::temp_dir().join(format!(
        "culprit-{generator:?}-report-{}",
        std::process::id()
    ));
    let timing = Timing {
        reference: Duration::from_secs(3),
        fault: Duration::from_secs(9),
        ..Timing::DEMO
    };
    let opts = DemoOptions {
        generator: Some(generator),
        accept_pool: true,
        ..DemoOptions::default()
    };
    let (runs, _) = demo::run(&[Scenario::CpuContention], timing, &out, &opts)?;
    let hog = runs[0].hog_pid.expect("the contention phase ran hogs");
    let dir = out.join("culprit-report");
    let report: LoadReport = serde_json::from_slice(&std::fs::read(dir.join("report.json"))?)?;

    // The generator's requests of the contention phase, every one joined with its span.
    let client = report
        .clients
        .iter()
        .find(|c| c.group.as_deref() == Some("cpu-contention-cpu_contention"))
        .expect("the generator's contention phase in the report");
    assert!(client.requests > 100, "{client:?}");
    assert!(client.joined * 100 >= client.requests * 95, "{client:?}");
    let contention = client
        .p99_by_cause
        .iter()
        .find(|s| s.cause == Cause::CpuContention)
        .expect("contention in the p99 excess");
    eprintln!(
        "{generator:?}'s p99 excess by cause: {:?}",
        client.p99_by_cause
    );
    // Locust's own client time (Python: its connects, its parsing, its event loop on a shared
    // CPU) is half or more of its p99 excess, outside the server, where the report puts it
    // (`unknown`); k6's a tenth, at times a third. Of the server's side the contention is most.
    // The hypervisor's steal is the host's, not the lab's: the agent names it (a CI run had 40%
    // of k6's p99 excess stolen), and the lab's fault is judged on the rest.
    let judged = |s: &&CauseShare| s.cause != Cause::CpuSteal;
    let server_ms: f64 = client
        .p99_by_cause
        .iter()
        .filter(judged)
        .filter(|s| s.cause != Cause::Unknown)
        .map(|s| s.ms)
        .sum();
    let judged_ms: f64 = client
        .p99_by_cause
        .iter()
        .filter(judged)
        .map(|s| s.ms)
        .sum();
    let floor = match generator {
        LoadGenerator::K6 => P99_EXCESS_FLOOR,
        LoadGenerator::Locust => LOCUST_P99_EXCESS_FLOOR,
    };
    assert!(
        contention.ms >= floor * server_ms,
        "contention explains {:.0}% of the server's part of {generator:?}'s p99 excess: {:?}",
        contention.ms / server_ms * 100.0,
        client.p99_by_cause
    );
    if generator == LoadGenerator::K6 {
        assert!(
            contention.ms >= K6_WHOLE_EXCESS_FLOOR * judged_ms,
            "contention explains {:.0}% of k6's p99 excess: {:?}",
            contention.ms / judged_ms * 100.0,
            client.p99_by_cause
        );
    }
    let biggest_kernel = client
        .p99_by_cause
        .iter()
        .filter(judged)
        .filter(|s| s.cause.is_kernel())
        .max_by(|a, b| a.share.total_cmp(&b.share));
    assert_eq!(
        biggest_kernel.map(|s| s.cause),
        Some(Cause::CpuContention),
        "{:?}",
        client.p99_by_cause
    );
    // k6's tail is the server's: the hog must come first. Locust's few slowest requests are
    // as often the pool's two workers overlapping (the service's own other worker first, the
    // hog second, in 2 of 4 runs here): the hog must be among those named.
    let hog_name = format!("({hog})");
    let named: Vec<&str> = match generator {
        LoadGenerator::K6 => contention.who.iter().take(1),
        LoadGenerator::Locust => contention.who.iter().take(3),
    }
    .map(|w| w.0.as_str())
    .collect();
    assert!(
        named.iter().any(|n| n.contains(&hog_name)),
        "the hog ({hog}) is not who is behind the contention: {:?}",
        contention.who
    );

    let page = browser::load(&dir.join("report.html"), 1200, 2400)?;
    assert!(
        page.console.is_empty(),
        "the report logged to the console: {:#?}",
        page.console
    );
    assert_eq!(
        page.dom.matches("<figure class=\"chart\"").count(),
        report.services.len(),
        "one chart per service"
    );
    assert!(
        page.dom
            .contains("<figure class=\"chart\" data-service=\"lab-service\"><svg"),
        "no chart for the lab service"
    );
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}
