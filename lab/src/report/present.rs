//! What the lab prints for a scenario, its verdict, and the accuracy table of ACCURACY.md.

use std::fmt::Write as _;

use culprit::cause::Part;

use crate::scenario::{
    accuracy::{Parts, Request},
    outcome::ScenarioRun,
    plan::Scenario,
};

/// Accuracy goal per fault scenario, and the ceiling on kernel blame in the baseline.
const ACCURACY_GOAL: f64 = 0.90;
const BASELINE_KERNEL_SHARE_GOAL: f64 = 0.05;
/// Below this share a cause is not considered found at all.
const FOUND_FLOOR: f64 = 0.5;

/// Whether the injected cause was found, with the sentence that says so.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub found: bool,
    pub text: String,
}

pub fn verdict(run: &ScenarioRun) -> Verdict {
    let s = &run.summary;
    if let Some(oom) = &run.oom {
        let killed = oom.truth.killed_pids.len();
        return Verdict {
            found: killed > 0 && oom.reported == killed && oom.identified == killed,
            text: oom_text(oom),
        };
    }
    if run.scenario == Scenario::Baseline {
        let found = s.kernel_share < BASELINE_KERNEL_SHARE_GOAL;
        return Verdict {
            found,
            text: format!(
                "{}: {:.1}% of request time blamed on a kernel cause (goal < {:.0}%)",
                if found {
                    "nothing injected, nothing blamed"
                } else {
                    "NOISE: kernel causes blamed with nothing injected"
                },
                s.kernel_share * 100.0,
                BASELINE_KERNEL_SHARE_GOAL * 100.0
            ),
        };
    }
    let mut found = true;
    let mut parts = Vec::new();
    for injected in run.scenario.fault_phases().into_iter().flatten() {
        let name = injected.cause_name();
        match s.accuracy_by_cause.get(name) {
            Some(&acc) => {
                let ok = acc >= FOUND_FLOOR;
                found &= ok;
                parts.push(format!(
                    "{name} {}: {:.0}% of the slow requests' excess latency attributed to it \
                     (goal >= {:.0}%){}",
                    if ok { "FOUND" } else { "MISSED" },
                    acc * 100.0,
                    ACCURACY_GOAL * 100.0,
                    s.label_by_cause
                        .get(name)
                        .map_or(String::new(), |l| format!(
                            ", {:.0}% of them labelled {name}",
                            l * 100.0
                        ))
                ));
            }
            None => {
                found = false;
                parts.push(format!("{name} MISSED: no slow request fell in its phase"));
            }
        }
    }
    if let Some(named) = run.hog_named_share() {
        parts.push(format!(
            "the hog named as neighbour in {:.0}% of the slow contended requests",
            named * 100.0
        ));
    }
    if let Some(t) = &run.throttle {
        parts.push(format!(
            "throttled {:.0} ms by the agent vs {:.0} ms in cpu.stat ({:+.1}%)",
            t.agent_ms,
            t.cpu_stat_ms,
            t.relative_error() * 100.0
        ));
    }
    Verdict {
        found,
        text: parts.join("; "),
    }
}

/// The OOM kills the kernel made and what the agent reported of them.
fn oom_text(oom: &crate::scenario::outcome::OomOutcome) -> String {
    format!(
        "{} OOM kills by the kernel, {} reported by the agent, {} of them with the job's cgroup \
         ({}) and the {} MiB limit",
        oom.truth.killed_pids.len(),
        oom.reported,
        oom.identified,
        oom.truth.cgroup,
        oom.truth.limit_bytes >> 20
    )
}

