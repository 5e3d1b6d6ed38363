//! `cargo xtask demo` and `culprit lab <scenario>`: scenarios next to a live agent, what it
//! found printed per scenario, and the HTML report, results and accuracy table written out.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::Context as _;

use super::{concurrency::Case, lab::Lab};
pub use crate::service::generator::LoadGenerator;
use crate::{
    faults::placement::{HARNESS_CPU, SERVICE_CPU},
    process::binaries::bin_path,
    report::{html_report, present},
    scenario::{
        join_score::{self, JoinRow},
        outcome::ScenarioRun,
        plan::{Scenario, Timing},
    },
};

/// What a lab run wrote.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub html: PathBuf,
    pub results_json: PathBuf,
    pub accuracy_md: PathBuf,
}

/// Stops the run on Ctrl-C or SIGTERM: the current scenario ends early and cleans up after
/// itself. Installed once per process.
pub fn interrupt_flag() -> anyhow::Result<Arc<AtomicBool>> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    if let Some(f) = FLAG.get() {
        return Ok(f.clone());
    }
    let flag = Arc::new(AtomicBool::new(false));
    let on_signal = flag.clone();
    ctrlc::set_handler(move || {
        if on_signal.swap(true, Ordering::SeqCst) {
            eprintln!("interrupted twice: exiting without cleaning up");
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: cleaning up (cgroups, nftables rules, processes)…");
    })
    .context("installing the Ctrl-C handler")?;
    Ok(FLAG.get_or_init(|| flag).clone())
}

/// How a lab run is driven besides its scenarios and timing.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    pub agent_args: Vec<String>,
    /// Then the concurrency scenario's cases, this many seconds each.
    pub concurrency_seconds: Option<u32>,
    /// A real load generator for the steady phases (the lab's own does otherwise).
    pub generator: Option<LoadGenerator>,
    /// Every scenario's service is the accept pool (`pool_server`), loaded on `/cpu`.
    pub accept_pool: bool,
    /// The service in the node's network namespace, on loopback, not in a pod's own.
    pub host_network: bool,
}

/// Runs `scenarios` in order with one agent, printing each as it completes, then, for
/// `concurrency_seconds` each, the concurrency scenario's cases, and writes the report to
/// `out_dir`, with the agent's own `culprit report` of the whole run (joined with k6's results
/// when k6 loaded it). Returns the runs and where the files went.
pub fn run(
    scenarios: &[Scenario],
    timing: Timing,
    out_dir: &Path,
    opts: &DemoOptions,
) -> anyhow::Result<(Vec<ScenarioRun>, Outputs)> {
    let stop = interrupt_flag()?;
    println!(
        "Culprit lab: {} scenario(s), {:.0} s reference + {:.0} s injected each, {} req/s \
         (the service and its downstream on CPU {}, the agent and the load on CPU {})",
        scenarios.len(),
        timing.reference.as_secs_f64(),
        timing.fault.as_secs_f64(),
        timing.rate_per_s,
        SERVICE_CPU,
        HARNESS_CPU
    );
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let started = std::time::Instant::now();
    let mut lab = Lab::start(stop.clone(), &opts.agent_args)?;
    if let Some(generator) = opts.generator {
        lab = lab.with_generator(generator, out_dir);
    }
    if opts.accept_pool {
        lab = lab.with_accept_pool();
    }
    if opts.host_network {
        lab = lab.with_host_network();
    }
    println!(
        "the agent's live view: culprit top --socket {}",
        lab.api_socket().display()
    );
    let mut runs = Vec::new();
    for &scenario in scenarios {
        let run = lab
            .run(scenario, timing)
            .with_context(|| format!("scenario {scenario}"))?;
        print!("{}", present::scenario_text(&run));
        runs.push(run);
    }
    let agent_report = agent_report(&lab, started.elapsed(), out_dir)?;
    lab.stop()?;
    let joins = match opts.concurrency_seconds {
        Some(seconds) => concurrency(seconds, &stop)?,
        None => Vec::new(),
    };
    let outputs = write_outputs(&runs, &joins, out_dir)?;
    println!("\n{}", accuracy_text(&runs, &joins));
    println!(
        "report: {}\nresults: {}\naccuracy table: {}\nthe agent's report of the run: {}",
        outputs.html.display(),
        outputs.results_json.display(),
        outputs.accuracy_md.display(),
        agent_report.display()
    );
    Ok((runs, outputs))
}

