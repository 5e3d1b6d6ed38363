//! `cargo xtask …`: the project's own commands. Each bootstraps what it needs first.

mod commands;
mod cycles;
mod deny;
mod fuzz;
mod modgraph;
#[cfg(test)]
mod modgraph_tests;
mod setup;
mod shell;
mod structure;
mod vm_guest;
mod vm_kernels;
mod vm_test;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install everything building and testing needs (idempotent; needs root).
    Setup,
    /// Build the agent (with its eBPF programs) and the lab.
    Build,
    /// Build, then run the agent as root: `cargo xtask run -- agent --interval 1`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Formatting, structure, dependency and supply-chain checks, lints, unit tests, the
    /// privileged end-to-end tests (the host), then the kernel matrix's guests (6.1, 6.12, 6.18).
    Test,
    /// No cycle between the library crates' modules, no .rs file over 500 lines.
    CheckStructure,
    /// No unused dependency: cargo machete on the members, and no [workspace.dependencies]
    /// entry that no member inherits.
    CheckDeps,
    /// Supply chain: cargo deny with deny.toml, advisories (from the snapshot vendored in
    /// supply-chain/advisory-db), licenses, bans, sources.
    Deny {
        /// First renew the advisory snapshot from this git repository of the RustSec
        /// advisory-db (a clone or a bare mirror; its HEAD), for the crates in Cargo.lock.
        #[arg(long, value_name = "ADVISORY_DB_GIT_DIR")]
        refresh: Option<std::path::PathBuf>,
    },
    /// Every lab scenario next to the agent: what it finds per request, an HTML report
    /// (target/culprit-lab/report.html) and the accuracy table.
    Demo,
    /// One lab scenario for longer: `cargo xtask lab cpu-contention --fault-seconds 120`.
    Lab {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// The agent's container image (Containerfile) with podman, docker or buildah.
    Image {
        /// Image tag.
        tag: Option<String>,
    },
    /// Benchmarks: per-hook kernel cost next to bpftrace, OTLP throughput next to rotel.
    Bench,
    /// The kernel matrix: Debian's 6.1, 6.12 and 6.18 under QEMU with pure cgroup v2, and the
    /// host; `culprit check`, readiness and the e2e test behind each signal in each.
    VmTest {
        /// 6.1, 6.12, 6.18, host or all (repeatable; default all).
        #[arg(long = "kernel")]
        kernels: Vec<String>,
        /// Boot with KVM (stock kernels hang under some hosts' KVM; the default is TCG).
        #[arg(long)]
        kvm: bool,
    },
    /// The fuzz targets in fuzz/ (cargo-fuzz on nightly), one after the other, each for a
    /// bounded time from its seed corpus; fails on a crash and names its artifact.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = fuzz::DEFAULT_SECONDS)]
        seconds: u64,
        /// Unoptimized, without AddressSanitizer: quicker to build, slower to run.
        #[arg(long)]
        dev: bool,
        /// Targets to run (default: all of fuzz/fuzz_targets).
        targets: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Build => commands::build(),
        Command::Run { args } => commands::run(&args),
        // The host's column is the e2e suite `commands::test` has just run on it (a superset
        // of the matrix's rows): the matrix adds the kernels under QEMU.
        Command::Test => commands::test().and_then(|()| {
            vm_test::run(&vm_test::VmTestOptions {
                kernels: vm_kernels::KERNELS
                    .iter()
                    .map(|k| k.label.to_string())
                    .collect(),
                kvm: false,
            })
        }),
        Command::CheckStructure => structure::check_structure(),
        Command::CheckDeps => structure::check_deps(),
        Command::Deny { refresh: None } => deny::check(),
        Command::Deny {
            refresh: Some(source),
        } => deny::refresh(&source),
        Command::Demo => commands::demo(),
        Command::Lab { args } => commands::lab(&args),
        Command::Bench => commands::bench(),
        Command::VmTest { kernels, kvm } => vm_test::run(&vm_test::VmTestOptions { kernels, kvm }),
        Command::Image { tag } => commands::image(tag.as_deref()),
        Command::Fuzz {
            seconds,
            dev,
            targets,
        } => fuzz::run(&fuzz::FuzzOptions {
            seconds,
            dev,
            targets,
        }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nxtask failed: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
