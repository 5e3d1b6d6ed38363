//! Command-line interface.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "culprit",
    version,
    about = "Which kernel signal made each slow request slow"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent: load the eBPF probes and report what they observe.
    Agent(AgentOpts),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A per-cgroup table for people.
    Table,
    /// One JSON object per report, one per line, for scripts.
    Json,
}

#[derive(Debug, Parser)]
pub struct AgentOpts {
    /// Seconds between two reports.
    #[arg(long, default_value = "2", value_parser = parse_seconds)]
    pub interval: Duration,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_parser = parse_seconds)]
    pub duration: Option<Duration>,
    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Only report cgroups whose path starts with this prefix (e.g. `/kubepods.slice`).
    #[arg(long)]
    pub cgroup_prefix: Option<String>,
    /// Rows in the table (the cgroups with most run-queue time first).
    #[arg(long, default_value_t = 15)]
    pub top: usize,
    /// Kernel BTF used to resolve struct offsets.
    #[arg(long, default_value = "/sys/kernel/btf/vmlinux")]
    pub btf: PathBuf,
    /// Cgroup v2 mount point (default: found in /proc/self/mountinfo).
    #[arg(long)]
    pub cgroup_root: Option<PathBuf>,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("`{s}` must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_accept_fractions_and_reject_garbage() {
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_seconds("2"), Ok(Duration::from_secs(2)));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("abc").is_err());
        assert!(parse_seconds("inf").is_err());
    }
}
