//! The container image (`cargo xtask image`, `FROM scratch`, a static agent) as the DaemonSet
//! runs it. No container can run on these machines (runtimes' `setrlimit` is denied), so the
//! image is mounted (`buildah mount`) and its agent run from its own root filesystem (`chroot`),
//! with the host's /proc and /sys bound in as the DaemonSet's hostPID and hostPath mounts give
//! them: it must load and attach every probe and report.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use culprit_tests::require_root;

/// `cargo xtask image`'s default tag.
const IMAGE: &str = "culprit:dev";

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A working container of the image, mounted, with the host's /proc and /sys bound into it;
/// all of it undone on drop.
struct MountedImage {
    container: String,
    root: PathBuf,
    binds: Vec<PathBuf>,
}

impl MountedImage {
    fn new() -> anyhow::Result<Self> {
        let name = format!("culprit-image-test-{}", std::process::id());
        run(Command::new("buildah").args(["from", "--name", &name, IMAGE])).with_context(
            || format!("no image {IMAGE}: build it with `cargo xtask image` (CI does, in `cargo xtask test`)"),
        )?;
        let mut mounted = MountedImage {
            container: name,
            root: PathBuf::new(),
            binds: Vec::new(),
        };
        mounted.root =
            PathBuf::from(run(Command::new("buildah").args(["mount", &mounted.container]))?.trim());
        for dir in ["proc", "sys"] {
            let target = mounted.root.join(dir);
            std::fs::create_dir_all(&target)?;
            run(Command::new("mount")
                .args(["--rbind", &format!("/{dir}")])
                .arg(&target))?;
            // Unmounting later must not reach back into the host's own mounts.
            run(Command::new("mount").arg("--make-rslave").arg(&target))?;
            mounted.binds.push(target);
        }
        Ok(mounted)
    }

    /// The image's agent, run from the image's root.
    fn culprit(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("chroot");
        cmd.arg(&self.root).arg("/usr/local/bin/culprit").args(args);
        cmd
    }
}

impl Drop for MountedImage {
    fn drop(&mut self) {
        for bind in self.binds.iter().rev() {
            let _ = Command::new("umount").arg("-R").arg(bind).status();
        }
        let _ = Command::new("buildah")
            .args(["umount", &self.container])
            .status();
        let _ = Command::new("buildah")
            .args(["rm", &self.container])
            .status();
    }
}

#[test]
fn the_images_agent_runs_from_its_own_root_and_attaches_its_probes() -> anyhow::Result<()> {
    require_root()?;
    let image = MountedImage::new()?;
    let root: &Path = &image.root;
    // Nothing but the agent and its directories: no shell, no libc.
    assert!(root.join("usr/local/bin/culprit").exists());
    assert!(!root.join("bin/sh").exists() && !root.join("lib").exists());

    let check: serde_json::Value =
        serde_json::from_str(&run(&mut image.culprit(&["check", "--json"]))?)
            .context("culprit check --json")?;
    let hooks = check["hooks"].as_array().context("hooks")?;
    let unattached: Vec<_> = hooks
        .iter()
        .filter(|h| h["attached"] != true && h["standby"] != true)
        .collect();
    assert!(
        !hooks.is_empty() && unattached.is_empty(),
        "from the image: {unattached:#?}"
    );
    assert!(
        check["signals"]
            .as_array()
            .context("signals")?
            .iter()
            .all(|s| s["ok"] == true),
        "{check:#}"
    );

    // The agent itself, briefly: it loads, reports the node's run-queue delay per cgroup and
    // stops cleanly.
    let report = run(&mut image.culprit(&[
        "agent",
        "--interval",
        "1",
        "--duration",
        "2.5",
        "--output",
        "json",
        "--no-otlp",
        "--no-api",
    ]))?;
    let first: serde_json::Value = serde_json::from_str(
        report
            .lines()
            .find(|l| l.starts_with('{'))
            .context("no JSON report from the image's agent")?,
    )?;
    assert!(
        first["cgroups"].as_array().is_some_and(|c| !c.is_empty()),
        "no run-queue rows: {first:#}"
    );
    assert_eq!(first["degraded"], serde_json::json!([]), "{first:#}");
    Ok(())
}
