//! A service that stops accepting: its listener's queue fills and the kernel refuses the next
//! handshakes. The agent's report shows the listener of the watched process with its queue full
//! and the refusals its network namespace counted, before any span could.

use std::{
    net::TcpStream,
    process::{Command, Stdio},
    time::Duration,
};

use culprit_lab::{
    process::reaped::Reaped,
    run::agent::RunningAgent,
    service::otel::{free_port, wait_for_port},
};
use culprit_tests::require_root;

#[test]
fn a_full_accept_queue_is_reported_with_its_refusals() -> anyhow::Result<()> {
    require_root()?;
    let port = free_port()?;
    // Listens with a backlog of 1 and never accepts.
    let script = "import socket, sys, time\n\
                  s = socket.socket()\n\
                  s.bind(('127.0.0.1', int(sys.argv[1])))\n\
                  s.listen(1)\n\
                  time.sleep(60)\n";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, &port.to_string()])
        .stdin(Stdio::null());
    let server = Reaped::spawn("listener", &mut cmd)?;
    wait_for_port(port, Duration::from_secs(10))?;
    let pid = server.pid().to_string();
    let mut agent = RunningAgent::start(Duration::from_secs(1), &["--watch-pid", &pid])?;
    agent.next_report()?;

    // More connections than the queue holds: the handshakes past it are refused (the clients'
    // side of a refused one still believes it connected, or times out).
    let clients: Vec<_> = (0..12)
        .map(|_| {
            std::thread::spawn(move || {
                TcpStream::connect_timeout(
                    &format!("127.0.0.1:{port}").parse().expect("address"),
                    Duration::from_millis(500),
                )
                .ok()
            })
        })
        .collect();
    let held: Vec<_> = clients.into_iter().filter_map(|c| c.join().ok()).collect();

    let mut refused = 0;
    let mut full = false;
    for _ in 0..5 {
        let report = agent.fresh_report()?;
        for l in report
            .listeners
            .iter()
            .filter(|l| l.local.ends_with(&format!(":{port}")))
        {
            assert_eq!(l.pid.to_string(), pid, "{l:?}");
            // A backlog of 1 holds two.
            full |= l.queued >= 2;
            refused += l.netns_overflows;
        }
        if full && refused > 0 {
            break;
        }
    }
    drop(held);
    assert!(full, "the listener's queue was never seen full");
    assert!(refused > 0, "no refusal counted");
    agent.stop()?;
    Ok(())
}
