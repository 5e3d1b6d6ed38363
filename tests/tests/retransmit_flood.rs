//! A hundred thousand peers the agent has never heard of: a SYN flood from spoofed sources into
//! a pod's network namespace, whose listener answers each SYN with a SYN-ACK no one
//! acknowledges and retransmits it a second later. Every retransmit reaches the agent's
//! retransmit signal (any socket's, any namespace's), each from a different peer. Under the
//! DaemonSet's memory limit the agent stays flat, accounts for every retransmit the kernel
//! counted (listed, or left out of a report and counted, or lost in the ring and counted), and a
//! well-behaved sender's spans all reach the collector meanwhile.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use culprit_lab::{
    faults::{netns::PodNetwork, syn_flood},
    process::reaped::Reaped,
};
use culprit_tests::{
    net_counter,
    otlp_http::{self, ExportingAgent, GoodSender},
    require_root, rss_mib,
};
use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest, metrics::v1::metric,
};

const PEERS: u32 = 100_000;
const PER_SECOND: u32 = 10_000;
const LISTEN_PORT: u16 = 9999;

/// Runs `script` with `sh` inside network namespace `ns`.
fn in_netns(ns: &str, script: &str) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", script])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The kernel's count of SYN and SYN-ACK retransmits in namespace `ns` (`TcpExt:
/// TCPSynRetrans`): the truth the agent is scored against.
fn syn_retransmits(ns: &str) -> anyhow::Result<u64> {
    let netstat = in_netns(ns, "cat /proc/net/netstat")?;
    net_counter(&netstat, "TcpExt:", "TCPSynRetrans")
}

/// The `i`-th spoofed peer, in 10.64.0.0/12: routed, inside the namespace, into a veth pair to
/// a gateway that does not exist, so that nothing the listener answers leaves the namespace.
fn peer(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 1)) + i)
}

/// The most `culprit.tcp.retransmits` series one metrics export carried, and whether any was
/// the overflow series (`otel.metric.overflow = true`).
fn peer_series(exports: &[ExportMetricsServiceRequest]) -> (usize, bool) {
    let points = exports.iter().map(|req| {
        req.resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .filter(|m| m.name == "culprit.tcp.retransmits")
            .filter_map(|m| match &m.data {
                Some(metric::Data::Sum(sum)) => Some(&sum.data_points),
                _ => None,
            })
            .flatten()
            .collect::<Vec<_>>()
    });
    points.fold((0, false), |(most, overflowed), pts| {
        let overflow = pts.iter().any(|p| {
            p.attributes
                .iter()
                .any(|kv| kv.key == "otel.metric.overflow")
        });
        (most.max(pts.len()), overflowed || overflow)
    })
}

