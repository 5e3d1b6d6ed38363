//! `culprit-lab`: processes that inject a known cause, and the demo that shows Culprit find it.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use culprit_lab::{bench_hooks, demo, placement, workloads};

#[derive(Debug, Parser)]
#[command(name = "culprit-lab", version, about)]
struct Cli {
    /// Move this process into the cgroup at this path (repeat for v1 hierarchies).
    #[arg(long, global = true)]
    cgroup: Vec<PathBuf>,
    /// Pin this process to this CPU.
    #[arg(long, global = true)]
    cpu: Option<usize>,
    /// Stop after this many seconds.
    #[arg(long, global = true, default_value = "10")]
    seconds: f64,
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Debug, Subcommand)]
enum LabCommand {
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
    /// Sleep a fixed time, a number of times (off-CPU time to measure).
    Sleeper {
        #[arg(long, default_value_t = 50)]
        sleep_ms: u64,
        #[arg(long, default_value_t = 10)]
        count: u32,
    },
    /// A TCP server on 127.0.0.1 answering fixed-size requests.
    TcpServer {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 512)]
        size: usize,
    },
    /// A TCP client sending fixed-size requests to 127.0.0.1 in a loop.
    TcpClient {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 512)]
        size: usize,
    },
    /// A context-switch storm: pairs of threads bouncing a byte over pipes.
    Pingpong {
        #[arg(long, default_value_t = 2)]
        pairs: usize,
    },
    /// Kernel cost of the agent's hooks vs the classic bpftrace run-queue logic, from the
    /// kernel's bpf_stats, under the same context-switch storm.
    BenchHooks {
        /// Seconds of storm per measured tool.
        #[arg(long, default_value_t = 10.0)]
        storm_seconds: f64,
        /// Write the results as Markdown here too.
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
    /// A Rust app instrumented with opentelemetry-otlp (gRPC), sending request spans.
    RustOtelApp {
        /// The OTLP/gRPC endpoint, e.g. http://127.0.0.1:4317.
        #[arg(long)]
        endpoint: String,
        #[arg(long, default_value_t = 5)]
        count: usize,
        /// Work per request: busy-loop milliseconds.
        #[arg(long, default_value_t = 5.0)]
        work_ms: f64,
        /// Write the ids and names of the spans created here (JSON).
        #[arg(long)]
        record: PathBuf,
    },
    /// Run a command in place of this process, after joining the cgroups and pinning.
    Exec {
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Spans per second per core through the agent next to rotel, and the agent's memory.
    BenchPipeline {
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
    /// Run the agent next to an injected CPU contention and show what it sees.
    Demo {
        /// Reports (2 s each) per phase.
        #[arg(long, default_value_t = 3)]
        reports_per_phase: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        LabCommand::Demo { reports_per_phase } => return demo::run(*reports_per_phase),
        LabCommand::BenchHooks {
            storm_seconds,
            markdown,
        } => return bench_hooks::run(*storm_seconds, markdown.as_deref()),
        LabCommand::BenchPipeline { seconds, markdown } => {
            return culprit_lab::bench_pipeline::run(*seconds, markdown.as_deref());
        }
        _ => {}
    }
    for cgroup in &cli.cgroup {
        placement::join_cgroup(cgroup)?;
    }
    if let Some(cpu) = cli.cpu {
        placement::pin_to_cpu(cpu)?;
    }
    let run_for = Duration::from_secs_f64(cli.seconds);
    match cli.command {
        LabCommand::Hog { threads } => workloads::hog(threads, run_for),
        LabCommand::Wakeups { period_us, work_us } => workloads::wakeups(
            Duration::from_micros(period_us),
            Duration::from_micros(work_us),
            run_for,
        ),
        LabCommand::Sleeper { sleep_ms, count } => {
            workloads::sleeper(Duration::from_millis(sleep_ms), count, run_for)
        }
        LabCommand::TcpServer { port, size } => workloads::tcp_server(port, size, run_for)?,
        LabCommand::TcpClient { port, size } => workloads::tcp_client(port, size, run_for)?,
        LabCommand::Pingpong { pairs } => workloads::pingpong(pairs, run_for)?,
        LabCommand::RustOtelApp {
            endpoint,
            count,
            work_ms,
            record,
        } => culprit_lab::rust_otel_app::run(
            &endpoint,
            count,
            Duration::from_secs_f64(work_ms / 1e3),
            &record,
        )?,
        LabCommand::Exec { command } => {
            use std::os::unix::process::CommandExt as _;
            let err = std::process::Command::new(&command[0])
                .args(&command[1..])
                .exec();
            anyhow::bail!("exec {}: {err}", command[0]);
        }
        LabCommand::Demo { .. }
        | LabCommand::BenchHooks { .. }
        | LabCommand::BenchPipeline { .. } => {
            unreachable!("handled above")
        }
    }
    Ok(())
}
