//! What /proc says about processes, threads and sockets: every /proc read of the agent is here
//! (cgroup membership aside: `membership`).

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

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
fn parse_stat_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The process a thread belongs to.
pub(crate) fn tgid_of(tid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// A TCP socket from /proc/net/tcp{,6}.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub inode: u64,
}

/// Parses /proc/net/tcp or /proc/net/tcp6.
pub(crate) fn parse_proc_net_tcp(text: &str) -> Vec<ProcSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(ProcSocket {
                local: parse_hex_addr(f.get(1)?)?,
                remote: parse_hex_addr(f.get(2)?)?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// `0100007F:1F90` (IPv4) or 32 hex digits (IPv6), in the kernel's native 32-bit word order.
fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(addr, 16).ok()?.to_le_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok()?;
                chunk.copy_from_slice(&word.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The process holding the TCP socket `local -> remote`, found through /proc: the fallback when
/// the kernel side never saw the socket used.
pub(crate) fn socket_owner(local: SocketAddr, remote: SocketAddr) -> Option<u32> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .flat_map(|t| parse_proc_net_tcp(&t))
        .find(|s| same_endpoint(s.local, local) && same_endpoint(s.remote, remote))?
        .inode;
    if inode == 0 {
        return None;
    }
    let wanted = format!("socket:[{inode}]");
    fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|proc_entry| {
            let pid: u32 = proc_entry.file_name().to_str()?.parse().ok()?;
            let fds = fs::read_dir(proc_entry.path().join("fd")).ok()?;
            fds.flatten()
                .any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == wanted.as_str()))
                .then_some(pid)
        })
}

/// The local endpoints of the TCP sockets process `pid` holds.
pub(crate) fn tcp_endpoints_of(pid: u32) -> Vec<SocketAddr> {
    tcp_endpoints_of_all(&[pid]).pop().unwrap_or_default()
}

/// The local endpoints of the TCP sockets of each process in `pids`, in order. The node's socket
/// tables are read once for all: each read walks the kernel's whole established hash.
pub(crate) fn tcp_endpoints_of_all(pids: &[u32]) -> Vec<Vec<SocketAddr>> {
    let inodes: Vec<std::collections::HashSet<u64>> = pids
        .iter()
        .map(|pid| {
            fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|fd| {
                    let target = fs::read_link(fd.path()).ok()?;
                    let t = target.to_str()?;
                    t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
                })
                .collect()
        })
        .collect();
    let mut out = vec![Vec::new(); pids.len()];
    if inodes.iter().all(std::collections::HashSet::is_empty) {
        return out;
    }
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for s in parse_proc_net_tcp(&text) {
            for (eps, inodes) in out.iter_mut().zip(&inodes) {
                if inodes.contains(&s.inode) {
                    eps.push(canonical(s.local));
                }
            }
        }
    }
    out
}

/// IPv4-mapped IPv6 endpoints as plain IPv4, the way retransmit records print them.
pub(crate) fn canonical(s: SocketAddr) -> SocketAddr {
    match s.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(s, |v4| SocketAddr::new(IpAddr::V4(v4), s.port())),
        IpAddr::V4(_) => s,
    }
}

/// IPv4 sockets show up in tcp6 as v4-mapped addresses.
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    canonical(a) == canonical(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tcp_v4_and_v6() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 20 4 30 10 -1
";
        let s = parse_proc_net_tcp(v4);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s[0].remote, "127.0.0.1:50000".parse().unwrap());
        assert_eq!(s[0].inode, 12345);
        let v6 = "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:1F90 0000000000000000FFFF00000100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 777 1
";
        let s = parse_proc_net_tcp(v6);
        assert_eq!(s[0].local, "[::1]:8080".parse().unwrap());
        assert!(same_endpoint(
            s[0].remote,
            "127.0.0.1:50000".parse().unwrap()
        ));
        assert_eq!(s[0].inode, 777);
        assert!(parse_proc_net_tcp("header only\n").is_empty());
        assert!(parse_proc_net_tcp("h\n 0: zz:zz yy:yy\n").is_empty());
    }

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
    fn finds_this_processs_tcp_endpoints() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        assert!(tcp_endpoints_of(std::process::id()).contains(&local));
        assert!(tcp_endpoints_of(u32::MAX).is_empty());
        let both = tcp_endpoints_of_all(&[u32::MAX, std::process::id()]);
        assert!(both[0].is_empty() && both[1].contains(&local));
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