#[test]
fn a_hundred_thousand_spoofed_peers_leave_the_agent_flat() -> anyhow::Result<()> {
    require_root()?;
    let pod = PodNetwork::new("synflood", 74)?;
    let ns = pod.name().to_string();
    // Half-open connections kept (no cookies), each SYN-ACK retransmitted once, the spoofed
    // sources accepted on the pod's veth and their answers sent nowhere.
    in_netns(
        &ns,
        "sysctl -qw net.ipv4.tcp_syncookies=0 net.ipv4.tcp_synack_retries=1 \
         net.core.somaxconn=262144 net.ipv4.tcp_max_syn_backlog=262144 && \
         ip link add cflood0 type veth peer name cflood1 && \
         ip link set cflood0 up && ip link set cflood1 up && \
         ip addr add 10.254.0.1/30 dev cflood0 && \
         ip neigh add 10.254.0.2 lladdr 02:00:00:00:00:02 dev cflood0 nud permanent && \
         ip route add 10.64.0.0/12 via 10.254.0.2 && \
         for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done",
    )?;
    let listener_code = format!(
        "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('0.0.0.0',{LISTEN_PORT}))\ns.listen(262144)\ntime.sleep(600)"
    );
    let _listener = Reaped::spawn(
        "listener",
        Command::new("ip").args(["netns", "exec", &ns, "python3", "-c", &listener_code]),
    )?;
    let at = SocketAddr::from((pod.pod_v4, LISTEN_PORT));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&at, Duration::from_millis(200)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the listener in {ns} never came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let ExportingAgent {
        mut agent,
        ports,
        sink,
        rotel: _rotel,
    } = ExportingAgent::start(&["--memory-limit-mib".into(), "256".into()])?;
    let pid = agent.pid();
    let good = GoodSender::start(ports.http);

    let truth_before = syn_retransmits(&ns)?;
    // The first tenth, and its retransmits, then the rest.
    syn_flood::flood(
        pod.pod_v4,
        LISTEN_PORT,
        (0..PEERS / 10).map(peer),
        PER_SECOND,
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let (rss_early, _) = rss_mib(pid);
    let started = Instant::now();
    let sent = syn_flood::flood(
        pod.pod_v4,
        LISTEN_PORT,
        (PEERS / 10..PEERS).map(peer),
        PER_SECOND,
    )? + u64::from(PEERS / 10);
    let flood_s = started.elapsed().as_secs_f64();
    // The last SYN-ACKs are retransmitted a second after they were sent.
    std::thread::sleep(Duration::from_secs(4));
    let truth = syn_retransmits(&ns)? - truth_before;
    let (rss_end, peak) = rss_mib(pid);
    let (good_sent, good_busy) = good.stop();
    let mut reports = agent.take_reports();
    reports.extend(agent.reports(2)?);
    let seen = otlp_http::delivered(&sink, &good_sent, Duration::from_secs(30));
    agent.stop()?;
    let (most_peer_series, overflowed) = peer_series(&sink.metrics());

    let synack_rows: Vec<_> = reports
        .iter()
        .flat_map(|r| &r.retransmits)
        .filter(|r| r.kind == "synack" && r.local.ends_with(&format!(":{LISTEN_PORT}")))
        .collect();
    let peers: BTreeSet<&str> = synack_rows
        .iter()
        .map(|r| r.remote.split(':').next().unwrap_or(""))
        .collect();
    let last = reports.last().map(|r| r.drops.clone()).unwrap_or_default();
    let unreported = last.get("retransmits_unreported").copied().unwrap_or(0);
    let ring_lost = last.get("tcp_ring_full").copied().unwrap_or(0);
    let accounted = synack_rows.len() as u64 + unreported + ring_lost;
    eprintln!(
        "{sent} SYNs in {flood_s:.1} s; kernel: {truth} SYN-ACK retransmits; agent: {} listed \
         ({} peers), {unreported} left out of reports, {ring_lost} lost in the ring; RSS \
         {rss_early:.0} MiB after {} peers, {rss_end:.0} MiB after {PEERS}, peak {peak:.0} MiB; \
         good sender: {}/{} exported ({good_busy} busy); at most {most_peer_series} per-peer \
         metric series in one export (overflow series seen: {overflowed})",
        synack_rows.len(),
        peers.len(),
        PEERS / 10,
        seen.len(),
        good_sent.len()
    );
    assert!(
        truth >= u64::from(PEERS) * 9 / 10,
        "the flood did not make the retransmits it should: {truth}"
    );
    assert!(
        accounted >= truth * 98 / 100,
        "retransmits unaccounted for: {accounted} of {truth}"
    );
    assert!(
        peers.len() >= 10_000,
        "too few distinct peers listed: {}",
        peers.len()
    );
    assert!(
        rss_end - rss_early <= 24.0,
        "RSS grew from {rss_early:.0} to {rss_end:.0} MiB with the peers"
    );
    assert!(peak <= 256.0, "peak RSS {peak:.0} MiB over the limit");
    assert!(
        most_peer_series <= 2001 && overflowed,
        "per-peer metric series: at most {most_peer_series} in one export, overflow \
         series seen: {overflowed}"
    );
    assert!(good_sent.len() >= 50, "the good sender barely sent");
    assert_eq!(seen, good_sent, "the good sender's spans");
    Ok(())
}
