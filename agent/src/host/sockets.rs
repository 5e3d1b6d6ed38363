//! The TCP socket tables of /proc, per network namespace: which process holds a socket, which
//! endpoints a process has. A process in another namespace (a pod) has its sockets in that
//! namespace's table, read through one of its processes (`/proc/<pid>/net/tcp`).

use std::{
    collections::{HashMap, HashSet},
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use super::procfs;

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
/// Text that is not hex (even where its length in bytes fits) is no address.
pub(crate) fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(addr, 16).ok()?.to_le_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The sockets of a network namespace: the agent's own (`None`) or that of process `pid`.
fn table_of(pid: Option<u32>) -> Vec<ProcSocket> {
    let dir = pid.map_or_else(|| "/proc/net".to_string(), |p| format!("/proc/{p}/net"));
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|t| fs::read_to_string(format!("{dir}/{t}")).ok())
        .flat_map(|t| parse_proc_net_tcp(&t))
        .collect()
}

/// The socket inodes process `pid` holds.
pub(crate) fn socket_inodes_of(pid: u32) -> HashSet<u64> {
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
}

/// The first of `pids` holding socket `inode`.
fn holder_of(inode: u64, pids: impl Iterator<Item = u32>) -> Option<u32> {
    if inode == 0 {
        return None;
    }
    let wanted = format!("socket:[{inode}]");
    pids.into_iter().find(|pid| {
        fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten()
                .any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == wanted.as_str()))
        })
    })
}

/// The node's processes by network namespace inode.
fn pids_by_netns() -> HashMap<u32, Vec<u32>> {
    let mut out: HashMap<u32, Vec<u32>> = HashMap::new();
    for pid in procfs::all_pids() {
        if let Some(ns) = procfs::netns_inode(&pid.to_string()) {
            out.entry(ns).or_default().push(pid);
        }
    }
    out
}

/// The process holding the TCP socket `local -> remote` in the agent's network namespace, found
/// through /proc: the fallback when the kernel side never saw the socket used.
pub(crate) fn socket_owner(local: SocketAddr, remote: SocketAddr) -> Option<u32> {
    let inode = table_of(None)
        .into_iter()
        .find(|s| same_endpoint(s.local, local) && same_endpoint(s.remote, remote))?
        .inode;
    holder_of(inode, procfs::all_pids())
}

/// The process listening at `local` (a SYN-ACK's source: the listener owns the half-open
/// connection, which has no socket inode of its own), in the agent's network namespace.
pub(crate) fn listener_owner(local: SocketAddr) -> Option<u32> {
    let local = canonical(local);
    let inode = table_of(None)
        .into_iter()
        .find(|s| {
            let at = canonical(s.local);
            s.remote.port() == 0
                && s.remote.ip().is_unspecified()
                && at.port() == local.port()
                && (at.ip() == local.ip() || at.ip().is_unspecified())
        })?
        .inode;
    holder_of(inode, procfs::all_pids())
}

/// The process that opened the connection the agent accepted with ends `peer` (the opener's)
/// and `local` (the agent's), through /proc: in the agent's network namespace, else in the
/// namespace whose table has a socket at `peer` (pod addresses are unique on a node; loopback
/// never crosses namespaces). The opener's remote end is not compared outside the agent's
/// namespace: behind a DNAT it is the address dialled, not the agent's. A full scan of /proc:
/// the fallback for connections opened before the agent's probes were attached.
pub(crate) fn connection_opener(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    if let Some(pid) = socket_owner(peer, local) {
        return Some(pid);
    }
    if canonical(peer).ip().is_loopback() {
        return None;
    }
    let own = procfs::netns_inode("self");
    pids_by_netns()
        .into_iter()
        .filter(|(ns, _)| Some(*ns) != own)
        .find_map(|(_, pids)| {
            let inode = table_of(pids.first().copied())
                .into_iter()
                .find(|s| same_endpoint(s.local, peer))?
                .inode;
            holder_of(inode, pids.into_iter())
        })
}

/// The local endpoints of the TCP sockets process `pid` holds.
pub(crate) fn tcp_endpoints_of(pid: u32) -> Vec<SocketAddr> {
    tcp_endpoints_of_all(&[pid]).pop().unwrap_or_default()
}

/// The local endpoints of the TCP sockets of each process in `pids`, in order. Each namespace's
/// table is read once for all of its processes: each read walks the kernel's established hash.
pub(crate) fn tcp_endpoints_of_all(pids: &[u32]) -> Vec<Vec<SocketAddr>> {
    let inodes: Vec<HashSet<u64>> = pids.iter().map(|&pid| socket_inodes_of(pid)).collect();
    let mut out = vec![Vec::new(); pids.len()];
    let mut by_netns: HashMap<Option<u32>, Vec<usize>> = HashMap::new();
    for (i, &pid) in pids.iter().enumerate() {
        if !inodes[i].is_empty() {
            by_netns
                .entry(procfs::netns_inode(&pid.to_string()))
                .or_default()
                .push(i);
        }
    }
    for (_, members) in by_netns {
        for s in table_of(Some(pids[members[0]])) {
            for &i in &members {
                if inodes[i].contains(&s.inode) {
                    out[i].push(canonical(s.local));
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
    fn non_ascii_addresses_are_no_addresses() {
        // 32 bytes, but a word boundary falls inside the two-byte `é`.
        let addr = format!("{}é{}:1F90", "0".repeat(7), "0".repeat(23));
        assert_eq!(addr.split_once(':').unwrap().0.len(), 32);
        assert_eq!(parse_hex_addr(&addr), None);
        let line = format!("h\n 0: {addr} {addr} 01 0 0 0 0 0 1\n");
        assert!(parse_proc_net_tcp(&line).is_empty());
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
    fn finds_the_opener_of_a_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(local).unwrap();
        let (_server_side, peer) = listener.accept().unwrap();
        assert_eq!(connection_opener(peer, local), Some(std::process::id()));
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(connection_opener(nobody, local), None);
    }

    #[test]
    fn finds_the_listener_behind_a_half_open_connection() {
        let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let at: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert_eq!(listener_owner(at), Some(std::process::id()));
        let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{port}").parse().unwrap();
        assert_eq!(listener_owner(mapped), Some(std::process::id()));
        drop(listener);
        assert_eq!(listener_owner(at), None);
    }
}
