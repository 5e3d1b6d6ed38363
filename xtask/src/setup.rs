//! `cargo xtask setup`: bring a fresh Debian machine (as root) to the point where the agent
//! builds and every test runs. Each step checks first, so a second run takes seconds.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};

use crate::shell::{self, is_root, output, root, step};

/// The eBPF crate links with this exact bpf-linker, built against rustc's own LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";
/// `cargo xtask check-deps` runs this cargo-machete: it reads manifests and sources without
/// building anything (about a second); its install takes under 2 minutes on one core.
const CARGO_MACHETE_VERSION: &str = "0.9.2";
/// `cargo xtask deny` runs this cargo-deny (its advisory-database layout is relied on in
/// xtask/src/deny.rs); it builds with the pinned stable toolchain, its install takes about 4
/// minutes on two cores.
const CARGO_DENY_VERSION: &str = "0.20.2";
/// `cargo xtask fuzz` and the short pass of `cargo xtask test` run this cargo-fuzz (installed with
/// the pinned stable toolchain; it runs the fuzz targets' builds on nightly), in about a minute.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Debian packages the tests and benchmarks use: nftables injects packet loss, iproute2 makes
/// network namespaces, bpftrace is the classic tool the hook benchmark compares against,
/// Chromium (with a font) renders the lab's HTML report the way a user would see it, tmux
/// gives `culprit top` a real terminal in its end-to-end test, nginx (with openssl for its
/// certificates) is the TLS-terminating, token-checking front of a "managed backend". The
/// kernel matrix (`cargo xtask vm-test`) boots Debian's kernels with QEMU (virtme-ng, in the
/// virtualenv, wants busybox for its initramfs and kmod's depmod for the kernels' modules) and
/// fetches with curl and xz; the image is a musl build (musl-tools) assembled by buildah;
/// Prometheus (with promtool) scrapes the agent's `/metrics` in its end-to-end test.
const APT_PACKAGES: &[&str] = &[
    "tmux",
    "nftables",
    "iproute2",
    "bpftrace",
    "chromium",
    "fonts-dejavu-core",
    "nginx",
    "openssl",
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "curl",
    "xz-utils",
    "buildah",
    "musl-tools",
    "prometheus",
];

pub fn run() -> anyhow::Result<()> {
    if !is_root() {
        bail!("setup installs packages and mounts filesystems: run it as root");
    }
    step(
        "nightly toolchain (builds the eBPF programs)",
        "rustup toolchain install nightly --profile minimal",
        ensure_nightly,
    )?;
    step(
        "rust-src for nightly (eBPF programs build core from source)",
        "rustup component add rust-src --toolchain nightly, or unpack ../shared/toolchain/rust-src-*.tar.xz into the nightly sysroot",
        ensure_rust_src,
    )?;
    step(
        &format!("bpf-linker {BPF_LINKER_VERSION} against rustc's LLVM"),
        "check that crates.io is reachable and that the nightly sysroot has libLLVM.so.22*",
        ensure_bpf_linker,
    )?;
    ensure_cargo_machete_step()?;
    ensure_cargo_deny_step()?;
    ensure_cargo_fuzz_step()?;
    step(
        "tracefs and bpffs mounted",
        "mount -t tracefs nodev /sys/kernel/tracing; mount -t bpf bpf /sys/fs/bpf",
        ensure_mounts,
    )?;
    step(
        &format!("Debian packages: {}", APT_PACKAGES.join(", ")),
        &format!(
            "apt-get update && apt-get install -y {}",
            APT_PACKAGES.join(" ")
        ),
        ensure_apt_packages,
    )?;
    step(
        "Python virtualenv with the OpenTelemetry SDK, OTLP exporters and rotel (target/venv)",
        "check that PyPI is reachable; remove target/venv to start over",
        ensure_python_venv,
    )?;
    Ok(())
}

fn ensure_nightly() -> anyhow::Result<()> {
    let list = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if list.lines().any(|l| l.starts_with("nightly")) {
        println!("    already installed");
        return Ok(());
    }
    shell::run(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
    ]))
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    Ok(PathBuf::from(sysroot.trim()))
}

fn ensure_rust_src() -> anyhow::Result<()> {
    let sysroot = nightly_sysroot()?;
    let rustlib = sysroot.join("lib/rustlib");
    let has_src = || rustlib.join("src/rust/library/core/Cargo.toml").exists();
    if has_src() {
        println!("    already installed");
        return Ok(());
    }
    let online = Command::new("timeout")
        .args([
            "300",
            "rustup",
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if online && has_src() {
        return Ok(());
    }
    println!(
        "    rustup could not install rust-src; using the offline copy in ../shared/toolchain"
    );
    let tarball = offline_rust_src()?;
    shell::run(
        Command::new("tar")
            .arg("-xJf")
            .arg(&tarball)
            .arg("-C")
            .arg(&rustlib),
    )?;
    let components = rustlib.join("components");
    let listed = fs::read_to_string(&components).unwrap_or_default();
    if !listed.lines().any(|l| l == "rust-src") {
        fs::write(&components, format!("{listed}rust-src\n"))?;
    }
    if !has_src() {
        bail!("{} did not contain rust-src", tarball.display());
    }
    Ok(())
}

fn offline_rust_src() -> anyhow::Result<PathBuf> {
    let dir = root().join("../shared/toolchain");
    fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("rust-src-nightly") && n.ends_with(".tar.xz"))
        })
        .ok_or_else(|| anyhow!("no rust-src-nightly-*.tar.xz in {}", dir.display()))
}

