//! `cargo xtask vm-test`: the kernel matrix. Each of Debian's kernels (6.1, 6.12, 6.18) boots
//! under QEMU (TCG: stock kernels hang under this machine's KVM; `--kvm` where it works) over the
//! host's root filesystem with pure cgroup v2, by virtme-ng; the host itself (6.18, hybrid
//! cgroups) is the matrix's last column. In each, one generated script runs `culprit check`, the
//! agent as the DaemonSet runs it with its readiness probe, and the privileged e2e tests behind
//! each signal; the host reads what the script left in `target/vm/run/<kernel>/` and prints the
//! matrix (also `target/vm/matrix.md`). It fails on a failed check, a node that would not be
//! Ready, or a degradation this kernel is not known for.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{
    commands, setup,
    shell::{cargo, output, root, step},
    vm_guest::{
        CHECKS, Check, EXPECTED_DEGRADED, Proof, export_image_root, file_name, guest_script,
    },
    vm_kernels::{self, KERNELS},
};

/// How much longer than on the host things take under TCG, for the tests' deadlines: a Python
/// app's start measured ~4x slower.
const TCG_SLOWDOWN: u32 = 4;
/// The tests pin their workloads to CPUs 0 and 1; the third is the agent's, as a node has room
/// for it: under TCG the agent's own work is ten times what it is here, and on the CPU of a
/// test's client it outweighed the hog the test measures (6.1: 0.58 s against 0.48 s).
const GUEST_CPUS: &str = "3";
/// Memory of each VM: the tests' Python apps and rotel run inside.
const VM_MEMORY: &str = "4G";
/// The host's deadline for a whole VM (one takes ~6 min here): three at most keep `cargo xtask
/// test` within CI's 90 minutes even when every guest hangs.
const GUEST_TIMEOUT_SECS: u64 = 900;

pub struct VmTestOptions {
    /// Kernel labels (`6.1`, `6.12`, `6.18`), `host`, or `all`.
    pub kernels: Vec<String>,
    pub kvm: bool,
}

fn run_dir(label: &str) -> PathBuf {
    root().join("target/vm/run").join(label)
}