/// `on_cpu 40% | cpu.contention 45% | …` for the parts that are not negligible.
pub(crate) fn shares_line(parts: &Parts) -> String {
    let total: f64 = parts.values().iter().sum();
    if total <= 0.0 {
        return "no time observed".into();
    }
    parts
        .each()
        .filter(|(_, v)| *v / total >= 0.005)
        .map(|(part, v)| format!("{} {:.0}%", part.name(), v / total * 100.0))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// One request's full decomposition, on one line.
pub(crate) fn decomposition(r: &Request) -> String {
    let mut out = format!(
        "{} {:.1} ms (trace {}) cause={}: ",
        r.route, r.latency_ms, r.trace_id, r.cause
    );
    let items: Vec<String> = r
        .parts
        .each()
        .filter(|(_, v)| *v >= 0.05)
        .map(|(part, v)| {
            let who = match part {
                Part::Contention => r.neighbour.as_ref().map(|n| format!(" (neighbour {n})")),
                Part::Retransmit => r.retransmit_peer.as_ref().map(|p| format!(" (peer {p})")),
                _ => None,
            };
            format!("{} {v:.1} ms{}", part.name(), who.unwrap_or_default())
        })
        .collect();
    out.push_str(&items.join(", "));
    if let Some(w) = &r.waker {
        out.push_str(&format!("; woken by {w}"));
    }
    out
}

/// The block the demo prints for one scenario.
pub(crate) fn scenario_text(run: &ScenarioRun) -> String {
    let s = &run.summary;
    let mut out = String::new();
    let _ = writeln!(out, "\n== {}: {}", run.scenario, run.description);
    let _ = writeln!(
        out,
        "   requests {} ({} failed at the client), latency p50 {:.1} ms, p99 {:.1} ms \
         (client p99 {:.1} ms, sent up to {:.1} ms late by the lab's load generator, p99)",
        s.requests,
        run.client.failed,
        s.p50_ms,
        s.p99_ms,
        run.client.p99_ms,
        run.client.dispatch_lag_p99_ms
    );
    let _ = writeln!(
        out,
        "   time by cause, all requests:  {}",
        shares_line(&s.total)
    );
    let _ = writeln!(
        out,
        "   time by cause, slowest 10%:   {}",
        shares_line(&s.slow_total)
    );
    if let Some(r) = run.slowest() {
        let _ = writeln!(out, "   slowest: {}", decomposition(r));
    }
    let v = verdict(run);
    let _ = writeln!(out, "   => {}", v.text);
    if (run.spans_received as u64) < run.spans_expected {
        let _ = writeln!(
            out,
            "   (the agent decomposed {} of the {} request spans the service ended)",
            run.spans_received, run.spans_expected
        );
    }
    let j = &run.thread_join;
    let joins: Vec<String> = j.by_join.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(
        out,
        "   joined with the thread that served them (the service's record): {} of {} ({:.0}%; {} \
         with another, {} with none; by {})",
        j.right,
        j.requests,
        100.0 * j.right_share(),
        j.wrong,
        j.ambiguous,
        joins.join(", ")
    );
    out
}

/// `cause 97%, cause 100%`, or `none` for an empty map.
fn shares_by_cause(by_cause: &std::collections::BTreeMap<String, f64>, none: &str) -> String {
    if by_cause.is_empty() {
        return none.to_string();
    }
    by_cause
        .iter()
        .map(|(c, share)| format!("{c} {:.0}%", share * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The accuracy table (Markdown) for ACCURACY.md.
pub(crate) fn accuracy_markdown(runs: &[ScenarioRun]) -> String {
    let mut out = String::from(
        "| scenario | requests | p50 ms | p99 ms | accuracy (slow requests' excess on the injected cause) | slowed slow requests labelled with it | kernel share of all request time | throttled: agent vs cpu.stat | requests < 1 ms decomposed |\n\
         |---|---:|---:|---:|---|---|---:|---|---:|\n",
    );
    for run in runs {
        let s = &run.summary;
        let accuracy = match &run.oom {
            Some(oom) => oom_text(oom),
            None => shares_by_cause(&s.accuracy_by_cause, "n/a (nothing injected)"),
        };
        let labels = shares_by_cause(&s.label_by_cause, "n/a");
        let throttle = run.throttle.as_ref().map_or("".to_string(), |t| {
            format!(
                "{:.0} vs {:.0} ms ({:+.1}%)",
                t.agent_ms,
                t.cpu_stat_ms,
                t.relative_error() * 100.0
            )
        });
        let short = if s.short_requests == 0 {
            "none".to_string()
        } else {
            format!(
                "{} of {} ({:.0}%)",
                s.short_decomposed,
                s.short_requests,
                s.short_decomposed as f64 * 100.0 / s.short_requests as f64
            )
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {} | {} | {:.1}% | {} | {} |",
            run.scenario,
            s.requests,
            s.p50_ms,
            s.p99_ms,
            accuracy,
            labels,
            s.kernel_share * 100.0,
            throttle,
            short
        );
    }
    out
}
