//! `culprit explain <trace-id or span-id>`: one request's decomposition, with a bar and the
//! neighbour, peer and cgroup behind each part.

use std::fmt::Write as _;

use crate::{
    cause::Part,
    live::{
        client::{self, Endpoint},
        view::RequestView,
    },
    printable::printable,
    tools::bar,
};

const BAR_WIDTH: usize = 60;

pub fn run(endpoint: &Endpoint, id: &str, json: bool) -> anyhow::Result<()> {
    let id = id.trim().to_ascii_lowercase();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        anyhow::bail!("{id:?} is not a trace id (32 hex digits) or span id (16 hex digits)");
    }
    let found: Option<Vec<RequestView>> =
        client::block_on(client::get(endpoint, &format!("/v1/requests/{id}")))??;
    let Some(requests) = found else {
        anyhow::bail!(
            "the agent has no request with id {id} among the recent ones (it keeps the last \
             {} requests; was the span sent to this node's agent?)",
            crate::live::view::MAX_REQUESTS
        );
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&requests)?);
    } else {
        for r in &requests {
            print!("{}", render(r));
        }
    }
    Ok(())
}

/// The text `explain` prints for one request.
pub fn render(r: &RequestView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} — {:.1} ms, cause {} ({:.0}%)",
        printable(&r.name),
        r.duration_ms,
        r.cause,
        r.cause_share * 100.0
    );
    let _ = writeln!(
        out,
        "trace {}  span {}  service {}  pid {}",
        r.trace_id,
        r.span_id,
        r.service.as_deref().unwrap_or("?"),
        r.pid
    );
    if let Some(cg) = &r.cgroup {
        let _ = write!(out, "cgroup {cg}");
        if let Some(id) = &r.container_id {
            let _ = write!(out, "  container {id}");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "{}", bar::text(&r.parts, BAR_WIDTH));
    let _ = writeln!(out, " {}", bar::legend(&r.parts));
    for line in part_lines(r) {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(
        out,
        "  joined by {} (coverage {:.0}%)\n",
        r.join,
        r.coverage * 100.0
    );
    out
}

/// One line per part: its time, its share, and who or what is behind it.
pub fn part_lines(r: &RequestView) -> Vec<String> {
    let total = r.parts.total_ms().max(f64::MIN_POSITIVE);
    r.parts
        .each()
        .map(|(part, ms)| {
            let behind = match part {
                Part::Contention if ms > 0.0 => {
                    r.neighbour.as_ref().map(|n| format!("CPU held by {n}"))
                }
                Part::Throttled if ms > 0.0 => Some(format!(
                    "CFS quota of {}",
                    r.cgroup.as_deref().unwrap_or("the process's cgroup")
                )),
                Part::Steal if ms > 0.0 => {
                    Some("the hypervisor ran another guest on this CPU".to_string())
                }
                Part::Retransmit if ms > 0.0 => r
                    .retransmit_peer
                    .as_ref()
                    .map(|p| format!("{} retransmit(s) to/from {p}", r.retransmits)),
                Part::ConnectRetransmit if ms > 0.0 => r
                    .retransmit_peer
                    .as_ref()
                    .map(|p| format!("handshake with {p} retransmitted")),
                Part::DiskIo if ms > 0.0 => r.disk_device.as_ref().map(|d| format!("device {d}")),
                Part::MemoryReclaim if ms > 0.0 => Some(format!(
                    "memory limit of {}",
                    r.cgroup.as_deref().unwrap_or("the process's cgroup")
                )),
                Part::PageFault if ms > 0.0 => Some(match &r.disk_device {
                    Some(d) => format!("major faults: pages read in from {d}"),
                    None => "major faults: pages read in".to_string(),
                }),
                Part::LockWait if ms > 0.0 => {
                    r.lock_holder.as_ref().map(|h| format!("released by {h}"))
                }
                Part::OffCpu if ms > 0.0 => r.waker.as_ref().map(|w| format!("woken by {w}")),
                _ => None,
            };
            format!(
                "{:<24}{:>9.2} ms {:>5.1}%  {}",
                part.label(),
                ms,
                ms / total * 100.0,
                behind.unwrap_or_default()
            )
            .trim_end()
            .to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{cause::Cause, model::Parts};

    #[test]
    fn each_part_says_who_or_what_is_behind_it() {
        let r = RequestView {
            trace_id: "t".into(),
            span_id: "s".into(),
            name: "GET /x".into(),
            service: None,
            pid: 1,
            cgroup: Some("/pod".into()),
            container_id: None,
            seen_unix_ms: 0,
            duration_ms: 10.0,
            cause: Cause::LockWait,
            cause_share: 0.4,
            parts: Parts {
                on_cpu_ms: 1.0,
                disk_io_ms: 2.0,
                memory_reclaim_ms: 2.0,
                lock_wait_ms: 4.0,
                off_cpu_ms: 1.0,
                ..Parts::default()
            },
            neighbour: None,
            retransmit_peer: None,
            retransmits: 0,
            waker: Some("db (7)".into()),
            lock_holder: Some("worker (42)".into()),
            disk_device: Some("vda".into()),
            join: "thread".into(),
            coverage: 1.0,
        };
        let lines = part_lines(&r).join("\n");
        for said in [
            "device vda",
            "memory limit of /pod",
            "released by worker (42)",
            "woken by db (7)",
        ] {
            assert!(lines.contains(said), "{said:?} missing from\n{lines}");
        }
    }
}
