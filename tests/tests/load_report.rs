//! A load test as a user runs one: k6 (the real binary, `lab/k6/load.js`) loads the lab service
//! (its accept pool, whose wait before a span the kernel measures) while CPU hogs share its CPU;
//! `culprit report --k6` joins k6's own latencies with the agent's decompositions by trace id.
//! Of the p99 excess k6 saw, most must be the contention, with the hog named, and the HTML
//! report must render in Chromium, one chart per service.

use std::time::Duration;

use culprit::{cause::Cause, tools::load_report::render::LoadReport};
use culprit_lab::{
    report::browser,
    run::demo::{self, DemoOptions},
    scenario::plan::{Scenario, Timing},
};
use culprit_tests::require_root;

/// Below the 90% `cargo xtask demo` measures (ACCURACY.md): a failure is a regression.
const P99_EXCESS_FLOOR: f64 = 0.75;

#[test]
fn a_k6_run_under_contention_is_explained_by_the_hog() -> anyhow::Result<()> {
    require_root()?;
    let out = std::env::temp_dir().join(format!("culprit-k6-report-{}", std::process::id()));
    let timing = Timing {
        reference: Duration::from_secs(3),
        fault: Duration::from_secs(9),
        ..Timing::DEMO
    };
    let opts = DemoOptions {
        k6: true,
        accept_pool: true,
        ..DemoOptions::default()
    };
    let (runs, _) = demo::run(&[Scenario::CpuContention], timing, &out, &opts)?;
    let hog = runs[0].hog_pid.expect("the contention phase ran hogs");
    let dir = out.join("culprit-report");
    let report: LoadReport = serde_json::from_slice(&std::fs::read(dir.join("report.json"))?)?;

    // k6's requests of the contention phase, every one joined with its span.
    let client = report
        .clients
        .iter()
        .find(|c| c.group.as_deref() == Some("cpu-contention-cpu_contention"))
        .expect("k6's contention phase in the report");
    assert!(client.requests > 100, "{client:?}");
    assert!(client.joined * 100 >= client.requests * 95, "{client:?}");
    let contention = client
        .p99_by_cause
        .iter()
        .find(|s| s.cause == Cause::CpuContention)
        .expect("contention in the p99 excess");
    assert!(
        contention.share >= P99_EXCESS_FLOOR,
        "contention explains {:.0}% of k6's p99 excess: {:?}",
        contention.share * 100.0,
        client.p99_by_cause
    );
    let named = contention.who.first().map(|w| w.0.as_str()).unwrap_or("");
    assert!(
        named.contains(&format!("({hog})")),
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
