//! A lab run interrupted with Ctrl-C in the middle of a fault leaves nothing behind: no
//! nftables table, no cgroup, no process.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use culprit_lab::process::{binaries::bin_path, reaped::Reaped};
use culprit_tests::require_root;

fn nft_tables() -> String {
    Command::new("nft")
        .args(["list", "tables"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    // The fields after the parenthesised command name: state, ppid, ...
                    let rest = &s[s.rfind(')')? + 2..];
                    rest.split(' ').nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn cgroups_named(prefix: &str) -> Vec<String> {
    [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup",
    ]
    .iter()
    .filter_map(|root| std::fs::read_dir(root).ok())
    .flat_map(|d| d.flatten())
    .filter_map(|e| e.file_name().to_str().map(str::to_string))
    .filter(|n| n.starts_with(prefix))
    .collect()
}

#[test]
fn ctrl_c_during_packet_loss_removes_rules_cgroups_and_processes() -> anyhow::Result<()> {
    require_root()?;
    let out = std::env::temp_dir().join(format!("culprit-lab-cleanup-{}", std::process::id()));
    let mut cmd = Command::new(bin_path("culprit-lab")?);
    cmd.args(["lab", "packet-loss", "--fault-seconds", "60", "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut lab = Reaped::spawn("culprit-lab lab", &mut cmd)?;
    let pid = lab.pid();
    let table = format!("culprit_loss_{pid}_");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !nft_tables().contains(&table) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the packet loss was never injected"
        );
        anyhow::ensure!(lab.child.try_wait()?.is_none(), "the lab exited early");
        std::thread::sleep(Duration::from_millis(200));
    }
    let own = format!("-{pid}-");
    let made: Vec<String> = cgroups_named("culprit-lab-")
        .into_iter()
        .filter(|n| n.contains(&own))
        .collect();
    assert!(made.len() >= 2, "the lab's cgroups: {made:?}");
    let children = children_of(pid);
    assert!(
        children.len() >= 3,
        "agent, service and downstream: {children:?}"
    );

    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = lab.child.try_wait()? {
            break status;
        }
        anyhow::ensure!(Instant::now() < deadline, "the lab ignored Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        !status.success(),
        "an interrupted run must not report success"
    );
    assert!(
        !nft_tables().contains(&table),
        "the nftables table outlived the run"
    );
    let left: Vec<String> = cgroups_named("culprit-lab-")
        .into_iter()
        .filter(|n| n.contains(&own))
        .collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
    let survivors: Vec<u32> = children.into_iter().filter(|&c| alive(c)).collect();
    assert!(survivors.is_empty(), "processes left behind: {survivors:?}");
    Ok(())
}
