//! Retransmit records as people read them: endpoints, owner, what the retransmit cost.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use culprit_common::tcp::{RetransmitRecord, retransmit};
use serde::{Deserialize, Serialize};

use crate::host::{procfs, sockets};

/// Linux's minimum retransmission timeout: what a timer-driven retransmit costs at least.
pub(crate) const TCP_RTO_MIN_NS: u64 = 200_000_000;
/// A send older than this did not start the segment now being retransmitted.
const MAX_SEND_AGE_NS: u64 = 120_000_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetransmitRow {
    pub mono_ns: u64,
    /// `segment` (data or SYN) or `synack`.
    pub kind: String,
    pub state: String,
    pub local: String,
    pub remote: String,
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    pub comm: Option<String>,
    /// `socket` (seen sending/receiving on it), `proc` (found through /proc) or `unknown`.
    pub owner_from: String,
    /// Estimated delay the retransmit added.
    pub cost_ns: u64,
    /// `retrans_stamp` (the kernel's record of when the stall began), `since_send` (time since
    /// the owner's last send on the socket) or `rto_min`.
    pub cost_from: String,
}

pub(crate) fn tcp_state_name(state: u32) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

const AF_INET: u16 = 2;

pub(crate) fn endpoints(rec: &RetransmitRecord) -> (SocketAddr, SocketAddr) {
    let ip = |b: &[u8; 16]| -> IpAddr {
        if rec.family == AF_INET {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(*b))
        }
    };
    (
        SocketAddr::new(ip(&rec.saddr), rec.sport),
        SocketAddr::new(ip(&rec.daddr), rec.dport),
    )
}

/// The cost estimate and where it came from: the kernel's own stall start where it is known,
/// else the time since the owner's last send on the socket, else the minimum RTO.
pub(crate) fn cost(rec: &RetransmitRecord) -> (u64, &'static str) {
    let stall_ns = u64::from(rec.stall_ms) * 1_000_000;
    if stall_ns > 0 && stall_ns < MAX_SEND_AGE_NS {
        (stall_ns, "retrans_stamp")
    } else if rec.since_send_ns > 0 && rec.since_send_ns < MAX_SEND_AGE_NS {
        (rec.since_send_ns, "since_send")
    } else {
        (TCP_RTO_MIN_NS, "rto_min")
    }
}

/// A listener's owner is looked up at most once in this long: a SYN flood retransmits SYN-ACKs
/// to a hundred thousand peers from one listener.
const LISTENER_TTL_NS: u64 = 10_000_000_000;
/// Owners cached per socket or listener; past it the cache starts over.
const MAX_CACHED_OWNERS: usize = 4096;

/// A process found through /proc, with its name.
type ProcOwner = Option<(u32, Option<String>)>;

/// Turns records into rows, resolving owners the kernel did not see through /proc (cached per
/// socket: a lossy connection retransmits many times; and per listener for SYN-ACKs, whose
/// half-open connections have no socket of their own in /proc).
#[derive(Default)]
pub(crate) struct RetransmitResolver {
    proc_owners: HashMap<u64, ProcOwner>,
    listener_owners: HashMap<SocketAddr, (u64, ProcOwner)>,
}

fn with_comm(pid: Option<u32>) -> ProcOwner {
    pid.map(|pid| (pid, procfs::comm(pid)))
}

impl RetransmitResolver {
    fn owner_through_proc(&mut self, rec: &RetransmitRecord) -> ProcOwner {
        let (local, remote) = endpoints(rec);
        if rec.kind == retransmit::SYNACK {
            if self.listener_owners.len() > MAX_CACHED_OWNERS {
                self.listener_owners.clear();
            }
            let (read_ns, owner) = self
                .listener_owners
                .entry(local)
                .or_insert_with(|| (rec.ts_ns, with_comm(sockets::listener_owner(local))));
            if rec.ts_ns.saturating_sub(*read_ns) > LISTENER_TTL_NS {
                *read_ns = rec.ts_ns;
                *owner = with_comm(sockets::listener_owner(local));
            }
            return owner.clone();
        }
        if self.proc_owners.len() > MAX_CACHED_OWNERS {
            self.proc_owners.clear();
        }
        self.proc_owners
            .entry(rec.skaddr)
            .or_insert_with(|| with_comm(sockets::socket_owner(local, remote)))
            .clone()
    }

