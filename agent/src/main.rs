//! `culprit`: the node agent and its command-line tools.

use clap::Parser as _;
use culprit::{
    agent, cli,
    live::client::Unreachable,
    tools::{explain, status, top},
};

/// Why mimalloc, and how it is set up: `culprit::allocator`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    culprit::allocator::configure();
    let args = match culprit::config_file::expand(std::env::args_os().collect()) {
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
        cli::Command::Agent(opts) => agent::run(*opts).map(|()| std::process::ExitCode::SUCCESS),
        cli::Command::Top {
            api,
            once,
            refresh,
            window,
        } => top::run(
            &api.endpoint(),
            &top::TopOptions {
                once,
                refresh,
                window_s: window,
            },
        )
        .map(|()| std::process::ExitCode::SUCCESS),
        cli::Command::Explain { api, id, json } => {
            explain::run(&api.endpoint(), &id, json).map(|()| std::process::ExitCode::SUCCESS)
        }
        cli::Command::Status {
            api,
            json,
            liveness,
        } => status::run(&api.endpoint(), json, liveness),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // The tools' "no agent" and "permission" errors are the whole message.
            if let Some(u) = err.downcast_ref::<Unreachable>() {
                eprintln!("culprit: {u}");
            } else {
                log::error!("{err:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
