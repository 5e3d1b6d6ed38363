//! The live view end to end: the lab's contention scenario runs next to an agent, and an
//! incident responder's tools read that agent. `culprit top` runs in a real terminal (tmux,
//! 80x24) and must show the lab service with `cpu.contention` as its dominant cause; `status`,
//! `explain`, and the messages for "no agent" and "not root" are checked on the same agent.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use culprit_lab::process::{binaries::bin_path, reaped::Reaped};
use culprit_tests::require_root;

/// Kills the tmux session when dropped.
struct TmuxSession(String);

impl Drop for TmuxSession {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

fn culprit(args: &[&str], socket: &Path) -> anyhow::Result<Output> {
    Ok(Command::new(bin_path("culprit")?)
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()?)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} did not happen in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

#[test]
fn top_status_and_explain_read_a_live_agent_during_contention() -> anyhow::Result<()> {
    require_root()?;
    let dir = std::env::temp_dir().join(format!("culprit-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("agent.sock");
    let mut cmd = Command::new(bin_path("culprit-lab")?);
    cmd.args(["lab", "cpu-contention", "--fault-seconds", "90", "--out"])
        .arg(&dir)
        .arg("--api-socket")
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut lab = Reaped::spawn("culprit-lab lab", &mut cmd)?;
    wait_for("the agent's socket", Duration::from_secs(60), || {
        socket.exists()
    })?;

    // status: every signal runs here.
    let status = culprit(&["status"], &socket)?;
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(
        text(&status).contains("OK: every signal is running"),
        "{}",
        text(&status)
    );

    // top, in a real terminal.
    let session = TmuxSession(format!("culprit-top-{}", std::process::id()));
    let top = format!(
        "{} top --socket {}",
        bin_path("culprit")?.display(),
        socket.display()
    );
    let started = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session.0,
            "-x",
            "80",
            "-y",
            "24",
            &top,
        ])
        .status()?;
    anyhow::ensure!(
        started.success(),
        "tmux could not start (apt-get install tmux)"
    );
    let mut pane = String::new();
    let capture = |session: &str| {
        Command::new("tmux")
            .args(["capture-pane", "-p", "-t", session])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let found = wait_for(
        "lab-service with cpu.contention in top",
        Duration::from_secs(90),
        || {
            pane = capture(&session.0);
            pane.lines()
                .any(|l| l.contains("lab-service") && l.contains("cpu.contention"))
        },
    );
    assert!(found.is_ok(), "top never showed it; last pane:\n{pane}");
    assert!(pane.lines().count() <= 24 && pane.lines().all(|l| l.chars().count() <= 80));
    // The keys work in the real terminal too: Enter shows the slowest request's parts.
    Command::new("tmux")
        .args(["send-keys", "-t", &session.0, "Enter"])
        .status()?;
    wait_for("the decomposition in top", Duration::from_secs(10), || {
        pane = capture(&session.0);
        pane.contains("run-queue (contention)")
    })
    .map_err(|e| anyhow::anyhow!("{e}; last pane:\n{pane}"))?;
    drop(session);

    // explain, from a trace id the plain snapshot lists.
    let once = culprit(&["top", "--once"], &socket)?;
    let once_text = text(&once);
    let trace = once_text
        .lines()
        .filter(|l| l.contains("lab-service") && l.contains("trace "))
        .find_map(|l| l.rsplit("trace ").next())
        .map(str::trim)
        .ok_or_else(|| anyhow::anyhow!("no trace id in:\n{once_text}"))?
        .to_string();
    let explained = culprit(&["explain", &trace], &socket)?;
    assert!(explained.status.success(), "{}", text(&explained));
    let e = text(&explained);
    assert!(
        e.contains(&trace) && e.contains("run-queue (contention)") && e.contains('['),
        "{e}"
    );
    let json = culprit(&["explain", &trace, "--json"], &socket)?;
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    assert_eq!(parsed[0]["trace_id"], trace.as_str());
    let unknown = culprit(&["explain", "0123456789abcdef"], &socket)?;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown).contains("no request with id"),
        "{}",
        text(&unknown)
    );

    // A user without root gets told why, not a stack of errors.
    let status_as_nobody = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(copy_for_anyone(&dir)?)
        .args(["status", "--socket"])
        .arg(&socket)
        .output()?;
    assert_eq!(status_as_nobody.status.code(), Some(1));
    assert!(
        text(&status_as_nobody).contains("permission denied")
            && text(&status_as_nobody).contains("root"),
        "{}",
        text(&status_as_nobody)
    );
    // And with no agent there, the tools say so.
    let none = culprit(&["status"], &dir.join("nobody-here.sock"))?;
    assert_eq!(none.status.code(), Some(1));
    assert!(
        text(&none).contains("no agent is running"),
        "{}",
        text(&none)
    );

    unsafe { libc::kill(lab.pid() as i32, libc::SIGINT) };
    let _ = lab.child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The `culprit` binary where an unprivileged user can run it.
fn copy_for_anyone(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let to = dir.join("culprit-for-anyone");
    std::fs::copy(bin_path("culprit")?, &to)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))?;
    Ok(to)
}