/// `culprit report` of the whole run from the agent's live data, joined with the load
/// generator's results of the fault phases when one loaded them (one file, their lines in
/// turn). Returns its HTML.
fn agent_report(
    lab: &Lab,
    elapsed: std::time::Duration,
    out_dir: &Path,
) -> anyhow::Result<PathBuf> {
    let dir = out_dir.join("culprit-report");
    let mut cmd = std::process::Command::new(bin_path("culprit")?);
    cmd.arg("report")
        .arg("--socket")
        .arg(lab.api_socket())
        .args(["--since", &format!("{}", elapsed.as_secs() + 5)])
        .arg("--out")
        .arg(&dir)
        .stdout(std::process::Stdio::null());
    if !lab.client_results().is_empty() {
        let merged = out_dir.join("client-fault-phases.json");
        let mut text = String::new();
        for f in lab.client_results() {
            text.push_str(
                &std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
            );
        }
        std::fs::write(&merged, text)?;
        cmd.arg("--k6").arg(&merged);
    }
    let status = cmd.status().context("running culprit report")?;
    anyhow::ensure!(status.success(), "culprit report exited with {status}");
    Ok(dir.join("report.html"))
}

/// The concurrency scenario: each case in turn, with an agent of its own.
fn concurrency(seconds: u32, stop: &AtomicBool) -> anyhow::Result<Vec<JoinRow>> {
    println!(
        "\nconcurrency: which thread served each request, no thread attribute ({seconds} s per \
         service)"
    );
    let mut rows = Vec::new();
    for case in Case::ALL {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let row = case
            .row(seconds)
            .with_context(|| format!("concurrency: {case:?}"))?;
        println!(
            "  {}: {} of {} joined with their own thread ({} with another), {} decomposed as \
             their route's work",
            row.app, row.right, row.requests, row.wrong, row.causes_right
        );
        rows.push(row);
    }
    Ok(rows)
}

/// The accuracy table, and the concurrency table if it ran.
fn accuracy_text(runs: &[ScenarioRun], joins: &[JoinRow]) -> String {
    let mut text = present::accuracy_markdown(runs);
    if !joins.is_empty() {
        text.push_str("\n## Concurrency: which thread served each request\n\n");
        text.push_str(&join_score::markdown(joins));
    }
    text
}

fn write_outputs(
    runs: &[ScenarioRun],
    joins: &[JoinRow],
    out_dir: &Path,
) -> anyhow::Result<Outputs> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let outputs = Outputs {
        html: out_dir.join("report.html"),
        results_json: out_dir.join("results.json"),
        accuracy_md: out_dir.join("accuracy.md"),
    };
    std::fs::write(&outputs.html, html_report::render(runs)?)?;
    std::fs::write(&outputs.results_json, serde_json::to_vec_pretty(runs)?)?;
    std::fs::write(&outputs.accuracy_md, accuracy_text(runs, joins))?;
    if !joins.is_empty() {
        std::fs::write(
            out_dir.join("concurrency.json"),
            serde_json::to_vec_pretty(joins)?,
        )?;
    }
    Ok(outputs)
}

/// A lab run fails when a scenario's injected cause was not found.
pub fn outcome(result: anyhow::Result<(Vec<ScenarioRun>, Outputs)>) -> anyhow::Result<()> {
    let (runs, _) = result?;
    let missed: Vec<String> = runs
        .iter()
        .filter(|r| !present::verdict(r).found)
        .map(|r| r.scenario.to_string())
        .collect();
    if !missed.is_empty() {
        anyhow::bail!("the injected cause was not found in: {}", missed.join(", "));
    }
    Ok(())
}
