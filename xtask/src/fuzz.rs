//! `cargo xtask fuzz [--seconds N] [--dev] [TARGET...]`: the cargo-fuzz targets in `fuzz/`,
//! one after the other, each for a bounded time from its seed corpus (`fuzz/corpus/<target>`,
//! read only: what a run finds goes to `fuzz/target/corpus/<target>`, which is not checked in).
//! A crash fails the run and names its artifact. `cargo xtask test` runs a short pass.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{
    setup,
    shell::{root, step},
};

/// Seconds per target of `cargo xtask fuzz` without `--seconds`.
pub const DEFAULT_SECONDS: u64 = 600;
/// Seconds per target of the short pass in `cargo xtask test`.
const SHORT_PASS_SECONDS: u64 = 5;
/// An input taking longer than this is a hang, reported as a crash.
const INPUT_TIMEOUT_S: u64 = 10;

#[derive(Debug, Clone)]
pub struct FuzzOptions {
    pub seconds: u64,
    /// Unoptimized builds without a sanitizer: far quicker to build, slower to run.
    pub dev: bool,
    /// Empty: every target.
    pub targets: Vec<String>,
}

/// What one target's run did, from libFuzzer's final statistics.
#[derive(Debug, Default)]
struct Outcome {
    target: String,
    seconds: f64,
    executions: u64,
    exec_per_s: u64,
    corpus: u64,
    crash: Option<PathBuf>,
}

fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

/// The targets: `fuzz/fuzz_targets/*.rs`, sorted.
fn all_targets() -> anyhow::Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut targets: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(str::to_string)
        })
        .collect();
    targets.sort();
    Ok(targets)
}

/// `cargo +nightly fuzz`, from the workspace root.
fn cargo_fuzz() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root())
        .args(["+nightly", "fuzz"])
        // The outer cargo's settings are for the pinned stable toolchain.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO");
    cmd
}

fn build_flags(opts: &FuzzOptions) -> Vec<&'static str> {
    if opts.dev {
        vec!["--dev", "--sanitizer", "none"]
    } else {
        Vec::new()
    }
}

pub fn run(opts: &FuzzOptions) -> anyhow::Result<()> {
    setup::ensure_cargo_fuzz_step()?;
    let targets = if opts.targets.is_empty() {
        all_targets()?
    } else {
        let known = all_targets()?;
        if let Some(unknown) = opts.targets.iter().find(|t| !known.contains(t)) {
            bail!(
                "no fuzz target `{unknown}`; the targets: {}",
                known.join(", ")
            );
        }
        opts.targets.clone()
    };
    step(
        &format!(
            "build the fuzz targets{}",
            if opts.dev { " (--dev)" } else { "" }
        ),
        "fix the build errors above (the targets build on nightly, with the `fuzzing` feature)",
        || {
            let mut cmd = cargo_fuzz();
            cmd.arg("build").args(build_flags(opts));
            if targets.len() == 1 {
                cmd.arg(&targets[0]);
            }
            crate::shell::run(&mut cmd)
        },
    )?;
    let mut outcomes = Vec::new();
    for target in &targets {
        outcomes.push(step(
            &format!("fuzz {target} for {} s", opts.seconds),
            "see the crash above: docs/fuzzing.md says how to reproduce it",
            || run_target(opts, target),
        )?);
    }
    print_table(&outcomes);
    let crashed: Vec<&Outcome> = outcomes.iter().filter(|o| o.crash.is_some()).collect();
    if crashed.is_empty() {
        return Ok(());
    }
    let mut message = String::from("fuzz targets crashed:");
    for o in crashed {
        let artifact = o.crash.as_deref().unwrap_or(Path::new("?"));
        message.push_str(&format!(
            "\n    {}: {}\n      reproduce: cargo +nightly fuzz run {}{} {}",
            o.target,
            artifact.display(),
            if opts.dev { "--dev -s none " } else { "" },
            o.target,
            artifact.display()
        ));
    }
    bail!("{message}")
}

