//! `culprit report`: for a time window or a load test, where the requests' time went, by
//! service and cause, with who is behind each cause and the slowest requests decomposed; as
//! HTML (charts drawn like the lab's), Markdown and JSON.

pub mod client_results;
pub mod model;
pub mod render;
pub mod window;

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
};

use anyhow::Context as _;

pub use self::window::Window;
use self::{
    model::{ClientRequest, ReportRequest},
    render::LoadReport,
};
use crate::{
    host::clock::realtime_ns,
    live::{
        client::{self, Endpoint},
        view::{MAX_REQUESTS, RequestView, Snapshot, ThrottledView},
    },
    signals::OomKill,
};

/// What to report on.
#[derive(Debug, Clone)]
pub struct ReportOpts {
    pub window: Window,
    /// A load generator's results (k6 `--out json`, or JSON lines of trace_id/latency_ms).
    pub client_results: Option<PathBuf>,
    /// Where report.html, report.md and report.json go.
    pub out: PathBuf,
}

/// Builds the report from the agent's kept requests and the client's results, if any.
pub fn build(
    views: &[RequestView],
    throttled: Vec<ThrottledView>,
    kills: &[OomKill],
    client: Option<(&Path, Vec<ClientRequest>, usize)>,
    window: Window,
    now_unix_ms: u64,
) -> LoadReport {
    let client_requests: &[ClientRequest] = client.as_ref().map_or(&[], |c| &c.1);
    let ids: HashSet<&str> = client_requests
        .iter()
        .map(|c| c.trace_id.as_str())
        .collect();
    let joined_seen: Vec<u64> = views
        .iter()
        .filter(|v| ids.contains(v.trace_id.as_str()))
        .map(|v| v.seen_unix_ms)
        .collect();
    let (from, to) = window.bounds(now_unix_ms, &joined_seen);
    let in_window: Vec<RequestView> = views
        .iter()
        .filter(|v| v.seen_unix_ms >= from && v.seen_unix_ms <= to)
        .cloned()
        .collect();
    let requests = model::requests(&in_window, client_requests);
    let mut by_service: BTreeMap<&str, Vec<&ReportRequest>> = BTreeMap::new();
    for r in &requests {
        by_service.entry(&r.service).or_default().push(r);
    }
    let joined: HashSet<&str> = requests
        .iter()
        .filter(|r| r.client_ms.is_some())
        .map(|r| r.trace_id.as_str())
        .collect();
    LoadReport {
        from_unix_ms: from,
        to_unix_ms: to,
        client_file: client.as_ref().map(|c| c.0.display().to_string()),
        client_skipped_lines: client.as_ref().map_or(0, |c| c.2),
        client_unjoined: ids.iter().filter(|id| !joined.contains(*id)).count(),
        clients: if client.is_some() {
            model::client_summaries(client_requests, &requests)
        } else {
            Vec::new()
        },
        services: by_service
            .into_iter()
            .map(|(s, rs)| model::service_report(s, &rs))
            .collect(),
        throttled,
        oom_kills: kills
            .iter()
            .filter(|k| k.unix_ms.is_some_and(|ms| ms >= from && ms <= to))
            .cloned()
            .collect(),
        kept_requests: views.len(),
    }
}

/// `culprit report`: asks the agent, writes the three files, prints the Markdown.
pub fn run(endpoint: &Endpoint, opts: &ReportOpts) -> anyhow::Result<()> {
    let client = opts
        .client_results
        .as_deref()
        .map(|p| client_results::read(p).map(|(r, skipped)| (p, r, skipped)))
        .transpose()?;
    let now_unix_ms = realtime_ns() / 1_000_000;
    // Throttling is asked for over the time back to the window's start.
    let (from_unix_ms, _) = opts.window.bounds(now_unix_ms, &[]);
    let window_s = (now_unix_ms.saturating_sub(from_unix_ms) as f64 / 1e3).max(1.0);
    let (views, throttled, kills) = client::block_on(async {
        let views: Option<Vec<RequestView>> =
            client::get(endpoint, &format!("/v1/requests?limit={MAX_REQUESTS}")).await?;
        let throttled: Option<Vec<ThrottledView>> =
            client::get(endpoint, &format!("/v1/throttled?window_s={window_s}")).await?;
        let snapshot: Option<Snapshot> = client::get(endpoint, "/v1/snapshot?limit=0").await?;
        anyhow::Ok((
            views.unwrap_or_default(),
            throttled.unwrap_or_default(),
            snapshot.map(|s| s.oom_kills).unwrap_or_default(),
        ))
    })??;
    let report = build(&views, throttled, &kills, client, opts.window, now_unix_ms);
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let write = |name: &str, text: &str| {
        let path = opts.out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    let markdown = render::markdown(&report);
    write("report.html", &render::html(&report)?)?;
    write("report.md", &markdown)?;
    write("report.json", &serde_json::to_string_pretty(&report)?)?;
    print!("{markdown}");
    println!("\nreport: {}", opts.out.join("report.html").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kill(pid: u32, unix_ms: Option<u64>) -> OomKill {
        OomKill {
            mono_ns: 0,
            pid,
            comm: Some("worker".into()),
            cgroup: Some("/kubepods/pod1/ctr".into()),
            container_id: Some("0123456789abcdef0123".into()),
            pod_uid: Some("pod-1".into()),
            memory_limit_bytes: Some(64 << 20),
            trigger_pid: None,
            trigger_cgroup: None,
            unix_ms,
        }
    }

    #[test]
    fn the_kills_of_the_window_are_listed_with_their_identity() {
        let window = Window::Between {
            from_unix_ms: 1_000,
            to_unix_ms: 2_000,
        };
        let kills = [
            kill(1, Some(999)),
            kill(2, Some(1_500)),
            kill(3, None),
            kill(4, Some(2_001)),
        ];
        let report = build(&[], Vec::new(), &kills, None, window, 5_000);
        let pids: Vec<u32> = report.oom_kills.iter().map(|k| k.pid).collect();
        assert_eq!(pids, [2]);
        let md = render::markdown(&report);
        assert!(md.contains("## Killed for memory (OOM)"), "{md}");
        assert!(
            md.contains("| 1970-01-01T00:00:01Z | worker (2) | /kubepods/pod1/ctr | pod pod-1, container 0123456789ab | 64 MiB |"),
            "{md}"
        );
        let html = render::html(&report).unwrap();
        assert!(html.contains("<td>worker (2)</td>"), "{html}");
        // No kill, no section.
        let quiet = build(&[], Vec::new(), &[], None, window, 5_000);
        assert!(!render::markdown(&quiet).contains("Killed for memory"));
    }
}
