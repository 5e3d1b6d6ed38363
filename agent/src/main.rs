//! `culprit`: the node agent and its command-line tools.

use clap::Parser as _;
use culprit::{agent, cli};

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let result = match cli.command {
        cli::Command::Agent(opts) => agent::run(opts),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            log::error!("{err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
