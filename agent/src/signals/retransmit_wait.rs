//! Time a span's process waited on retransmitted segments: which retransmits are its own
//! (its connections, from its side), how long each kept it waiting, and which were a handshake's.

use std::collections::BTreeMap;

use super::{intervals::union_ns, retransmits::RetransmitRow};

/// The far end of a retransmitting connection as process `pid` sees it, if the connection is
/// one of its own. Its endpoints decide which side is the process's: the socket's recorded owner
/// can be wrong (a connection between two of its own threads, or an owner entry outliving its
/// socket). When both ends are the process's, the far end is the one on a port it does not
/// hold as a client: the port it dialled, not its own ephemeral one.
fn peer_of<'a>(r: &'a RetransmitRow, pid: u32, endpoints: &[String]) -> Option<&'a str> {
    let local_is_ours = endpoints.contains(&r.local);
    let remote_is_ours = endpoints.contains(&r.remote);
    match (local_is_ours, remote_is_ours) {
        (true, true) => Some(if is_ephemeral(&r.remote) && !is_ephemeral(&r.local) {
            r.local.as_str()
        } else {
            r.remote.as_str()
        }),
        (false, true) => Some(r.local.as_str()),
        (true, false) => Some(r.remote.as_str()),
        (false, false) => (r.pid == Some(pid)).then_some(r.remote.as_str()),
    }
}

/// Whether an `address:port` is on Linux's default ephemeral port range (32768-60999): the
/// port of a connection's client end.
fn is_ephemeral(endpoint: &str) -> bool {
    endpoint
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .is_some_and(|p| (32768..=60999).contains(&p))
}

/// Time process `pid` spent waiting on retransmitted segments within the window: its own
/// retransmits, and those of the other end of its connections (`endpoints`: its local TCP
/// endpoints). Each retransmit at `t` with cost `c` covers `[t - c, t]`. Also the count, the
/// peer with most, and the part of the wait a handshake's retransmits covered (a connect
/// stalled: [`is_handshake`]), in the same pass. With the span's serving thread known (`tid`), a connection of the process
/// that another of its threads is known to use (the socket's owner, seen sending or receiving on
/// it: an exporter's, a pool's) kept some other request waiting, not this one.
pub(crate) fn retransmit_wait<'a>(
    rows: impl IntoIterator<Item = &'a RetransmitRow>,
    (pid, tid): (u32, Option<u32>),
    endpoints: &[String],
    start_ns: u64,
    end_ns: u64,
) -> (u64, u64, Option<String>, u64) {
    let mut intervals: Vec<(u64, u64)> = Vec::new();
    let mut handshakes: Vec<(u64, u64)> = Vec::new();
    let mut peers: BTreeMap<&str, u64> = BTreeMap::new();
    for r in rows {
        let Some(peer) = peer_of(r, pid, endpoints) else {
            continue;
        };
        let another_threads = r.pid == Some(pid)
            && r.owner_from == "socket"
            && tid.is_some()
            && r.tid.is_some()
            && r.tid != tid;
        if another_threads {
            continue;
        }
        let lo = r.mono_ns.saturating_sub(r.cost_ns).max(start_ns);
        let hi = r.mono_ns.min(end_ns);
        if hi > lo {
            intervals.push((lo, hi));
            if is_handshake(r) {
                handshakes.push((lo, hi));
            }
            *peers.entry(peer).or_default() += 1;
        }
    }
    // Retransmits of one stall overlap: count covered time once.
    let count = intervals.len() as u64;
    let covered = union_ns(intervals);
    let peer = peers
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(p, _)| p.to_string());
    (covered, count, peer, union_ns(handshakes))
}

/// Whether a retransmit is of a connection's handshake: a SYN (the connecting side, in
/// `SYN_SENT`) or a SYN-ACK (the accepting side, `SYN_RECV`).
pub(crate) fn is_handshake(r: &RetransmitRow) -> bool {
    r.state == "SYN_SENT" || r.state == "SYN_RECV"
}

