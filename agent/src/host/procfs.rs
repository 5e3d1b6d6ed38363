//! What /proc says about processes and threads: every /proc read of the agent is here (cgroup
//! membership aside: `membership`; TCP socket tables: `sockets`).

use std::fs;

/// The running kernel's release (`uname -r`).
pub(crate) fn kernel_release() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
}

/// The host's name, as the kernel has it.
pub(crate) fn hostname() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether process (or thread) `pid` exists.
pub(crate) fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The pids of a process from the host's namespace inward (`NSpid:` of /proc/<pid>/status).
pub(crate) fn parse_nspid(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The pids of process `pid` from the host's namespace inward (empty if it is gone).
pub(crate) fn nspid(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| parse_nspid(&s))
        .unwrap_or_default()
}

/// Every process on the host.
pub(crate) fn all_pids() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
}

/// Thread ids of a process (empty if it is gone).
pub(crate) fn threads_of(pid: u32) -> Vec<u32> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The command name of a process or thread.
pub(crate) fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// The scheduler state letter of a thread (`R`, `S`, `D`, ...), from /proc/<tid>/stat.
pub(crate) fn run_state(tid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
    parse_stat_state(&stat)
}

/// The state follows the command name, which is in parentheses and may itself contain them.
pub(crate) fn parse_stat_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The process a thread belongs to.
pub(crate) fn tgid_of(tid: u32) -> Option<u32> {
    parse_tgid(&fs::read_to_string(format!("/proc/{tid}/status")).ok()?)
}

/// The `Tgid:` of a /proc/<tid>/status.
pub(crate) fn parse_tgid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// The inode of process `pid`'s network namespace (`/proc/<pid>/ns/net`), or of the agent's
/// own with `"self"`.
pub(crate) fn netns_inode(pid: &str) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .and_then(|m| u32::try_from(m.ino()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nspid() {
        let status = "Name:\tpython3\nTgid:\t4242\nNSpid:\t4242\t7\nPPid:\t1\n";
        assert_eq!(parse_nspid(status), vec![4242, 7]);
        assert!(parse_nspid("Name:\tx\n").is_empty());
    }

    #[test]
    fn stat_state_survives_odd_command_names() {
        assert_eq!(parse_stat_state("42 (a) b) R 1 2 3"), Some('R'));
        assert_eq!(parse_stat_state("42 (sleepy) S 1"), Some('S'));
        assert_eq!(parse_stat_state("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(threads_of(me).contains(&me));
        assert_eq!(tgid_of(me), Some(me));
        assert!(comm(me).is_some());
        assert!(threads_of(u32::MAX).is_empty());
    }
}
