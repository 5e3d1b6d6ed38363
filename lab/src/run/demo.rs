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

use super::lab::Lab;
use crate::{
    faults::placement::{HARNESS_CPU, SERVICE_CPU},
    report::{html_report, present},
    scenario::{
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

/// Runs `scenarios` in order with one agent, printing each as it completes, and writes the
/// report to `out_dir`. Returns the runs and where the files went.
pub fn run(
    scenarios: &[Scenario],
    timing: Timing,
    out_dir: &Path,
    agent_args: &[String],
) -> anyhow::Result<(Vec<ScenarioRun>, Outputs)> {
    let stop = interrupt_flag()?;
    println!(
        "Culprit lab: {} scenario(s), {:.0} s reference + {:.0} s injected each, {} req/s \
         (the service on CPU {}, the agent and the load on CPU {})",
        scenarios.len(),
        timing.reference.as_secs_f64(),
        timing.fault.as_secs_f64(),
        timing.rate_per_s,
        SERVICE_CPU,
        HARNESS_CPU
    );
    let mut lab = Lab::start(stop, agent_args)?;
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
    lab.stop()?;
    let outputs = write_outputs(&runs, out_dir)?;
    println!("\n{}", present::accuracy_markdown(&runs));
    println!(
        "report: {}\nresults: {}\naccuracy table: {}",
        outputs.html.display(),
        outputs.results_json.display(),
        outputs.accuracy_md.display()
    );
    Ok((runs, outputs))
}

fn write_outputs(runs: &[ScenarioRun], out_dir: &Path) -> anyhow::Result<Outputs> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let outputs = Outputs {
        html: out_dir.join("report.html"),
        results_json: out_dir.join("results.json"),
        accuracy_md: out_dir.join("accuracy.md"),
    };
    std::fs::write(&outputs.html, html_report::render(runs)?)?;
    std::fs::write(&outputs.results_json, serde_json::to_vec_pretty(runs)?)?;
    std::fs::write(&outputs.accuracy_md, present::accuracy_markdown(runs))?;
    Ok(outputs)
}
