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

/// Turns records into rows, resolving owners the kernel did not see through /proc (cached per
/// socket: a lossy connection retransmits many times).
#[derive(Default)]
pub(crate) struct RetransmitResolver {
    proc_owners: HashMap<u64, Option<u32>>,
}

impl RetransmitResolver {
    pub(crate) fn row(&mut self, rec: &RetransmitRecord) -> RetransmitRow {
        let (local, remote) = endpoints(rec);
        let (pid, tid, owner_from) = if rec.tgid != 0 {
            (Some(rec.tgid), Some(rec.tid), "socket")
        } else {
            let owner = *self
                .proc_owners
                .entry(rec.skaddr)
                .or_insert_with(|| sockets::socket_owner(local, remote));
            match owner {
                Some(pid) => (Some(pid), None, "proc"),
                None => (None, None, "unknown"),
            }
        };
        if self.proc_owners.len() > 4096 {
            self.proc_owners.clear();
        }
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
            comm: pid.and_then(procfs::comm),
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
    fn state_names() {
        assert_eq!(tcp_state_name(2), "SYN_SENT");
        assert_eq!(tcp_state_name(99), "UNKNOWN");
    }
}
