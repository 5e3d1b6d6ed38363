//! What a hostile or broken sender cannot do to the agent, under the DaemonSet's memory limit
//! (`--memory-limit-mib 256`): grow it with a million distinct service names, hold its
//! connections open by sending nothing or trickling headers, or crowd out a well-behaved sender,
//! whose spans all reach the collector while a flood of 4 MB requests is answered "busy".

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use culprit_lab::{
    run::agent::RunningAgent,
    service::otel::{AgentPorts, Sink, free_port, rotel, wait_for_port},
};
use culprit_tests::{
    otlp_http::{self, GoodSender, trace_request},
    require_root, rss_mib,
};

const LIMIT_MIB: &str = "256";

/// POSTs a protobuf trace request; its HTTP status (0 when the connection failed).
fn post(port: u16, body: &[u8]) -> u16 {
    otlp_http::post(port, "application/x-protobuf", body).unwrap_or(0)
}

fn agent(extra_env: &[(&str, &str)]) -> anyhow::Result<(RunningAgent, AgentPorts)> {
    let ports = AgentPorts::fresh()?;
    let mut args = ports.args();
    args.extend(["--memory-limit-mib".into(), LIMIT_MIB.into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = RunningAgent::start_with_env(Duration::from_secs(1), &args, extra_env)?;
    agent.next_report()?;
    wait_for_port(ports.http, Duration::from_secs(10))?;
    wait_for_port(ports.grpc, Duration::from_secs(10))?;
    Ok((agent, ports))
}

/// Whether the server closed `s` within `within` (a read returns end of file or an error).
fn closed_within(mut s: &TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).ok();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // A 408 or error page before the close.
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

/// The agent's RSS once nothing is in flight (no batch held for the join, export queue empty).
/// Even then one reading swings by tens of MiB (58 to 131 MiB within one run): the allocator
/// returns a thread's freed pages only when that thread next runs, so [`retained_mib`] reads
/// several.
fn settled_rss_mib(agent: &mut RunningAgent) -> anyhow::Result<f64> {
    for _ in 0..30 {
        let report = agent.fresh_report()?;
        if report.otlp.join.batches_held == 0 && report.otlp.export.queue_depth == 0 {
            return Ok(rss_mib(agent.pid()).0);
        }
    }
    anyhow::bail!("the pipeline never drained")
}

/// Settled readings taken every this many requests (50 000 service names).
const RSS_SAMPLE_EVERY: u64 = 50;
/// Readings on each side of the comparison: the first (50k to 250k names) and the last (800k to
/// 1M names).
const RSS_SAMPLES_COMPARED: usize = 5;

/// What the agent retains over `readings`: the lowest of them, since what is not retained only
/// ever adds to a reading. A retained service name shows in every later reading.
fn retained_mib(readings: &[f64]) -> f64 {
    readings.iter().copied().fold(f64::INFINITY, f64::min)
}

#[test]
fn a_million_service_names_and_idle_or_trickling_connections_leave_the_agent_flat()
-> anyhow::Result<()> {
    require_root()?;
    let (mut agent, ports) = agent(&[])?;
    let pid = agent.pid();

    // Connections that send nothing, or a request's headers one byte at a time.
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(("127.0.0.1", ports.http)))
        .chain((0..20).map(|_| TcpStream::connect(("127.0.0.1", ports.grpc))))
        .collect::<Result<_, _>>()?;
    let trickle_stop = Arc::new(AtomicBool::new(false));
    let trickling: Vec<_> = (0..10)
        .map(|_| {
            let stop = trickle_stop.clone();
            let mut s = TcpStream::connect(("127.0.0.1", ports.http)).expect("connect");
            std::thread::spawn(move || {
                let head = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nX-Pad: ";
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let b = head.get(n).copied().unwrap_or(b'a');
                    if s.write_all(&[b]).is_err() {
                        return true;
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_millis(500));
                }
                false
            })
        })
        .collect();

    // A million distinct service names, a thousand per request.
    let started = Instant::now();
    let mut rss_readings = Vec::new();
    let mut busy = 0;
    for batch in 0..1000u64 {
        let body = trace_request(
            (0..1000u64).map(|i| (format!("svc-{batch}-{i}"), batch * 1000 + i + 1, 8)),
        );
        loop {
            match post(ports.http, &body) {
                200 => break,
                429 => {
                    busy += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => anyhow::bail!("batch {batch}: HTTP {other}"),
            }
        }
        if batch % RSS_SAMPLE_EVERY == RSS_SAMPLE_EVERY - 1 {
            rss_readings.push(settled_rss_mib(&mut agent)?);
        }
    }
    let rss_early = retained_mib(&rss_readings[..RSS_SAMPLES_COMPARED]);
    let rss_end = retained_mib(&rss_readings[rss_readings.len() - RSS_SAMPLES_COMPARED..]);
    let peak = rss_mib(pid).1;
    eprintln!(
        "1M service names in {:.1} s ({busy} busy answers): RSS retained {rss_early:.0} MiB over \
         50k-250k names, {rss_end:.0} MiB over 800k-1M, peak {peak:.0} MiB; settled readings \
         every 50k: {:.0?}",
        started.elapsed().as_secs_f64(),
        rss_readings
    );

    let idle_closed = idle
        .iter()
        .filter(|s| closed_within(s, Duration::from_secs(15)))
        .count();
    trickle_stop.store(true, Ordering::Relaxed);
    // Each thread says whether the agent cut its connection before it was told to stop.
    let trickles_cut = trickling
        .into_iter()
        .filter_map(|t| t.join().ok())
        .filter(|cut| *cut)
        .count();
    let report = agent.fresh_report()?;
    agent.stop()?;
    eprintln!(
        "idle connections closed: {idle_closed}/40; trickling ones cut: {trickles_cut}/10; {:?}",
        report.otlp.ingress
    );
    assert!(
        rss_end - rss_early <= 24.0,
        "RSS grew from {rss_early:.0} to {rss_end:.0} MiB with the service names"
    );
    assert!(peak <= 256.0, "peak RSS {peak:.0} MiB over the limit");
    assert_eq!(idle_closed, 40, "idle connections left open");
    assert_eq!(trickles_cut, 10, "connections trickling headers left open");
    assert!(
        report.otlp.ingress.connections_timed_out >= 40,
        "{:?}",
        report.otlp.ingress
    );
    Ok(())
}

#[test]
fn a_well_behaved_sender_is_exported_whole_during_a_flood() -> anyhow::Result<()> {
    require_root()?;
    let sink = Sink::start(free_port()?)?;
    let (rotel_grpc, rotel_http) = (free_port()?, free_port()?);
    let _rotel = rotel(rotel_grpc, rotel_http, &sink.endpoint())?;
    let endpoint = format!("http://127.0.0.1:{rotel_http}");
    let (mut agent, ports) = agent(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    ])?;
    let pid = agent.pid();
    let good = GoodSender::start(ports.http);
    // The flood: 64 requests of 4 MB at once, three times.
    let big = trace_request((0..1000u64).map(|i| ("flood".to_string(), i + 1, 4000)));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.extend(std::thread::scope(|s| {
            let handles: Vec<_> = (0..64)
                .map(|_| s.spawn(|| post(ports.http, &big)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .collect::<Vec<_>>()
        }));
    }
    std::thread::sleep(Duration::from_secs(1));
    let (want, good_busy) = good.stop();
    let seen = otlp_http::delivered(&sink, &want, Duration::from_secs(30));
    let (_, peak) = rss_mib(pid);
    let report = agent.fresh_report()?;
    agent.stop()?;
    let busy = statuses.iter().filter(|s| **s == 429).count();
    eprintln!(
        "flood: {busy} of {} answered busy; the good sender sent {} spans ({good_busy} retries), \
         {} exported; peak RSS {peak:.0} MiB",
        statuses.len(),
        want.len(),
        seen.len()
    );
    assert!(busy > 0, "the flood was never pushed back: {statuses:?}");
    assert!(
        want.len() >= 50,
        "the good sender barely sent: {}",
        want.len()
    );
    assert_eq!(seen.len(), want.len(), "{:?}", report.otlp.export);
    assert!(peak <= 256.0, "peak RSS {peak:.0} MiB over the limit");
    Ok(())
}