/// One target for `opts.seconds`, its log in `fuzz/target/logs/<target>.log`.
fn run_target(opts: &FuzzOptions, target: &str) -> anyhow::Result<Outcome> {
    let fuzz = fuzz_dir();
    let scratch = fuzz.join("target/corpus").join(target);
    let seeds = fuzz.join("corpus").join(target);
    let artifacts = fuzz.join("artifacts").join(target);
    let logs = fuzz.join("target/logs");
    for dir in [&scratch, &artifacts, &logs] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log_path = logs.join(format!("{target}.log"));
    let log = fs::File::create(&log_path)?;
    let before = newest_file(&artifacts);
    let started = Instant::now();
    let status = cargo_fuzz()
        .arg("run")
        .args(build_flags(opts))
        .arg(target)
        .arg(&scratch)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={}", opts.seconds))
        .arg(format!("-timeout={INPUT_TIMEOUT_S}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .context("starting cargo fuzz run")?;
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let mut outcome = parse_stats(target, &text);
    if outcome.seconds == 0.0 {
        outcome.seconds = started.elapsed().as_secs_f64();
    }
    if !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        for line in tail.iter().rev() {
            eprintln!("    | {line}");
        }
        let after = newest_file(&artifacts);
        outcome.crash = Some(
            after
                .filter(|a| Some(a) != before.as_ref())
                .unwrap_or(log_path),
        );
    }
    println!(
        "    {} executions, {} exec/s, corpus {}{}",
        outcome.executions,
        outcome.exec_per_s,
        outcome.corpus,
        if outcome.crash.is_some() {
            ", CRASHED"
        } else {
            ""
        }
    );
    Ok(outcome)
}

fn newest_file(dir: &Path) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, p)| p)
}

/// libFuzzer's `stat::` lines, the corpus size of its last status line (`corp: N/...`) and the
/// time it fuzzed (`Done N runs in S second(s)`: without the build before it).
fn parse_stats(target: &str, log: &str) -> Outcome {
    let stat = |name: &str| {
        log.lines()
            .filter_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .filter_map(|v| v.trim().parse().ok())
            .next_back()
            .unwrap_or(0)
    };
    let corpus = log
        .lines()
        .filter_map(|l| l.split_once(" corp: ")?.1.split('/').next()?.parse().ok())
        .next_back()
        .unwrap_or(0);
    let seconds = log
        .lines()
        .filter_map(|l| {
            l.strip_prefix("Done ")?
                .split(" in ")
                .nth(1)?
                .split(' ')
                .next()
        })
        .filter_map(|s| s.parse().ok())
        .next_back()
        .unwrap_or(0.0);
    Outcome {
        target: target.to_string(),
        seconds,
        executions: stat("number_of_executed_units"),
        exec_per_s: stat("average_exec_per_sec"),
        corpus,
        ..Outcome::default()
    }
}

/// The figures as a Markdown table (docs/fuzzing.md keeps the 10-minute runs').
fn print_table(outcomes: &[Outcome]) {
    println!("\n| target | seconds | executions | exec/s | corpus | crashes |");
    println!("|---|---:|---:|---:|---:|---:|");
    for o in outcomes {
        println!(
            "| {} | {:.0} | {} | {} | {} | {} |",
            o.target,
            o.seconds,
            o.executions,
            o.exec_per_s,
            o.corpus,
            u8::from(o.crash.is_some())
        );
    }
}

/// The short pass of `cargo xtask test`: every target for a few seconds, unoptimized and
/// without a sanitizer, so that building them fits CI's time.
pub fn short_pass() -> anyhow::Result<()> {
    run(&FuzzOptions {
        seconds: SHORT_PASS_SECONDS,
        dev: true,
        targets: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statistics_are_read_from_the_log() {
        let log = "\
#2\tINITED cov: 10 ft: 11 corp: 4/300b exec/s: 0 rss: 40Mb
#5000\tDONE   cov: 90 ft: 200 corp: 37/2411b lim: 4096 exec/s: 2500 rss: 60Mb
Done 5000 runs in 2 second(s)
stat::number_of_executed_units: 5000
stat::average_exec_per_sec:     2500
stat::new_units_added:          33
";
        let o = parse_stats("t", log);
        assert_eq!((o.executions, o.exec_per_s, o.corpus), (5000, 2500, 37));
        assert_eq!(o.seconds, 2.0);
        assert_eq!(parse_stats("t", "").executions, 0);
    }

    #[test]
    fn every_target_has_seeds() {
        for target in all_targets().unwrap() {
            let seeds = fuzz_dir().join("corpus").join(&target);
            let n = fs::read_dir(&seeds).map_or(0, |d| d.count());
            assert!(n > 0, "{} has no seeds", seeds.display());
        }
    }
}
