//! Spans per second per core through receive -> join -> export, the agent next to rotel
//! forwarding the same load, and the agent's resident memory at 10k spans/s. Both forward to a
//! rotel with the blackhole exporter; the load is OTLP/gRPC batches of 100 spans.

use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, trace_service_client::TraceServiceClient},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};

use culprit::clock::realtime_ns;

use super::{
    peers::{rotel_blackhole, rotel_forwarder, start_agent},
    usage::{cpu_seconds, peak_rss_mib},
};
use crate::workloads::string_attribute;

const SPANS_PER_REQUEST: usize = 100;

fn request(seq: u64) -> ExportTraceServiceRequest {
    let now = realtime_ns();
    let spans = (0..SPANS_PER_REQUEST as u64)
        .map(|i| Span {
            trace_id: (seq as u128 * 1000 + i as u128).to_be_bytes().to_vec(),
            span_id: (seq * 1000 + i + 1).to_be_bytes().to_vec(),
            name: "GET /bench".into(),
            start_time_unix_nano: now - 2_000_000,
            end_time_unix_nano: now,
            kind: 2,
            attributes: vec![string_attribute("http.route", "/bench")],
            ..Span::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_attribute("service.name", "bench")],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// Sends batches to `port` for `duration` from `streams` concurrent clients, at most
/// `max_rps` requests per second in all (0: as fast as accepted). Returns spans accepted.
pub async fn load(
    port: u16,
    duration: Duration,
    streams: usize,
    max_rps: u64,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for s in 0..streams {
        let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{port}")).await?;
        let period =
            (max_rps > 0).then(|| Duration::from_secs_f64(streams as f64 / max_rps as f64));
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            let mut seq = s as u64 * 1_000_000_000;
            let mut next = Instant::now();
            while Instant::now() < deadline {
                seq += 1;
                if client.export(request(seq)).await.is_ok() {
                    ok += SPANS_PER_REQUEST as u64;
                }
                if let Some(p) = period {
                    next += p;
                    tokio::time::sleep_until(next.into()).await;
                }
            }
            ok
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await?;
    }
    Ok(total)
}

struct Measured {
    spans_per_s: f64,
    cpu_s: f64,
    spans: u64,
}

fn measure(
    rt: &tokio::runtime::Runtime,
    port: u16,
    pid: u32,
    seconds: f64,
) -> anyhow::Result<Measured> {
    let cpu0 = cpu_seconds(pid)?;
    let spans = rt.block_on(load(port, Duration::from_secs_f64(seconds), 4, 0))?;
    let cpu_s = cpu_seconds(pid)? - cpu0;
    Ok(Measured {
        spans_per_s: spans as f64 / seconds,
        cpu_s,
        spans,
    })
}

pub fn run(seconds: f64, markdown: Option<&Path>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (_blackhole, downstream) = rotel_blackhole()?;

    let agent = start_agent(&downstream)?;
    let agent_grpc = agent.1;
    let agent = agent.0;
    let ours = measure(&rt, agent_grpc, agent.pid(), seconds)?;

    let (forwarder, fwd_grpc) = rotel_forwarder(&downstream)?;
    let theirs = measure(&rt, fwd_grpc, forwarder.pid(), seconds)?;
    drop(forwarder);

    drop(agent);
    // Resident memory with a steady 10k spans/s (100 requests/s of 100 spans), on a fresh agent
    // so that the flood above does not count.
    let (agent, agent_grpc) = start_agent(&downstream)?;
    let steady = rt.block_on(load(agent_grpc, Duration::from_secs_f64(seconds), 2, 100))?;
    let rss = peak_rss_mib(agent.pid())?;
    drop(agent);

    let per_core = |m: &Measured| {
        if m.cpu_s > 0.0 {
            m.spans as f64 / m.cpu_s
        } else {
            0.0
        }
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "OTLP/gRPC load, 4 streams of {SPANS_PER_REQUEST}-span batches, {seconds:.0} s each, forwarded to a rotel blackhole.\n"
    );
    let _ = writeln!(
        s,
        "| forwarder | spans/s accepted | CPU s used | spans per CPU-second |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|");
    for (name, m) in [
        ("culprit agent (receive, join, export)", &ours),
        ("rotel (receive, batch, export)", &theirs),
    ] {
        let _ = writeln!(
            s,
            "| {name} | {:.0} | {:.2} | {:.0} |",
            m.spans_per_s,
            m.cpu_s,
            per_core(m)
        );
    }
    let _ = writeln!(
        s,
        "\nculprit / rotel, spans per CPU-second: {:.2}. Agent peak RSS after {:.0} s at a steady {:.0} spans/s: {rss:.1} MiB.",
        per_core(&ours) / per_core(&theirs).max(1.0),
        seconds,
        steady as f64 / seconds,
    );
    print!("{s}");
    if let Some(path) = markdown {
        std::fs::write(path, &s)?;
    }
    Ok(())
}
