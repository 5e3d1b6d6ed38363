//! The report and each span printed on stdout: a table for people, JSON lines for scripts.

use std::io::{self, Write as _};

use super::{OutputFormat, Report};
use crate::{join::SpanLine, printable::printable};

/// Prints one attributed span: a line of text, or `{"span": ...}` in JSON.
pub(crate) fn print_span(line: &SpanLine, format: OutputFormat) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match format {
        OutputFormat::Json => {
            serde_json::to_writer(&mut out, &serde_json::json!({ "span": line }))?;
            writeln!(out)?;
        }
        OutputFormat::Table => {
            let a = &line.attribution;
            writeln!(
                out,
                "span {} {:.1} ms pid {} cause={} ({:.0}%) on_cpu={:.1} runq={:.1} throttled={:.1} off_cpu={:.1} retransmit_wait={:.1} ms{}{} join={} coverage={:.2}",
                printable(&line.name),
                line.duration_ms,
                line.pid,
                a.cause,
                a.cause_share * 100.0,
                a.on_cpu_s * 1e3,
                a.runqueue_s * 1e3,
                a.throttled_s * 1e3,
                a.off_cpu_s * 1e3,
                a.retransmit_wait_s * 1e3,
                a.neighbour
                    .as_ref()
                    .map_or(String::new(), |n| format!(" neighbour={n}")),
                a.retransmit_peer
                    .as_ref()
                    .map_or(String::new(), |p| format!(" peer={p}")),
                a.join,
                a.coverage,
            )?;
        }
    }
    out.flush()
}

pub(crate) fn print(report: &Report, format: OutputFormat, top: usize) -> io::Result<()> {
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

pub(crate) fn render_table(report: &Report, top: usize) -> String {
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
    render_threads(&mut s, report, top);
    render_throttling(&mut s, report);
    render_connections(&mut s, report, top);
    render_listeners(&mut s, report);
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
    let o = &report.otlp;
    if o.ingress.requests > 0 {
        s.push_str(&format!(
            "otlp: {} spans in, {} joined, {} unidentified, {} exported, {} dropped (queue full), {} queued\n",
            o.ingress.spans_received,
            o.join.spans_joined,
            o.join.spans_unidentified,
            o.export.spans_exported,
            o.export.spans_dropped_queue_full,
            o.export.queue_depth
        ));
    }
    s
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn render_threads(s: &mut String, report: &Report, top: usize) {
    if report.threads.is_empty() {
        return;
    }
    s.push_str(&format!(
        "{:<24} {:>9} {:>9} {:>9} {:>9}  {}\n",
        "WATCHED THREAD",
        "ON_CPU",
        "CONTEND",
        "THROTTLE",
        "OFF_CPU",
        "TOP NEIGHBOUR (ms of its wait)"
    ));
    for t in report.threads.iter().take(top) {
        let neighbour = t.neighbours.first().map_or(String::new(), |n| {
            format!(
                "{} [{}] {:.1}",
                n.comm.as_deref().unwrap_or("?"),
                n.pid,
                ms(n.ns)
            )
        });
        s.push_str(&format!(
            "{:<24} {:>9.1} {:>9.1} {:>9.1} {:>9.1}  {}\n",
            shorten(&format!("{} [{}/{}]", t.comm, t.pid, t.tid), 24),
            ms(t.on_cpu_ns),
            ms(t.contention_ns),
            ms(t.throttled_ns),
            ms(t.off_cpu_ns),
            neighbour
        ));
    }
}

fn render_throttling(s: &mut String, report: &Report) {
    for t in report.throttling.iter().filter(|t| t.nr_throttled > 0) {
        s.push_str(&format!(
            "throttled: {} {} periods, {:.1} ms (cpu.stat) / {:.1} ms (watched threads)\n",
            t.cgroup,
            t.nr_throttled,
            ms(t.cpu_stat_throttled_ns),
            ms(t.threads_throttled_ns)
        ));
    }
}

fn render_connections(s: &mut String, report: &Report, top: usize) {
    for c in report.connections.iter().take(top) {
        s.push_str(&format!(
            "retransmits: {} -> {} pid {} x{} (~{:.0} ms lost)\n",
            c.local,
            c.remote,
            c.pid.map_or("?".to_string(), |p| p.to_string()),
            c.retransmits,
            ms(c.cost_ns)
        ));
    }
}

/// Listeners with a queue or refusals only: an idle one says nothing.
fn render_listeners(s: &mut String, report: &Report) {
    for l in report
        .listeners
        .iter()
        .filter(|l| l.queued > 0 || l.netns_overflows > 0 || l.netns_drops > 0)
    {
        s.push_str(&format!(
            "listener: {} pid {} {} queued, {} refused for a full queue ({} dropped) in its \
             namespace\n",
            l.local, l.pid, l.queued, l.netns_overflows, l.netns_drops
        ));
    }
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
    use std::time::Duration;

    use super::*;
    use crate::signals::CgroupRunq;
    use crate::signals::runqueue::WaitStats;

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
            waits_on_cpu_slot: 0,
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