pub fn run(opts: &VmTestOptions) -> anyhow::Result<()> {
    setup::run()?;
    let wanted = selected(&opts.kernels)?;
    commands::build()?;
    commands::image(None)?;
    export_image_root()?;
    let binaries = step(
        "privileged e2e test binaries (built, not run)",
        "see cargo's output above",
        test_binaries,
    )?;
    // Each kernel's package first (downloads, one at a time), then the guests.
    let mut guests = Vec::new();
    for label in &wanted {
        let dir = run_dir(label);
        fs::remove_dir_all(&dir).ok();
        fs::create_dir_all(&dir)?;
        let script = dir.join("guest.sh");
        let slowdown = if label == "host" || opts.kvm {
            1
        } else {
            TCG_SLOWDOWN
        };
        fs::write(&script, guest_script(&dir, &binaries, slowdown))?;
        if label == "host" {
            step(
                "matrix on the host kernel",
                "see target/vm/run/host/",
                || crate::shell::run(Command::new("sh").arg(&script).current_dir(root())),
            )?;
            continue;
        }
        let spec = KERNELS
            .iter()
            .find(|k| k.label == label)
            .expect("labels were checked");
        let kernel = step(
            &format!("kernel {label}: Debian's package, unpacked, modules installed"),
            "check that deb.debian.org is reachable (apt, curl)",
            || vm_kernels::prepare(spec),
        )?;
        guests.push((kernel, dir, script));
    }
    boot_all(&guests, opts.kvm)?;
    let columns: Vec<Column> = wanted
        .iter()
        .map(|label| Column::read(label, &run_dir(label)))
        .collect();
    let matrix = render(&columns);
    println!("\n{matrix}");
    fs::write(root().join("target/vm/matrix.md"), &matrix)?;
    let failures: Vec<String> = columns.iter().flat_map(Column::failures).collect();
    if !failures.is_empty() {
        bail!("kernel matrix:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

fn accel(kvm: bool) -> &'static str {
    if kvm { "KVM" } else { "TCG" }
}

fn selected(kernels: &[String]) -> anyhow::Result<Vec<String>> {
    let all: Vec<String> = KERNELS
        .iter()
        .map(|k| k.label.to_string())
        .chain(["host".to_string()])
        .collect();
    if kernels.is_empty() || kernels.iter().any(|k| k == "all") {
        return Ok(all);
    }
    for k in kernels {
        if !all.contains(k) {
            bail!("unknown kernel {k}: one of {}, or all", all.join(", "));
        }
    }
    Ok(kernels.to_vec())
}

/// Test target name -> executable, from cargo's build messages.
fn test_binaries() -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let out = output(cargo().args([
        "test",
        "--release",
        "-p",
        "culprit-tests",
        "--tests",
        "--no-run",
        "--message-format=json",
    ]))?;
    let mut binaries = BTreeMap::new();
    for line in out.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["profile"]["test"] == true
            && let (Some(name), Some(exe)) =
                (msg["target"]["name"].as_str(), msg["executable"].as_str())
        {
            binaries.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    for check in CHECKS {
        if let Proof::Test { test, .. } = check.proof
            && !binaries.contains_key(test)
        {
            bail!("no test binary {test} was built");
        }
    }
    Ok(binaries)
}

/// Boots the guests one after the other. Side by side (one per host CPU, each TCG guest being
/// one host thread) each ran 1.4-2x slower and its timing tests failed: a sleeper's system calls
/// took 6% of its time on CPU, a waker's delay grew past its bound.
fn boot_all(guests: &[(vm_kernels::Kernel, PathBuf, PathBuf)], kvm: bool) -> anyhow::Result<()> {
    for (kernel, dir, script) in guests {
        step(
            &format!(
                "matrix on {} ({}) under QEMU ({})",
                kernel.release,
                kernel.package,
                accel(kvm)
            ),
            &format!("the console is in {}", dir.join("console.log").display()),
            || boot(&kernel.vmlinuz, dir, script, kvm),
        )?;
        print_rows(dir);
    }
    Ok(())
}

/// Each test row's outcome and time, as the guest left them: what CI's log keeps of a guest.
fn print_rows(dir: &Path) {
    let text = |name: String| fs::read_to_string(dir.join(name)).unwrap_or_default();
    for check in CHECKS {
        if !matches!(check.proof, Proof::Test { .. }) {
            continue;
        }
        let file = file_name(check.name);
        let outcome = match text(format!("{file}.rc")).trim() {
            "0" => "ok",
            "" => "not run",
            _ => "FAILED",
        };
        println!(
            "    {}: {outcome} in {} s",
            check.name,
            text(format!("{file}.secs")).trim()
        );
        if outcome == "FAILED" {
            // CI keeps only this output, not the guest's files: the failure's own words.
            for line in log_tail(&text(format!("{file}.log")), FAILED_LOG_LINES) {
                println!("      | {line}");
            }
        }
    }
}

/// How much of a failed row's log the host prints.
const FAILED_LOG_LINES: usize = 60;

/// The last `lines` lines of a log.
fn log_tail(log: &str, lines: usize) -> Vec<&str> {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].to_vec()
}

/// Boots `vmlinuz` with the host's root filesystem (read-only, `out` writable) and runs
/// `script` as root inside; the console goes to `out/console.log`.
fn boot(vmlinuz: &Path, out: &Path, script: &Path, kvm: bool) -> anyhow::Result<()> {
    let console = fs::File::create(out.join("console.log"))?;
    let mut cmd = Command::new("timeout");
    cmd.arg(GUEST_TIMEOUT_SECS.to_string())
        .arg(setup::venv_dir().join("bin/vng"))
        .arg("--run")
        .arg(vmlinuz)
        .args([
            "--force-9p",
            "--verbose",
            "--memory",
            VM_MEMORY,
            "--cpus",
            GUEST_CPUS,
        ])
        .arg("--rwdir")
        .arg(out)
        .arg("--exec")
        .arg(format!("sh {}", script.display()))
        .env(
            "PATH",
            format!(
                "{}:{}",
                setup::venv_dir().join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .current_dir(root())
        .stdout(console.try_clone()?)
        .stderr(console);
    if !kvm {
        // One emulation thread for all vCPUs: under multi-threaded TCG, 6.12 oopsed on an int3
        // left by cross-CPU text patching (a jump label flipped while nftables rules loaded).
        cmd.args(["--disable-kvm", "--qemu-opts=-accel tcg,thread=single"]);
    }
    let status = cmd.status().context("starting vng (virtme-ng)")?;
    if !out.join("finished").exists() {
        bail!("the VM stopped before its script finished ({status})");
    }
    Ok(())
}

/// What one kernel's run left behind.
struct Column {
    label: String,
    release: String,
    cgroups: String,
    check: Option<serde_json::Value>,
    check_error: Option<String>,
    ready: bool,
    passed: BTreeMap<&'static str, Option<bool>>,
    /// `culprit check --json` of the image's agent, or why there is none.
    image: Result<serde_json::Value, String>,
}

/// Probes a `culprit check --json` found attached.
fn attached(check: Option<&serde_json::Value>) -> usize {
    check
        .and_then(|c| c["hooks"].as_array())
        .map_or(0, |h| h.iter().filter(|h| h["attached"] == true).count())
}

impl Column {
    fn read(label: &str, dir: &Path) -> Column {
        let text = |name: &str| fs::read_to_string(dir.join(name)).unwrap_or_default();
        let rc = |name: &str| text(&format!("{name}.rc")).trim().parse::<i32>().ok();
        let check = serde_json::from_str::<serde_json::Value>(&text("check.json")).ok();
        let cgroups = match text("cgroup-mounts") {
            m if m.contains(" - cgroup ") => "hybrid".to_string(),
            m if m.contains(" - cgroup2 ") => "pure v2".to_string(),
            _ => "none".to_string(),
        };
        let passed = CHECKS
            .iter()
            .filter(|c| matches!(c.proof, Proof::Test { .. }))
            .map(|c| (c.name, rc(&file_name(c.name)).map(|rc| rc == 0)))
            .collect();
        let image = serde_json::from_str::<serde_json::Value>(&text("image.json")).ok();
        Column {
            label: label.to_string(),
            release: text("release").trim().to_string(),
            cgroups,
            check_error: match (&check, rc("check")) {
                (None, _) => Some(format!("culprit check gave no JSON: {}", text("check.log"))),
                (Some(_), Some(1)) => Some("culprit check: the agent cannot run".to_string()),
                _ => None,
            },
            check,
            image: match (image, rc("image")) {
                (Some(_), Some(1)) | (None, _) => Err(format!(
                    "the image's agent failed: {}",
                    text("image.log").trim()
                )),
                (Some(json), _) => Ok(json),
            },
            ready: rc("ready") == Some(0),
            passed,
        }
    }

    /// `(ok, reason)` of a signal in `culprit check`.
    fn signal(&self, name: &str) -> Option<(bool, Option<String>)> {
        let signals = self.check.as_ref()?["signals"].as_array()?;
        let s = signals.iter().find(|s| s["signal"] == name)?;
        Some((s["ok"].as_bool()?, s["reason"].as_str().map(str::to_string)))
    }

    fn cell(&self, check: &Check) -> String {
        match check.proof {
            Proof::Preflight => {
                return match &self.check_error {
                    Some(err) => format!("FAILED: {err}"),
                    None => format!(
                        "verified ({} hooks attached)",
                        attached(self.check.as_ref())
                    ),
                };
            }
            Proof::Image => {
                return match &self.image {
                    Err(err) => format!("FAILED: {err}"),
                    Ok(json) => {
                        let (image, host) = (attached(Some(json)), attached(self.check.as_ref()));
                        if image == host && image > 0 {
                            format!("verified ({image} hooks attached)")
                        } else {
                            format!("FAILED: {image} hooks attached, the host's agent {host}")
                        }
                    }
                };
            }
            Proof::Test { .. } => {}
        }
        let degraded = check
            .signal
            .and_then(|s| self.signal(s))
            .and_then(|(ok, reason)| (!ok).then(|| reason.unwrap_or_default()));
        match (self.passed.get(check.name).copied().flatten(), degraded) {
            (Some(true), None) => "verified".to_string(),
            (Some(true), Some(why)) => format!("verified, degraded: {why}"),
            (Some(false), _) => format!(
                "FAILED (target/vm/run/{}/{}.log)",
                self.label,
                file_name(check.name)
            ),
            (None, _) => "FAILED: did not run".to_string(),
        }
    }

    fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(err) = &self.check_error {
            out.push(format!("{}: {err}", self.label));
        }
        if !self.ready {
            out.push(format!(
                "{}: the agent never became Ready (target/vm/run/{}/agent.log)",
                self.label, self.label
            ));
        }
        for check in CHECKS {
            let cell = self.cell(check);
            if cell.starts_with("FAILED") {
                out.push(format!("{}: {}: {cell}", self.label, check.name));
            }
        }
        let signals = self
            .check
            .as_ref()
            .and_then(|c| c["signals"].as_array().cloned())
            .unwrap_or_default();
        for s in signals.iter().filter(|s| s["ok"] == false) {
            let name = s["signal"].as_str().unwrap_or_default();
            let expected = EXPECTED_DEGRADED
                .iter()
                .any(|(k, sig, _)| *k == self.label && *sig == name);
            if !expected {
                out.push(format!(
                    "{}: {name} degraded, which this kernel is not known for: {}",
                    self.label,
                    s["reason"].as_str().unwrap_or_default()
                ));
            }
        }
        out
    }
}

fn render(columns: &[Column]) -> String {
    let mut s = String::from("| check | what it proves |");
    for c in columns {
        let _ = write!(s, " {} ({}, {}) |", c.label, c.release, c.cgroups);
    }
    s.push_str("\n|---|---|");
    for _ in columns {
        s.push_str("---|");
    }
    s.push('\n');
    for check in CHECKS {
        let _ = write!(s, "| {} | {} |", check.name, check.proves);
        for c in columns {
            let _ = write!(s, " {} |", c.cell(check));
        }
        s.push('\n');
    }
    s.push_str("| Ready | the DaemonSet's readiness probe passes with the agent running |");
    for c in columns {
        s.push_str(if c.ready { " yes |" } else { " NO |" });
    }
    s.push_str("\n\nKnown degradations:\n");
    for (kernel, signal, why) in EXPECTED_DEGRADED {
        let _ = writeln!(s, "- {kernel}, {signal}: {why}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::log_tail;

    #[test]
    fn a_log_tail_is_its_last_lines_or_all_of_a_short_log() {
        assert_eq!(log_tail("a\nb\nc\n", 2), ["b", "c"]);
        assert_eq!(log_tail("a\nb", 5), ["a", "b"]);
        assert!(log_tail("", 3).is_empty());
    }
}
