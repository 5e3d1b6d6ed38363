//! `culprit-lab`: processes that inject a known cause, and the demo that shows Culprit find it.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use culprit_lab::{
    bench,
    faults::{netns, placement},
    run::demo,
    scenario::plan::{Scenario, Timing},
    service::{
        async_server, server, server_args,
        thread_context::{self, ContextRecord},
    },
    workloads::{self, rust_otel_app},
};

#[derive(Debug, Parser)]
#[command(name = "culprit-lab", version, about)]
struct Cli {
    /// Move this process into the cgroup at this path (repeat for v1 hierarchies).
    #[arg(long, global = true)]
    cgroup: Vec<PathBuf>,
    /// Pin this process to this CPU.
    #[arg(long, global = true)]
    cpu: Option<usize>,
    /// Run in this network namespace (a name from `ip netns add`), after joining the cgroups.
    #[arg(long, global = true)]
    netns: Option<String>,
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
    /// Keep the disk busy: threads writing 1 MiB at a time with O_DIRECT | O_DSYNC.
    DiskWriter {
        /// Where the writers' files go (on the device to load; not tmpfs).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 4)]
        threads: usize,
    },
    /// Write through the page cache as fast as the disk takes it: dirty pages for the memory
    /// cgroup it runs in.
    Dirtier {
        /// Where its file goes (on a disk; not tmpfs).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Threads that sleep for one reason: in `futex` for a held lock, in I/O wait (`O_DIRECT`
    /// reads of `--device`), or in major faults (pages of `--device` read through a mapping).
    Waits {
        #[arg(long, value_enum)]
        kind: workloads::waits::WaitKind,
        /// A block device (or file) to read, for `io` and `fault`.
        #[arg(long)]
        device: Option<PathBuf>,
    },
    /// Drop a file's first pages from the page cache every 2 ms: what reclaim does to clean
    /// file pages under memory pressure.
    Evictor {
        #[arg(long)]
        file: PathBuf,
    },
    /// Fault in and keep this much anonymous memory (killed first if its cgroup's limit is
    /// lower).
    MemoryHog {
        #[arg(long)]
        mib: u64,
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
        /// Publish an OpenTelemetry thread context (OTEP 4947) all along, so that the agent
        /// reads it at every switch (the context read's cost, in `bench-hooks`).
        #[arg(long)]
        thread_context: bool,
    },
    /// Sleep a fixed time, a number of times (off-CPU time to measure).
    Sleeper {
        #[arg(long, default_value_t = 50)]
        sleep_ms: u64,
        #[arg(long, default_value_t = 10)]
        count: u32,
        /// Write each sleep's measured wall time (ns, one per line) here.
        #[arg(long)]
        record: Option<PathBuf>,
    },
    /// A TCP server answering fixed-size requests.
    TcpServer {
        #[arg(long)]
        port: u16,
        /// The address to listen on (a node address, for clients in a pod).
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        #[arg(long, default_value_t = 512)]
        size: usize,
        /// Busy time before each answer, in microseconds.
        #[arg(long, default_value_t = 0)]
        work_us: u64,
    },
    /// A TCP client sending fixed-size requests to 127.0.0.1 in a loop.
    TcpClient {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 512)]
        size: usize,
    },
    /// A TCP segment storm: pairs of threads exchanging requests over loopback connections.
    TcpPingpong {
        #[arg(long, default_value_t = 2)]
        pairs: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// A service at scale: threads each serving one request per period, the spans exported
    /// over OTLP/gRPC every 200 ms without a thread or process attribute (a stock SDK).
    SpanSender {
        #[arg(long, default_value_t = 50)]
        threads: usize,
        /// Requests (spans) per second over all the threads.
        #[arg(long, default_value_t = 50.0)]
        spans_per_s: f64,
        /// OTLP/gRPC endpoint, e.g. http://127.0.0.1:4317.
        #[arg(long)]
        endpoint: String,
        #[arg(long, default_value = "scale")]
        service: String,
    },
    /// A context-switch storm: pairs of threads bouncing a byte over pipes.
    Pingpong {
        #[arg(long, default_value_t = 2)]
        pairs: usize,
        /// Round trips per second per pair, in bursts each millisecond (0: unpaced).
        #[arg(long, default_value_t = 0)]
        round_trips_per_s: u64,
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
        /// Run the agent with this `--episode-threshold-ms` (default: the agent's own).
        #[arg(long)]
        episode_threshold_ms: Option<f64>,
        /// The context-switch storm.
        #[arg(long, value_enum, default_value = "pingpong")]
        storm: bench::hooks::Storm,
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
        /// Send the stock resource: no `process.pid`, no `culprit.thread.tid` on spans.
        #[arg(long)]
        stock: bool,
    },
    /// The lab's HTTP service (instrumented with opentelemetry-otlp): `/cpu` burns CPU,
    /// `/downstream` calls a TCP service.
    Service(server_args::ServiceArgs),
    /// The lab's async service: one thread interleaves all requests, each publishing its
    /// OpenTelemetry thread context (OTEP 4947) while it runs. `/cpu` computes in slices,
    /// `/sleep` awaits a timer.
    AsyncService {
        #[arg(long)]
        port: u16,
        /// The OTLP/gRPC endpoint, e.g. http://127.0.0.1:4317.
        #[arg(long)]
        endpoint: String,
        #[arg(long, default_value_t = 20.0)]
        cpu_work_ms: f64,
        #[arg(long, default_value_t = 0.5)]
        slice_ms: f64,
        #[arg(long, default_value_t = 50.0)]
        sleep_ms: f64,
        /// Write, at shutdown, each span's thread and the CPU time its polls took (JSON).
        #[arg(long)]
        record: Option<PathBuf>,
    },
    /// Run a command in place of this process, after joining the cgroups and pinning.
    Exec {
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// The agent's cost to the application (lab service, agent off vs on) and to the node
    /// (CPU, memory under a context-switch storm and spans), and the span export delay.
    BenchOverhead {
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
    /// OTLP/gRPC span batches (100 spans each) to a port at a fixed rate: the benches' span load,
    /// alone, for profiling the agent under it.
    SpanLoad {
        #[arg(long)]
        port: u16,
        /// Batches per second in all (0: as fast as accepted).
        #[arg(long, default_value_t = 100)]
        batches_per_s: u64,
        #[arg(long, default_value_t = 2)]
        streams: usize,
    },
    /// Spans per second per core through the agent next to rotel, and the agent's memory.
    BenchPipeline {
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
    /// The agent at scale: many span senders of many threads in their own cgroups, a paced
    /// switch storm over many more cgroups, against one sender with the same load.
    BenchScale(bench::scale::Scale),
    /// Every scenario next to a live agent (about 15 s each): what it found per request, an
    /// HTML report and the accuracy table.
    Demo {
        /// Where report.html, results.json and accuracy.md go.
        #[arg(long, default_value = "target/culprit-lab")]
        out: PathBuf,
        /// Seconds of load with nothing injected, per scenario.
        #[arg(long, default_value_t = 4.0)]
        reference_seconds: f64,
        /// Seconds of load with the fault injected, per scenario.
        #[arg(long, default_value_t = 11.0)]
        fault_seconds: f64,
        /// Seconds of load per service of the concurrency scenario (0: skip it).
        #[arg(long, default_value_t = 6)]
        concurrency_seconds: u32,
    },
    /// One scenario, for longer: baseline, cpu-contention, cpu-throttling, packet-loss, mixed.
    Lab {
        scenario: Scenario,
        #[arg(long, default_value_t = 60.0)]
        fault_seconds: f64,
        /// The agent's local API socket (for `culprit top --socket`).
        #[arg(long)]
        api_socket: Option<PathBuf>,
        #[arg(long, default_value = "target/culprit-lab")]
        out: PathBuf,
        /// Load the steady phases with k6 (`lab/k6/load.js`) instead of the lab's own load
        /// generator; `culprit report` then joins its results.
        #[arg(long, conflicts_with = "locust")]
        k6: bool,
        /// Load the steady phases with Locust (`lab/locust/locustfile.py`) instead; `culprit
        /// report` then joins its results.
        #[arg(long)]
        locust: bool,
        /// Run the service as the accept pool (its workers accept and read their own
        /// connections: a request's wait before its span is measured), loaded on `/cpu`.
        #[arg(long)]
        accept_pool: bool,
        /// Run the service in the node's network namespace, on loopback, instead of a pod's
        /// own (reached over a veth pair, as a CNI wires one).
        #[arg(long)]
        host_network: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        LabCommand::Demo {
            out,
            reference_seconds,
            fault_seconds,
            concurrency_seconds,
        } => {
            let timing = Timing {
                reference: Duration::from_secs_f64(*reference_seconds),
                fault: Duration::from_secs_f64(*fault_seconds),
                ..Timing::DEMO
            };
            let concurrency = (*concurrency_seconds > 0).then_some(*concurrency_seconds);
            let opts = demo::DemoOptions {
                concurrency_seconds: concurrency,
                ..demo::DemoOptions::default()
            };
            return demo::outcome(demo::run(&Scenario::ALL, timing, out, &opts));
        }
        LabCommand::Lab {
            scenario,
            fault_seconds,
            api_socket,
            out,
            k6,
            locust,
            accept_pool,
            host_network,
        } => {
            let agent_args: Vec<String> = api_socket
                .iter()
                .flat_map(|p| ["--api-socket".to_string(), p.display().to_string()])
                .collect();
            let timing = Timing {
                fault: Duration::from_secs_f64(*fault_seconds),
                ..Timing::DEMO
            };
            let opts = demo::DemoOptions {
                agent_args,
                concurrency_seconds: None,
                generator: (k6.then_some(demo::LoadGenerator::K6))
                    .or(locust.then_some(demo::LoadGenerator::Locust)),
                accept_pool: *accept_pool,
                host_network: *host_network,
            };
            return demo::outcome(demo::run(&[*scenario], timing, out, &opts));
        }
        LabCommand::BenchHooks {
            storm_seconds,
            markdown,
            episode_threshold_ms,
            storm,
        } => {
            return bench::hooks::run(
                *storm_seconds,
                markdown.as_deref(),
                *episode_threshold_ms,
                *storm,
            );
        }
        LabCommand::BenchOverhead { seconds, markdown } => {
            return bench::overhead::run(*seconds, markdown.as_deref());
        }
        LabCommand::BenchPipeline { seconds, markdown } => {
            return bench::pipeline::run(*seconds, markdown.as_deref());
        }
        LabCommand::BenchScale(scale) => return bench::scale::run(scale),
        LabCommand::SpanLoad {
            port,
            batches_per_s,
            streams,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            let spans = rt.block_on(bench::pipeline::load(
                *port,
                Duration::from_secs_f64(cli.seconds),
                *streams,
                *batches_per_s,
            ))?;
            println!("{spans} spans accepted");
            return Ok(());
        }
        _ => {}
    }
    for cgroup in &cli.cgroup {
        placement::join_cgroup(cgroup)?;
    }
    if let Some(cpu) = cli.cpu {
        placement::pin_to_cpu(cpu)?;
    }
    if let Some(netns) = &cli.netns {
        netns::join(netns)?;
    }
    let run_for = Duration::from_secs_f64(cli.seconds);
    match cli.command {
        LabCommand::Hog { threads } => workloads::hog(threads, run_for),
        LabCommand::DiskWriter { dir, threads } => workloads::disk_writer(&dir, threads, run_for)?,
        LabCommand::Dirtier { dir } => workloads::dirtier(&dir, run_for)?,
        LabCommand::Evictor { file } => workloads::evictor(&file, run_for)?,
        LabCommand::MemoryHog { mib } => workloads::memory_hog(mib, run_for)?,
        LabCommand::Waits { kind, device } => workloads::waits(kind, device.as_deref(), run_for)?,
        LabCommand::Wakeups {
            period_us,
            work_us,
            thread_context,
        } => {
            // Kept alive, and published, for the whole run.
            let record = thread_context.then(|| ContextRecord::fixed([7; 16], [9; 8]));
            if let Some(record) = &record {
                thread_context::attach(record);
            }
            workloads::wakeups(
                Duration::from_micros(period_us),
                Duration::from_micros(work_us),
                run_for,
            );
        }
        LabCommand::Sleeper {
            sleep_ms,
            count,
            record,
        } => workloads::sleeper(
            Duration::from_millis(sleep_ms),
            count,
            run_for,
            record.as_deref(),
        )?,
        LabCommand::TcpServer {
            port,
            host,
            size,
            work_us,
        } => workloads::tcp_server(
            (host, port).into(),
            size,
            Duration::from_micros(work_us),
            run_for,
        )?,
        LabCommand::TcpClient { port, size } => workloads::tcp_client(port, size, run_for)?,
        LabCommand::TcpPingpong { pairs, size } => workloads::tcp_pingpong(pairs, size, run_for)?,
        LabCommand::SpanSender {
            threads,
            spans_per_s,
            endpoint,
            service,
        } => workloads::span_sender(threads, spans_per_s, &endpoint, &service, run_for)?,
        LabCommand::Pingpong {
            pairs,
            round_trips_per_s,
        } => workloads::pingpong(pairs, round_trips_per_s, run_for)?,
        LabCommand::RustOtelApp {
            endpoint,
            count,
            work_ms,
            record,
            stock,
        } => rust_otel_app::run(
            &endpoint,
            count,
            Duration::from_secs_f64(work_ms / 1e3),
            &record,
            rust_otel_app::SelfDescription {
                pid: !stock,
                thread: !stock,
            },
        )?,
        LabCommand::Service(args) => server::run(&args.into_config())?,
        LabCommand::AsyncService {
            port,
            endpoint,
            cpu_work_ms,
            slice_ms,
            sleep_ms,
            record,
        } => async_server::run(&async_server::AsyncServiceConfig {
            port,
            otlp_endpoint: endpoint,
            cpu_work: Duration::from_secs_f64(cpu_work_ms / 1e3),
            slice: Duration::from_secs_f64(slice_ms / 1e3),
            sleep: Duration::from_secs_f64(sleep_ms / 1e3),
            record,
        })?,
        LabCommand::Exec { command } => {
            use std::os::unix::process::CommandExt as _;
            let err = std::process::Command::new(&command[0])
                .args(&command[1..])
                .exec();
            anyhow::bail!("exec {}: {err}", command[0]);
        }
        LabCommand::Demo { .. }
        | LabCommand::Lab { .. }
        | LabCommand::BenchHooks { .. }
        | LabCommand::BenchOverhead { .. }
        | LabCommand::BenchPipeline { .. }
        | LabCommand::BenchScale { .. }
        | LabCommand::SpanLoad { .. } => {
            unreachable!("handled above")
        }
    }
    Ok(())
}
