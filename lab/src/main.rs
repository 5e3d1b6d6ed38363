//! `culprit-lab`: processes that inject a known cause, for tests, the demo and benchmarks.
//!
//! Each generator can place itself in a cgroup and pin itself to a CPU before it starts, so the
//! cause is in place for its whole life.

mod placement;
mod workloads;

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "culprit-lab", version, about)]
struct Cli {
    /// Move this process into the cgroup at this path (its `cgroup.procs` is written).
    #[arg(long, global = true)]
    cgroup: Vec<PathBuf>,
    /// Pin this process to this CPU.
    #[arg(long, global = true)]
    cpu: Option<usize>,
    /// Stop after this many seconds.
    #[arg(long, global = true, default_value = "10")]
    seconds: f64,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// Burn CPU without pause (a noisy neighbour).
    Hog {
        /// Threads burning CPU.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Sleep and wake up in a loop, doing a little work each time: every wakeup is one
    /// run-queue wait to measure.
    Wakeups {
        /// Sleep between two wakeups.
        #[arg(long, default_value_t = 1000)]
        period_us: u64,
        /// Work after each wakeup.
        #[arg(long, default_value_t = 50)]
        work_us: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    for cgroup in &cli.cgroup {
        placement::join_cgroup(cgroup)?;
    }
    if let Some(cpu) = cli.cpu {
        placement::pin_to_cpu(cpu)?;
    }
    let run_for = Duration::from_secs_f64(cli.seconds);
    match cli.workload {
        Workload::Hog { threads } => workloads::hog(threads, run_for),
        Workload::Wakeups { period_us, work_us } => workloads::wakeups(
            Duration::from_micros(period_us),
            Duration::from_micros(work_us),
            run_for,
        ),
    }
    Ok(())
}