/// Where bpf-linker finds libLLVM.so: the binary keeps an rpath to it, so it must last.
fn llvm_prefix() -> PathBuf {
    home().join(".local/share/culprit/llvm")
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    let prefix = llvm_prefix();
    link_rustc_llvm(&prefix)?;
    let version = Command::new("bpf-linker").arg("--version").output();
    if let Ok(out) = version
        && out.status.success()
        && String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION)
    {
        println!("    already installed");
        return Ok(());
    }
    shell::run(cargo_install().env("LLVM_PREFIX", &prefix).args([
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
        "--force",
        "--no-default-features",
        "--features",
        BPF_LINKER_LLVM_FEATURE,
    ]))
}

/// bpf-linker must use the very LLVM that rustc emits bitcode for: `<prefix>/lib` holds links to
/// the nightly sysroot's copy, under the name the build looks for (`libLLVM.so`) and under its
/// soname, which the installed binary loads through its rpath.
fn link_rustc_llvm(prefix: &Path) -> anyhow::Result<()> {
    let sysroot_lib = nightly_sysroot()?.join("lib");
    let llvm = fs::read_dir(&sysroot_lib)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.22"))
        })
        .ok_or_else(|| anyhow!("no libLLVM.so.22* in {}", sysroot_lib.display()))?;
    let lib_dir = prefix.join("lib");
    fs::create_dir_all(&lib_dir)?;
    let soname = llvm.file_name().context("libLLVM path")?.to_owned();
    for name in [std::ffi::OsStr::new("libLLVM.so"), soname.as_os_str()] {
        let link = lib_dir.join(name);
        if fs::read_link(&link).ok().as_deref() != Some(llvm.as_path()) {
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(&llvm, &link)
                .with_context(|| format!("linking {} to {}", link.display(), llvm.display()))?;
        }
    }
    Ok(())
}

pub fn ensure_cargo_machete_step() -> anyhow::Result<()> {
    step(
        &format!("cargo-machete {CARGO_MACHETE_VERSION} (unused dependencies)"),
        "check that crates.io is reachable",
        || ensure_cargo_tool("cargo-machete", CARGO_MACHETE_VERSION),
    )
}

pub fn ensure_cargo_deny_step() -> anyhow::Result<()> {
    step(
        &format!("cargo-deny {CARGO_DENY_VERSION} (supply-chain check)"),
        "check that crates.io is reachable",
        || ensure_cargo_tool("cargo-deny", CARGO_DENY_VERSION),
    )
}

pub fn ensure_cargo_fuzz_step() -> anyhow::Result<()> {
    step(
        &format!("cargo-fuzz {CARGO_FUZZ_VERSION} (fuzz targets)"),
        "check that crates.io is reachable",
        || ensure_cargo_tool("cargo-fuzz", CARGO_FUZZ_VERSION),
    )
}

/// `cargo install --locked` of an exact version, unless `cargo install --list` already has it.
fn ensure_cargo_tool(name: &str, version: &str) -> anyhow::Result<()> {
    let installed = output(Command::new("cargo").args(["install", "--list"]))?;
    if installed
        .lines()
        .any(|l| l.starts_with(&format!("{name} v{version}:")))
    {
        println!("    already installed");
        return Ok(());
    }
    shell::run(cargo_install().args(["--locked", &format!("{name}@{version}")]))
}

/// `cargo install`, run from the home directory: outside the workspace, whose
/// rust-toolchain.toml is for the project, not for tools.
fn cargo_install() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(home()).arg("install");
    cmd
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .unwrap_or_else(|| "/root".into())
        .into()
}

fn ensure_mounts() -> anyhow::Result<()> {
    for (fstype, source, target) in [
        ("tracefs", "nodev", "/sys/kernel/tracing"),
        ("bpf", "bpf", "/sys/fs/bpf"),
    ] {
        let mounts = fs::read_to_string("/proc/self/mounts")?;
        if mounts.lines().any(|l| {
            l.split_whitespace().nth(1) == Some(target)
                && l.split_whitespace().nth(2) == Some(fstype)
        }) {
            println!("    {target}: already mounted");
            continue;
        }
        fs::create_dir_all(target).ok();
        shell::run(Command::new("mount").args(["-t", fstype, source, target]))?;
    }
    Ok(())
}

fn ensure_apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", pkg])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        println!("    already installed");
        return Ok(());
    }
    shell::run(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    shell::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

pub fn venv_dir() -> PathBuf {
    root().join("target/venv")
}

fn ensure_python_venv() -> anyhow::Result<()> {
    let requirements_path = root().join("tests/requirements.txt");
    let requirements = fs::read_to_string(&requirements_path)
        .with_context(|| format!("reading {}", requirements_path.display()))?;
    let venv = venv_dir();
    let stamp = venv.join(".culprit-requirements");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(requirements.as_str()) {
        println!("    already up to date");
        return Ok(());
    }
    if !venv.join("bin/python").exists() {
        shell::run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    shell::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements_path),
    )?;
    fs::write(&stamp, requirements)?;
    Ok(())
}
