//! Scoring the join of concurrent requests with the threads that served them: a service records
//! the truth the agent cannot read (each span's serving thread, for some its CPU time), the agent
//! prints every span's decomposition, and the score counts the requests joined with their own
//! thread, with another request's, or with none.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use culprit::model::SpanLine;
use serde::{Deserialize, Serialize};

/// What a service recorded of one span it served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub span_id: String,
    /// The route, where the service records it.
    pub route: String,
    pub tid: u32,
    /// The CPU time the request took, where the service measures it.
    pub cpu_ns: Option<u64>,
}

/// Reads (and removes) a service's record: a JSON array of `{spanId, route?, tid, cpuNs?}`.
pub fn served_from(record: &Path) -> anyhow::Result<Vec<Served>> {
    let all: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(record)?)?;
    std::fs::remove_file(record).ok();
    Ok(all.iter().map(served_of).collect())
}

fn served_of(v: &serde_json::Value) -> Served {
    Served {
        span_id: v["spanId"].as_str().unwrap_or_default().to_string(),
        route: v["route"].as_str().unwrap_or_default().to_string(),
        tid: v["tid"].as_u64().unwrap_or_default() as u32,
        cpu_ns: v["cpuNs"].as_u64(),
    }
}

/// How the agent joined a service's spans with the threads that served them, against the
/// service's own record: the lab's scenarios send stock spans (no thread, no `process.pid`), so
/// every join there is the agent's own finding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadJoin {
    /// Spans the service recorded and the agent printed.
    pub requests: usize,
    /// Joined with the thread that served them.
    pub right: usize,
    /// Joined with another thread.
    pub wrong: usize,
    /// Joined with no thread (`process`: the agent could not tell).
    pub ambiguous: usize,
    /// Spans by how the agent joined them (`culprit.join`).
    pub by_join: BTreeMap<String, usize>,
}

impl ThreadJoin {
    pub fn of(served: &[Served], spans: &[SpanLine]) -> Self {
        let by_id: BTreeMap<&str, &SpanLine> =
            spans.iter().map(|l| (l.span_id.as_str(), l)).collect();
        let mut join = Self::default();
        for (s, l) in served
            .iter()
            .filter_map(|s| by_id.get(s.span_id.as_str()).map(|l| (s, l)))
        {
            join.requests += 1;
            *join.by_join.entry(l.attribution.join.clone()).or_default() += 1;
            match l.tid {
                Some(tid) if tid == s.tid => join.right += 1,
                Some(_) => join.wrong += 1,
                None => join.ambiguous += 1,
            }
        }
        join
    }

    /// The share joined with their own thread (1 with none to join).
    pub fn right_share(&self) -> f64 {
        if self.requests == 0 {
            return 1.0;
        }
        self.right as f64 / self.requests as f64
    }
}

/// How the agent joined the served requests.
pub struct Score<'a> {
    pub scored: Vec<(&'a Served, &'a SpanLine)>,
    /// Joined with their own thread by one of the expected joins.
    pub right: usize,
    /// Joined with another thread: (route, true thread, the agent's).
    pub wrong: Vec<(&'a str, u32, Option<u32>)>,
    pub ambiguous: usize,
    /// Decomposed as their route's work.
    pub causes_right: usize,
}

impl<'a> Score<'a> {
    /// Every served request the agent printed, but those of the first second (sent before the
    /// agent watched the service); right when joined with its own thread by one of `joins`, its
    /// cause right when `cause_right` says so.
    pub fn of(
        served: &'a [Served],
        lines: &'a BTreeMap<String, SpanLine>,
        joins: &[&str],
        cause_right: impl Fn(&Served, &SpanLine) -> bool,
    ) -> Self {
        let first = served
            .iter()
            .filter_map(|s| lines.get(&s.span_id))
            .map(|l| l.start_mono_ns)
            .min()
            .unwrap_or(0);
        let scored: Vec<(&Served, &SpanLine)> = served
            .iter()
            .filter_map(|s| lines.get(&s.span_id).map(|l| (s, l)))
            .filter(|(_, l)| l.start_mono_ns > first + 1_000_000_000)
            .collect();
        let right = scored
            .iter()
            .filter(|(s, l)| l.tid == Some(s.tid) && joins.contains(&l.attribution.join.as_str()))
            .count();
        let wrong = scored
            .iter()
            .filter(|(s, l)| l.tid.is_some_and(|t| t != s.tid))
            .map(|(s, l)| (s.route.as_str(), s.tid, l.tid))
            .collect();
        let ambiguous = scored
            .iter()
            .filter(|(_, l)| l.attribution.join == "process")
            .count();
        let causes_right = scored.iter().filter(|(s, l)| cause_right(s, l)).count();
        Self {
            scored,
            right,
            wrong,
            ambiguous,
            causes_right,
        }
    }

