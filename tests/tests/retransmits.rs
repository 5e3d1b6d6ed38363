//! TCP retransmits: with nftables dropping a quarter of a loopback port's packets, the agent
//! reports retransmits with the connection's 4-tuple, the owning process and a cost.

use std::{net::TcpListener, time::Duration};

use culprit_lab::{
    faults::{cgroup::TempCgroup, packet_loss::PacketLoss},
    process::reaped::spawn_workload,
    run::agent::RunningAgent,
};
use culprit_tests::{net_counter, require_root};

#[test]
fn lost_packets_show_up_as_retransmits_with_owner_and_cost() -> anyhow::Result<()> {
    require_root()?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let cg = TempCgroup::new_v2("culprit-test-rtx")?;
    let mut server = spawn_workload(
        &cg.child("server")?,
        None,
        20.0,
        &["tcp-server", "--port", &port.to_string()],
    )?;
    let mut client = spawn_workload(
        &cg.child("client")?,
        None,
        18.0,
        &["tcp-client", "--port", &port.to_string()],
    )?;
    let (server_pid, client_pid) = (server.pid().to_string(), client.pid().to_string());
    let mut agent = RunningAgent::start(
        Duration::from_secs(1),
        &["--watch-pid", &server_pid, "--watch-pid", &client_pid],
    )?;
    agent.next_report()?;
    let kernel_before = kernel_retransmitted_segments()?;
    let loss = PacketLoss::on_port(port, 25, None)?;
    let server_addr = format!("127.0.0.1:{port}");
    let on_port =
        |r: &&culprit::model::RetransmitRow| r.local == server_addr || r.remote == server_addr;
    // At least five reports, and more while fewer than three retransmits were seen: on an
    // emulated machine a connection can sit out a backed-off timeout with nothing to report.
    let mut reports = agent.reports(5)?;
    while reports.len() < 15
        && reports
            .iter()
            .flat_map(|r| &r.retransmits)
            .filter(on_port)
            .count()
            < 3
    {
        reports.push(agent.next_report()?);
    }
    // The truths the failure message names: were packets dropped, did the kernel retransmit,
    // was the pair still talking?
    let dropped = loss.dropped_packets()?;
    let kernel_retransmits = kernel_retransmitted_segments()? - kernel_before;
    let alive = [server.is_running(), client.is_running()];
    // Drop counters are totals since the agent started: the last report has them all.
    let agent_drops: Vec<_> = reports
        .last()
        .map(|r| r.drops.iter().filter(|(_, n)| **n > 0).collect())
        .unwrap_or_default();
    agent.stop()?;

    let rows: Vec<_> = reports
        .iter()
        .flat_map(|r| &r.retransmits)
        .filter(on_port)
        .collect();
    eprintln!(
        "{} retransmits (nftables dropped {dropped}, the kernel retransmitted \
         {kernel_retransmits}): {rows:#?}",
        rows.len()
    );
    assert!(
        rows.len() >= 3,
        "expected retransmits on port {port}, got {} in {} reports; nftables dropped {dropped} \
         packets, the kernel retransmitted {kernel_retransmits} segments, server and client \
         running: {alive:?}, the agent's drops: {agent_drops:?}",
        rows.len(),
        reports.len()
    );
    for r in &rows {
        // The socket on the server's port belongs to the server; the other end to the client.
        let owner = if r.local == server_addr {
            server.pid()
        } else {
            client.pid()
        };
        assert_eq!(r.pid, Some(owner), "wrong owner for {r:?}");
        assert!(
            r.local.starts_with("127.0.0.1:") && r.remote.starts_with("127.0.0.1:"),
            "{r:?}"
        );
        assert!(r.cost_ns >= 1_000_000, "implausible cost {r:?}");
    }
    assert!(
        rows.iter().any(|r| r.owner_from == "socket"),
        "owners never came from the kernel"
    );
    let conns: Vec<_> = reports.iter().flat_map(|r| &r.connections).collect();
    assert!(
        conns
            .iter()
            .any(|c| c.local == server_addr || c.remote == server_addr),
        "no per-connection count for port {port}"
    );
    Ok(())
}

/// The network namespace's retransmitted TCP segments (`RetransSegs` in /proc/net/snmp).
fn kernel_retransmitted_segments() -> anyhow::Result<u64> {
    net_counter(
        &std::fs::read_to_string("/proc/net/snmp")?,
        "Tcp:",
        "RetransSegs",
    )
}
