//! build, run, test and demo.

use std::process::Command;

use crate::{
    deny, fuzz, setup,
    shell::{all_ok, cargo, is_root, root, run as run_cmd, step},
    structure,
};

/// The packages whose binaries the agent, the demo and the tests run.
const BIN_PACKAGES: &[&str] = &["-p", "culprit", "-p", "culprit-lab"];
/// Packages with unit tests (pure logic, no privileges needed).
const UNIT_TEST_PACKAGES: &[&str] = &[
    "-p",
    "culprit-common",
    "-p",
    "culprit",
    "-p",
    "culprit-lab",
    "-p",
    "xtask",
];

pub fn build() -> anyhow::Result<()> {
    step(
        "build the agent, its eBPF programs and the lab (release)",
        "run `cargo xtask setup` (nightly rust-src and bpf-linker are needed for the eBPF side)",
        || run_cmd(cargo().args(["build", "--release"]).args(BIN_PACKAGES)),
    )
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    build()?;
    let agent = root().join("target/release/culprit");
    let mut cmd = if is_root() {
        Command::new(&agent)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("-E").arg(&agent);
        sudo
    };
    run_cmd(cmd.args(args))
}

pub fn demo() -> anyhow::Result<()> {
    setup::run()?;
    build()?;
    step(
        "demo: every lab scenario next to the agent, per-request causes, HTML report",
        "the demo needs root and 2 CPUs (it loads eBPF programs, creates cgroups and nftables rules)",
        || {
            run_cmd(
                Command::new(root().join("target/release/culprit-lab"))
                    .current_dir(root())
                    .args(["demo", "--out", "target/culprit-lab"]),
            )
        },
    )
}

/// The static build the image carries: no libc to match on the node, no base image to pull.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// The tag `cargo xtask image` gives by default, which the image test mounts.
pub const DEFAULT_IMAGE_TAG: &str = "culprit:dev";

/// `cargo xtask image [TAG]`: the agent built for musl, staged with the directories it writes
/// to in `target/image/root`, and `Containerfile` (`FROM scratch`) built over it with the first
/// builder found (buildah, podman, docker).
pub fn image(tag: Option<&str>) -> anyhow::Result<()> {
    setup::run()?;
    let tag = tag.unwrap_or(DEFAULT_IMAGE_TAG);
    step(
        &format!("the agent, static ({MUSL_TARGET})"),
        "rustup target add x86_64-unknown-linux-musl; apt-get install musl-tools",
        || {
            run_cmd(
                Command::new("rustup")
                    .args(["target", "add", MUSL_TARGET])
                    .current_dir(root()),
            )?;
            run_cmd(
                cargo()
                    .args([
                        "build",
                        "--release",
                        "-p",
                        "culprit",
                        "--target",
                        MUSL_TARGET,
                    ])
                    // ring and mimalloc compile C: musl's compiler wrapper links them statically.
                    .env("CC_x86_64_unknown_linux_musl", "musl-gcc"),
            )
        },
    )?;
    let context = root().join("target/image");
    let staged = context.join("root");
    std::fs::remove_dir_all(&staged).ok();
    for dir in [
        "usr/local/bin",
        "tmp",
        "run/culprit",
        "run/culprit-otlp",
        "etc/culprit",
    ] {
        std::fs::create_dir_all(staged.join(dir))?;
    }
    std::fs::copy(
        root()
            .join("target")
            .join(MUSL_TARGET)
            .join("release/culprit"),
        staged.join("usr/local/bin/culprit"),
    )?;
    let builder = ["buildah", "podman", "docker"]
        .into_iter()
        .find(|b| which::which(b).is_ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no container builder here (buildah, podman or docker): `cargo xtask setup` \
                 installs buildah"
            )
        })?;
    let mut cmd = Command::new(builder);
    if builder == "buildah" {
        // No container can run here, and none needs to: the image has no RUN step.
        cmd.args(["bud", "--isolation", "chroot"]);
    } else {
        cmd.arg("build");
    }
    step(
        &format!("container image {tag} with {builder}"),
        "see the builder's output above",
        || {
            run_cmd(
                cmd.arg("-f")
                    .arg(root().join("Containerfile"))
                    .args(["-t", tag])
                    .arg(&context),
            )
        },
    )
}

/// `cargo xtask lab <scenario> [--fault-seconds N]`: one scenario, for longer.
pub fn lab(args: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    build()?;
    step(
        "lab: one scenario next to the agent",
        "scenarios: baseline, cpu-contention, cpu-throttling, packet-loss, mixed",
        || {
            run_cmd(
                Command::new(root().join("target/release/culprit-lab"))
                    .current_dir(root())
                    .arg("lab")
                    .args(args),
            )
        },
    )
}

