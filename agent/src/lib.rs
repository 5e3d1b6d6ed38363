//! The Culprit agent. Data flows one way through its folders:
//!
//! ```text
//! host ─► kernel ─► signals ─┐
//!                            ├─► join ─► export ─► report ─► live ─► tools
//!                     otlp ──┘
//! ```
//!
//! `host` reads /proc and cgroupfs; `kernel` loads the eBPF programs and reads their maps and
//! rings; `signals` decode what the kernel streamed into per-signal state and answer window
//! queries; `otlp` receives spans; `join` names each span's cause from a read-only view of the
//! signals; `export` sends everything on; `report` prints and exports the agent's own figures;
//! `live` keeps the recent past for the local API, read by `tools` (`culprit top`, `explain`,
//! `status`). `daemon` wires the stages together; `cause` is the vocabulary every stage shares.
//!
//! The public items below are the facade the lab and the tests use; everything else is private
//! to the crate, so that the compiler reports what nothing uses.

#![warn(unreachable_pub)]

mod allocator;
pub mod cause;
mod cli;
mod config_file;
mod daemon;
mod export;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod host;
mod join;
mod kernel;
pub mod live;
pub mod otlp;
mod printable;
mod report;
mod signals;
pub mod tools;

pub use host::{cgroups::find_cgroup2_mount, clock};

/// What the agent outputs (reports, spans, health), as the lab and the tests read it back.
pub mod model {
    pub use crate::{
        export::stats::ExportCounts,
        join::{Attempt, Attribution, JoinCounts, Parts, SpanLine},
        kernel::probes::{HookHealth, Signal, SignalHealth},
        otlp::ingress::IngressCounts,
        report::{OtlpCounts, Report, prometheus::metric_names},
        signals::{
            CgroupRunq, ConnectionRow, ListenerRow, NeighbourRow, OomKill, RetransmitRow,
            ThreadRow, ThrottleEpisode, ThrottleRow, runqueue::WaitStats,
        },
    };
}

/// The `culprit` command: the agent and the tools, from the process's arguments.
pub fn main() -> std::process::ExitCode {
    use clap::Parser as _;

    allocator::configure();
    let args = match config_file::expand(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(err) => {
            eprintln!("culprit: {err:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let cli = cli::Cli::parse_from(args);
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let result = match cli.command {
        cli::Command::Agent(opts) => daemon::run(*opts).map(|()| std::process::ExitCode::SUCCESS),
        cli::Command::Top {
            api,
            once,
            refresh,
            window,
        } => tools::top::run(
            &api.endpoint(),
            &tools::top::TopOptions {
                once,
                refresh,
                window_s: window,
            },
        )
        .map(|()| std::process::ExitCode::SUCCESS),
        cli::Command::Report {
            api,
            since,
            from,
            to,
            k6,
            out,
        } => tools::load_report::window::from_flags(
            since,
            from,
            to,
            host::clock::realtime_ns() / 1_000_000,
        )
        .map_err(anyhow::Error::msg)
        .and_then(|window| {
            tools::load_report::run(
                &api.endpoint(),
                &tools::load_report::ReportOpts {
                    window,
                    client_results: k6,
                    out,
                },
            )
        })
        .map(|()| std::process::ExitCode::SUCCESS),
        cli::Command::Explain { api, id, json } => tools::explain::run(&api.endpoint(), &id, json)
            .map(|()| std::process::ExitCode::SUCCESS),
        cli::Command::Check { agent, json } => tools::check::run(&agent, json),
        cli::Command::Status {
            api,
            json,
            liveness,
        } => tools::status::run(&api.endpoint(), json, liveness),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // The tools' "no agent" and "permission" errors are the whole message.
            if let Some(u) = err.downcast_ref::<live::client::Unreachable>() {
                eprintln!("culprit: {u}");
            } else {
                log::error!("{err:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