    /// Requests by (route, join, cause): what the score is made of.
    pub fn by_route(&self) -> BTreeMap<(String, String, String), usize> {
        let mut out = BTreeMap::new();
        for (s, l) in &self.scored {
            let route = if s.route.is_empty() {
                l.name.clone()
            } else {
                s.route.clone()
            };
            let key = (
                route,
                l.attribution.join.clone(),
                l.attribution.cause.as_str().to_string(),
            );
            *out.entry(key).or_default() += 1;
        }
        out
    }

    pub fn row(&self, app: &str, load: &str, join: &str) -> JoinRow {
        JoinRow {
            app: app.to_string(),
            load: load.to_string(),
            join: join.to_string(),
            requests: self.scored.len(),
            right: self.right,
            wrong: self.wrong.len(),
            ambiguous: self.ambiguous,
            causes_right: self.causes_right,
        }
    }
}

/// One line of the concurrency table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRow {
    pub app: String,
    pub load: String,
    /// How the requests should be joined.
    pub join: String,
    pub requests: usize,
    pub right: usize,
    pub wrong: usize,
    pub ambiguous: usize,
    pub causes_right: usize,
}

fn share(n: usize, of: usize) -> String {
    if of == 0 {
        return "-".into();
    }
    format!("{n} of {of} ({:.0}%)", 100.0 * n as f64 / of as f64)
}

/// The concurrency table, in markdown.
pub fn markdown(rows: &[JoinRow]) -> String {
    let mut s = String::from(
        "| app | load | join | joined with their own thread | with another | ambiguous | \
         decomposed as their route's work |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | `{}` | {} | {} | {} | {} |",
            r.app,
            r.load,
            r.join,
            share(r.right, r.requests),
            r.wrong,
            r.ambiguous,
            share(r.causes_right, r.requests)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use culprit::{cause::Cause, model::Attribution};

    use super::*;

    fn line(span_id: &str, start_s: u64, tid: Option<u32>, join: &str, cause: &str) -> SpanLine {
        SpanLine {
            trace_id: String::new(),
            span_id: span_id.into(),
            name: "GET /x".into(),
            service: None,
            pid: 1,
            tid,
            start_mono_ns: start_s * 1_000_000_000,
            duration_ms: 1.0,
            attribution: Attribution {
                join: join.into(),
                cause: Cause::parse(cause).unwrap(),
                ..Attribution::default()
            },
        }
    }

    #[test]
    fn requests_are_right_wrong_or_ambiguous_after_the_first_second() {
        let served: Vec<Served> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|id| served_of(&serde_json::json!({ "spanId": id, "tid": 7, "route": "/x" })))
            .collect();
        let lines: BTreeMap<String, SpanLine> = [
            line("a", 10, Some(7), "context", "on_cpu"),
            line("b", 12, Some(7), "context", "on_cpu"),
            line("c", 12, Some(8), "thread.inferred", "on_cpu"),
            line("d", 12, None, "process", "unknown"),
            line("e", 12, Some(7), "thread.inferred", "off_cpu"),
        ]
        .into_iter()
        .map(|l| (l.span_id.clone(), l))
        .collect();
        let score = Score::of(&served, &lines, &["context"], |_, l| {
            l.attribution.cause == "on_cpu"
        });
        // "a" came in the first second.
        assert_eq!(score.scored.len(), 4);
        assert_eq!(
            (score.right, score.ambiguous, score.causes_right),
            (1, 1, 2)
        );
        assert_eq!(score.wrong, vec![("/x", 7, Some(8))]);
        let table = markdown(&[score.row("app", "load", "context")]);
        assert!(
            table.contains("| 1 of 4 (25%) | 1 | 1 | 2 of 4 (50%) |"),
            "{table}"
        );
    }

    #[test]
    fn a_thread_join_counts_every_recorded_span_the_agent_printed_by_its_thread() {
        let served: Vec<Served> = [("a", 7), ("b", 7), ("c", 8), ("d", 9), ("gone", 7)]
            .iter()
            .map(|(id, tid)| served_of(&serde_json::json!({ "spanId": id, "tid": tid })))
            .collect();
        let spans = [
            line("a", 1, Some(7), "thread.inferred", "on_cpu"),
            line("b", 1, Some(8), "thread.inferred", "on_cpu"),
            line("c", 1, Some(8), "context", "on_cpu"),
            line("d", 1, None, "process", "unknown"),
            line("unrecorded", 1, Some(7), "thread.inferred", "on_cpu"),
        ];
        let j = ThreadJoin::of(&served, &spans);
        assert_eq!((j.requests, j.right, j.wrong, j.ambiguous), (4, 2, 1, 1));
        assert_eq!(j.by_join["thread.inferred"], 2);
        assert_eq!(j.by_join["context"], 1);
        assert_eq!(j.by_join["process"], 1);
        assert_eq!(j.right_share(), 0.5);
        assert_eq!(ThreadJoin::default().right_share(), 1.0);
    }
}
