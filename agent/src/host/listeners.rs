//! A process's listening TCP sockets and how full their accept queues are, and its network
//! namespace's count of connections its listeners refused (`ListenOverflows`: the accept queue
//! was full when the handshake completed; `ListenDrops`: every drop at a listener, overflows
//! included). A saturated service shows here before any span does: its clients wait in `connect`
//! for a SYN retransmitted a second later.

use std::{fs, net::SocketAddr};

use super::sockets::{canonical, parse_hex_addr, socket_inodes_of};

/// One listening socket: its address and the connections waiting to be accepted. (Its backlog,
/// the most the queue takes, is not in /proc: the sock_diag netlink interface, `ss -lt`, has it.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listener {
    pub local: SocketAddr,
    pub queued: u32,
    pub inode: u64,
}

/// `TCP_LISTEN` in /proc/net/tcp's `st` column.
const LISTEN_STATE: &str = "0A";

/// The listening sockets of a /proc/net/tcp{,6} table: for them the `rx_queue` column holds the
/// accept queue's length.
pub(crate) fn parse_listeners(text: &str) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if *f.get(3)? != LISTEN_STATE {
                return None;
            }
            let (_, rx) = f.get(4)?.split_once(':')?;
            Some(Listener {
                local: canonical(parse_hex_addr(f.get(1)?)?),
                queued: u32::from_str_radix(rx, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// `(ListenOverflows, ListenDrops)` from a /proc/net/netstat: the `TcpExt:` header line names
/// the columns of the `TcpExt:` line after it.
pub(crate) fn parse_listen_drops(netstat: &str) -> Option<(u64, u64)> {
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let get = |name: &str| -> Option<u64> {
        let at = names.iter().position(|n| *n == name)?;
        values.get(at)?.parse().ok()
    };
    Some((get("ListenOverflows")?, get("ListenDrops")?))
}

/// The listening sockets process `pid` holds, read in its network namespace.
pub(crate) fn listeners_of(pid: u32) -> Vec<Listener> {
    let held = socket_inodes_of(pid);
    if held.is_empty() {
        return Vec::new();
    }
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|t| fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok())
        .flat_map(|t| parse_listeners(&t))
        .filter(|l| held.contains(&l.inode))
        .collect()
}

/// The listen drop counters of process `pid`'s network namespace.
pub(crate) fn listen_drops_of(pid: u32) -> Option<(u64, u64)> {
    parse_listen_drops(&fs::read_to_string(format!("/proc/{pid}/net/netstat")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_carry_their_queue_and_backlog() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
";
        let l = parse_listeners(table);
        assert_eq!(
            l,
            [Listener {
                local: "127.0.0.1:8080".parse().unwrap(),
                queued: 3,
                inode: 4242
            }]
        );
    }

    #[test]
    fn listen_drops_are_read_by_column_name() {
        let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPBacklogDrop
TcpExt: 0 17 19 0
IpExt: InNoRoutes
IpExt: 0
";
        assert_eq!(parse_listen_drops(netstat), Some((17, 19)));
        assert_eq!(parse_listen_drops("TcpExt: a\n"), None);
        assert_eq!(parse_listen_drops(""), None);
    }
}