/// The port of an `address:port` endpoint.
pub(crate) fn port_of(endpoint: &str) -> Option<u16> {
    endpoint.rsplit(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    use crate::signals::interval::tests::row;

    #[test]
    fn an_endpoints_port_is_after_its_last_colon() {
        assert_eq!(port_of("127.0.0.1:4317"), Some(4317));
        assert_eq!(port_of("[::1]:4318"), Some(4318));
        assert_eq!(port_of("nowhere"), None);
    }

    #[test]
    fn a_handshake_is_a_syn_or_a_syn_ack_in_flight() {
        let mut r = row("a:1", "b:2", 200);
        for (state, handshake) in [
            ("SYN_SENT", true),
            ("SYN_RECV", true),
            ("ESTABLISHED", false),
            ("FIN_WAIT1", false),
        ] {
            r.state = state.to_string();
            assert_eq!(is_handshake(&r), handshake, "{state}");
        }
    }

    #[test]
    fn retransmit_wait_counts_overlapping_stalls_once() {
        let mut rows = VecDeque::new();
        let mut r = row("a:1", "b:2", 200);
        r.mono_ns = 1000;
        rows.push_back(r.clone());
        r.mono_ns = 1100;
        rows.push_back(r.clone());
        r.pid = Some(99);
        rows.push_back(r);
        let (wait, n, peer, _) = retransmit_wait(&rows, (1, None), &[], 0, 5000);
        assert_eq!((wait, n, peer.as_deref()), (300, 2, Some("b:2")));
        // Clipped to the window.
        assert_eq!(retransmit_wait(&rows, (1, None), &[], 950, 1050).0, 100);
        assert_eq!(
            retransmit_wait(&rows, (1, None), &[], 2000, 3000),
            (0, 0, None, 0)
        );
        // Process 7 holds b:2, the far end of process 99's retransmitting connection.
        let (wait, n, peer, _) = retransmit_wait(&rows, (7, None), &["b:2".to_string()], 0, 5000);
        assert_eq!((wait, n, peer.as_deref()), (300, 3, Some("a:1")));
    }

    #[test]
    fn a_connection_another_thread_of_the_process_uses_does_not_stall_this_span() {
        let mut r = row("a:1", "b:2", 200);
        r.mono_ns = 1000;
        (r.pid, r.tid, r.owner_from) = (Some(1), Some(11), "socket".into());
        let rows = VecDeque::from([r.clone()]);
        // Thread 11 uses the connection; a span served by thread 12 was not waiting on it.
        assert_eq!(retransmit_wait(&rows, (1, Some(11)), &[], 0, 5000).0, 200);
        assert_eq!(retransmit_wait(&rows, (1, Some(12)), &[], 0, 5000).0, 0);
        // Without a known serving thread, or an owner known only from /proc: the process's.
        assert_eq!(retransmit_wait(&rows, (1, None), &[], 0, 5000).0, 200);
        r.owner_from = "proc".into();
        let rows = VecDeque::from([r]);
        assert_eq!(retransmit_wait(&rows, (1, Some(12)), &[], 0, 5000).0, 200);
    }

    #[test]
    fn the_peer_is_named_from_the_waiting_processs_side() {
        let eps = |e: &[&str]| e.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // The downstream's socket, wrongly owned by the caller (a stale owner entry): the
        // caller's own ephemeral end is not its peer.
        let mut r = row("127.0.0.1:18090", "127.0.0.1:45000", 200);
        r.pid = Some(1);
        assert_eq!(
            peer_of(&r, 1, &eps(&["127.0.0.1:45000"])),
            Some("127.0.0.1:18090")
        );
        // Both ends the caller's (its own server thread): the port it dialled.
        assert_eq!(
            peer_of(&r, 1, &eps(&["127.0.0.1:45000", "127.0.0.1:18090"])),
            Some("127.0.0.1:18090")
        );
        let mut back = row("127.0.0.1:45000", "127.0.0.1:18090", 200);
        back.pid = Some(1);
        assert_eq!(
            peer_of(&back, 1, &eps(&["127.0.0.1:45000", "127.0.0.1:18090"])),
            Some("127.0.0.1:18090")
        );
        // Its own socket, endpoints not read yet.
        assert_eq!(peer_of(&back, 1, &[]), Some("127.0.0.1:18090"));
        // Somebody else's connection.
        assert_eq!(peer_of(&back, 2, &[]), None);
        assert!(is_ephemeral("[::1]:40000") && !is_ephemeral("10.0.0.1:8080"));
        assert!(!is_ephemeral("garbage"));
    }
}