pub fn bench() -> anyhow::Result<()> {
    setup::run()?;
    build()?;
    let out_dir = root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    // Each bench: what it measures, what it needs, its arguments, and its Markdown file.
    let benches: [(&str, &str, &[&str], &str); 5] = [
        (
            "kernel cost per hook under a context-switch storm (bpf_stats), next to bpftrace",
            "needs root and bpftrace (`cargo xtask setup` installs it)",
            &["bench-hooks", "--storm-seconds", "10"],
            "hooks.md",
        ),
        (
            "kernel cost per TCP segment under a loopback TCP storm (bpf_stats), next to an empty program",
            "needs root and bpftrace (`cargo xtask setup` installs it)",
            &["bench-hooks", "--storm", "tcp", "--storm-seconds", "10"],
            "tcp_hooks.md",
        ),
        (
            "OTLP pipeline: spans/s per core next to rotel, agent RSS at 10k spans/s",
            "needs the Python virtualenv with rotel (`cargo xtask setup`)",
            &["bench-pipeline", "--seconds", "10"],
            "pipeline.md",
        ),
        (
            "overhead: the lab service agent off vs on, the agent's CPU and memory under a storm, export delay",
            "needs root, 2 CPUs and the virtualenv's rotel (`cargo xtask setup`)",
            &["bench-overhead", "--seconds", "10"],
            "overhead.md",
        ),
        (
            "scale: 200 span senders of 50 threads, 1000 cgroups, a paced switch storm, 10k spans/s, next to one sender",
            "needs root, cgroup v2 and the virtualenv's rotel (`cargo xtask setup`); starts ~1000 processes",
            &["bench-scale", "--seconds", "20"],
            "scale.md",
        ),
    ];
    for (what, needs, args, file) in benches {
        step(what, needs, || {
            run_cmd(
                Command::new(root().join("target/release/culprit-lab"))
                    .args(args)
                    .arg("--markdown")
                    .arg(out_dir.join(file)),
            )
        })?;
    }
    println!(
        "results: target/bench/hooks.md, tcp_hooks.md, pipeline.md, overhead.md and scale.md (copy the tables into BENCHMARKS.md)"
    );
    Ok(())
}

pub fn test() -> anyhow::Result<()> {
    setup::run()?;
    step("cargo fmt --check", "run `cargo fmt --all`", || {
        run_cmd(cargo().args(["fmt", "--all", "--", "--check"]))?;
        // The fuzz targets are a workspace of their own.
        run_cmd(cargo().args([
            "fmt",
            "--all",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--",
            "--check",
        ]))
    })?;
    // These read sources, manifests and Cargo.lock only, so they run before anything is compiled.
    all_ok(vec![
        structure::check_deps(),
        structure::check_structure(),
        deny::check(),
    ])?;
    step(
        "clippy -D warnings (userspace)",
        "fix the lints clippy printed",
        || {
            // With the fuzz targets' entry points (`culprit::fuzzing`): a check build shares
            // nothing with the builds below, so the feature costs nothing here.
            run_cmd(cargo().args([
                "clippy",
                "--release",
                "--all-targets",
                "--features",
                "culprit/fuzzing",
                "--",
                "-D",
                "warnings",
            ]))
        },
    )?;
    step(
        "clippy -D warnings (eBPF programs, bpf target)",
        "fix the lints clippy printed",
        clippy_ebpf,
    )?;
    step("unit tests", "fix the failing tests", || {
        run_cmd(cargo().args(["test", "--release"]).args(UNIT_TEST_PACKAGES))
    })?;
    fuzz::short_pass()?;
    build()?;
    // The image test (tests/tests/image.rs) mounts the image this builds.
    image(None)?;
    step(
        "privileged end-to-end tests (real probes, injected causes)",
        "run as root on Linux >= 5.8 with BTF; see the test output above",
        || {
            run_cmd(cargo().args([
                "test",
                "--release",
                "-p",
                "culprit-tests",
                "--tests",
                "--",
                "--test-threads=1",
            ]))
        },
    )
}

fn clippy_ebpf() -> anyhow::Result<()> {
    run_cmd(
        Command::new("rustup")
            .current_dir(root().join("agent-ebpf"))
            .args([
                "run",
                "nightly",
                "cargo",
                "clippy",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--target-dir",
            ])
            .arg(root().join("target/ebpf-clippy"))
            .args(["--", "-D", "warnings"])
            // The outer cargo's settings are for the host toolchain.
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CARGO"),
    )
}
