//! What the agent prints every interval: a table for people, JSON lines for scripts.

use std::{
    collections::BTreeMap,
    io::{self, Write as _},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{cli::OutputFormat, runqueue::CgroupRunq};

#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub unix_time_ms: u64,
    pub interval_ms: u64,
    /// Cgroups with run-queue activity in the interval, most total wait first.
    pub cgroups: Vec<CgroupRunq>,
    /// Kernel-side losses since start, by counter.
    pub drops: BTreeMap<String, u64>,
    /// Signals running without some of their hooks.
    pub degraded: Vec<String>,
}

impl Report {
    pub fn new(interval: Duration) -> Self {
        Self {
            unix_time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            interval_ms: interval.as_millis() as u64,
            cgroups: Vec::new(),
            drops: BTreeMap::new(),
            degraded: Vec::new(),
        }
    }
}

pub fn print(report: &Report, format: OutputFormat, top: usize) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match format {
        OutputFormat::Json => {
            serde_json::to_writer(&mut out, report)?;
            writeln!(out)?;
        }
        OutputFormat::Table => out.write_all(render_table(report, top).as_bytes())?,
    }
    out.flush()
}

const PATH_WIDTH: usize = 48;

pub fn render_table(report: &Report, top: usize) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "\nrun-queue delay by cgroup, last {:.1}s ({} active, top {} by total wait)\n",
        report.interval_ms as f64 / 1000.0,
        report.cgroups.len(),
        top.min(report.cgroups.len()),
    ));
    s.push_str(&format!(
        "{:<PATH_WIDTH$} {:>8} {:>10} {:>10} {:>10} {:>10}\n",
        "CGROUP", "WAITS", "TOTAL_MS", "MEAN_US", "P50_US", "P99_US"
    ));
    for row in report.cgroups.iter().take(top) {
        let st = &row.stats;
        s.push_str(&format!(
            "{:<PATH_WIDTH$} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>10.1}\n",
            shorten(&row.cgroup, PATH_WIDTH),
            st.waits,
            st.total_wait_ns as f64 / 1e6,
            st.mean_wait_ns as f64 / 1e3,
            st.p50_wait_ns as f64 / 1e3,
            st.p99_wait_ns as f64 / 1e3,
        ));
    }
    let lost: u64 = report.drops.values().sum();
    if lost > 0 {
        let detail: Vec<String> = report
            .drops
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        s.push_str(&format!("kernel events lost: {}\n", detail.join(" ")));
    }
    for d in &report.degraded {
        s.push_str(&format!("degraded: {d}\n"));
    }
    s
}

/// Keeps the end of long paths: the leaf cgroup is the informative part.
fn shorten(path: &str, width: usize) -> String {
    let chars: Vec<char> = path.chars().collect();
    if chars.len() <= width {
        return path.to_string();
    }
    let tail: String = chars[chars.len() - (width - 1)..].iter().collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runqueue::WaitStats;

    fn row(path: &str, total_wait_ns: u64) -> CgroupRunq {
        CgroupRunq {
            cgroup_id: 7,
            cgroup: path.to_string(),
            stats: WaitStats {
                waits: 10,
                total_wait_ns,
                mean_wait_ns: total_wait_ns / 10,
                p50_wait_ns: 1_500,
                p99_wait_ns: 90_000,
            },
        }
    }

    #[test]
    fn table_has_one_line_per_row_up_to_top() {
        let mut r = Report::new(Duration::from_secs(2));
        r.cgroups = vec![row("/a", 3_000_000), row("/b", 2_000_000), row("/c", 1)];
        let table = render_table(&r, 2);
        assert!(table.contains("/a") && table.contains("/b") && !table.contains("/c"));
        assert!(table.contains("3.0"), "{table}");
        assert!(table.contains("90.0"), "{table}");
        assert!(!table.contains("lost"));
    }

    #[test]
    fn losses_and_degradation_are_shown() {
        let mut r = Report::new(Duration::from_secs(1));
        r.drops.insert("runq_hist_map_full".into(), 3);
        r.drops.insert("task_read_failed".into(), 0);
        r.degraded
            .push("run_queue_delay: sched_switch not attached".into());
        let table = render_table(&r, 10);
        assert!(table.contains("runq_hist_map_full=3"));
        assert!(!table.contains("task_read_failed"));
        assert!(table.contains("degraded: run_queue_delay"));
    }

    #[test]
    fn long_paths_keep_their_leaf() {
        let long = format!("/{}/leaf", "x".repeat(100));
        let short = shorten(&long, 20);
        assert_eq!(short.chars().count(), 20);
        assert!(short.ends_with("/leaf"));
        assert_eq!(shorten("/a", 20), "/a");
    }

    #[test]
    fn json_is_one_line_with_flat_stats() {
        let mut r = Report::new(Duration::from_secs(1));
        r.cgroups = vec![row("/a", 10)];
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["cgroups"][0]["cgroup"], "/a");
        assert_eq!(v["cgroups"][0]["p99_wait_ns"], 90_000);
    }
}