    pub(crate) fn row(&mut self, rec: &RetransmitRecord) -> RetransmitRow {
        let (local, remote) = endpoints(rec);
        let (pid, tid, comm, owner_from) = if rec.tgid != 0 {
            (
                Some(rec.tgid),
                Some(rec.tid),
                procfs::comm(rec.tgid),
                "socket",
            )
        } else {
            match self.owner_through_proc(rec) {
                Some((pid, comm)) => (Some(pid), None, comm, "proc"),
                None => (None, None, None, "unknown"),
            }
        };
        let (cost_ns, cost_from) = cost(rec);
        RetransmitRow {
            mono_ns: rec.ts_ns,
            kind: if rec.kind == retransmit::SYNACK {
                "synack"
            } else {
                "segment"
            }
            .to_string(),
            state: tcp_state_name(rec.state).to_string(),
            local: local.to_string(),
            remote: remote.to_string(),
            pid,
            tid,
            comm,
            owner_from: owner_from.to_string(),
            cost_ns,
            cost_from: cost_from.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> RetransmitRecord {
        let mut r = RetransmitRecord {
            kind: retransmit::SEGMENT,
            state: 1,
            family: AF_INET,
            sport: 40000,
            dport: 8080,
            tgid: 42,
            tid: 43,
            since_send_ns: 210_000_000,
            ..RetransmitRecord::default()
        };
        r.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        r.daddr[..4].copy_from_slice(&[10, 1, 2, 3]);
        r
    }

    #[test]
    fn ipv4_endpoints_and_owner() {
        let mut res = RetransmitResolver::default();
        let row = res.row(&rec());
        assert_eq!(row.local, "127.0.0.1:40000");
        assert_eq!(row.remote, "10.1.2.3:8080");
        assert_eq!(
            (row.pid, row.tid, row.owner_from.as_str()),
            (Some(42), Some(43), "socket")
        );
        assert_eq!(
            (row.cost_ns, row.cost_from.as_str()),
            (210_000_000, "since_send")
        );
        assert_eq!(row.state, "ESTABLISHED");
    }

    #[test]
    fn ipv6_endpoints() {
        let mut r = rec();
        r.family = 10;
        r.saddr = Ipv6Addr::LOCALHOST.octets();
        r.daddr = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        let (l, d) = endpoints(&r);
        assert_eq!(l.to_string(), "[::1]:40000");
        assert_eq!(d.to_string(), "[2001:db8::1]:8080");
    }

    #[test]
    fn the_kernels_stall_start_wins() {
        let mut r = rec();
        r.stall_ms = 600;
        assert_eq!(cost(&r), (600_000_000, "retrans_stamp"));
    }

    #[test]
    fn unknown_send_time_falls_back_to_the_minimum_rto() {
        let mut r = rec();
        r.since_send_ns = 0;
        assert_eq!(cost(&r), (TCP_RTO_MIN_NS, "rto_min"));
        r.since_send_ns = 3_600_000_000_000;
        assert_eq!(cost(&r), (TCP_RTO_MIN_NS, "rto_min"));
    }

    #[test]
    fn a_syn_ack_is_owned_by_its_listener_looked_up_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut res = RetransmitResolver::default();
        let synack = |peer: u8, ts_ns: u64| {
            let mut r = rec();
            r.kind = retransmit::SYNACK;
            (r.tgid, r.tid, r.sport, r.ts_ns) = (0, 0, port, ts_ns);
            r.daddr[..4].copy_from_slice(&[10, 64, 0, peer]);
            r.skaddr = u64::from(peer);
            r
        };
        let row = res.row(&synack(1, 1));
        let me = std::process::id();
        assert_eq!(
            (row.pid, row.owner_from.as_str(), row.kind.as_str()),
            (Some(me), "proc", "synack")
        );
        assert!(row.comm.is_some());
        // Gone from /proc, the listener is still named from the cache for other peers...
        drop(listener);
        for peer in 2..=200 {
            assert_eq!(res.row(&synack(peer, 2)).pid, Some(me));
        }
        assert_eq!(res.listener_owners.len(), 1);
        assert!(res.proc_owners.is_empty());
        // ...until the entry is read again.
        assert_eq!(res.row(&synack(201, 2 + LISTENER_TTL_NS + 1)).pid, None);
    }

    #[test]
    fn state_names() {
        assert_eq!(tcp_state_name(2), "SYN_SENT");
        assert_eq!(tcp_state_name(99), "UNKNOWN");
    }
}
