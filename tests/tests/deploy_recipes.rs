//! The cross-node recipes in `deploy/` speak the agent's vocabulary: every metric the Grafana
//! dashboard queries is one the agent exposes, every cause its queries, the TraceQL page and the
//! Collector's tail-sampling policy name is one the agent writes, and together they name every
//! kernel cause; the Collector configuration's pipelines use only components it defines.

use std::{collections::BTreeSet, process::Command};

use culprit::{cause::Cause, model::metric_names};
use culprit_lab::service::otel::workspace_root;

fn read(path: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(workspace_root().join(path))?)
}

/// The `culprit_…` metrics a PromQL query selects: a name followed by its matchers (`{`) or a
/// range (`[`); label names (`by (culprit_cause)`, `culprit_cgroup=`) are not.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("culprit_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if tail[end..].starts_with(['{', '[']) {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// The cause names in a query's `culprit.cause` comparisons and regexes (PromQL's label
/// `culprit_cause` or TraceQL's `span.culprit.cause`).
fn causes_in(query: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for key in ["culprit_cause", "span.culprit.cause"] {
        let mut rest = query;
        while let Some(at) = rest.find(key) {
            rest = rest[at + key.len()..].trim_start();
            // Only a comparison names causes (`sum by (culprit_cause)` does not).
            let Some(op) = ["=~", "!~", "!=", "="]
                .iter()
                .find(|op| rest.starts_with(**op))
            else {
                continue;
            };
            let Some(value) = rest[op.len()..].trim_start().strip_prefix('"') else {
                continue;
            };
            let close = value.find('"').unwrap_or(value.len());
            let literal = value[..close].replace("\\\\.", ".").replace("\\.", ".");
            out.extend(literal.split('|').map(str::to_string));
            rest = &value[close..];
        }
    }
    out
}

fn kernel_causes() -> BTreeSet<String> {
    Cause::KERNEL
        .iter()
        .map(|c| c.as_str().to_string())
        .collect()
}

#[test]
fn the_dashboard_queries_what_the_agent_exposes() -> anyhow::Result<()> {
    let dash: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/culprit-dashboard.json")?)?;
    let exposed: BTreeSet<String> = metric_names().into_iter().collect();
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6);
    let mut causes = BTreeSet::new();
    let mut queried: BTreeSet<String> = BTreeSet::new();
    for panel in panels {
        let source = panel["datasource"]["uid"].as_str().unwrap_or("");
        assert!(
            ["${prometheus}", "${tempo}"].contains(&source),
            "panel {} has no templated data source",
            panel["title"]
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(
            !targets.is_empty(),
            "panel {} queries nothing",
            panel["title"]
        );
        for t in targets {
            let query = t["expr"].as_str().or(t["query"].as_str()).unwrap_or("");
            for m in metrics_in(query) {
                assert!(
                    exposed.contains(&m),
                    "{m} (panel {}) is not exposed: {exposed:?}",
                    panel["title"]
                );
                queried.insert(m);
            }
            causes.extend(causes_in(query));
        }
    }
    // The check sees the dashboard's metrics at all.
    assert!(queried.len() >= 8, "{queried:?}");
    let known: BTreeSet<String> = Cause::ALL.iter().map(|c| c.as_str().to_string()).collect();
    assert!(
        causes.is_subset(&known),
        "unknown causes: {:?}",
        causes.difference(&known)
    );
    assert_eq!(causes, kernel_causes(), "the dashboard's kernel causes");
    Ok(())
}

#[test]
fn the_traceql_page_names_only_the_agents_causes() -> anyhow::Result<()> {
    let page = read("deploy/tempo/traceql.md")?.replace("\\|", "|");
    let causes = causes_in(&page);
    let known: BTreeSet<String> = Cause::ALL.iter().map(|c| c.as_str().to_string()).collect();
    assert!(
        causes.is_subset(&known),
        "unknown causes: {:?}",
        causes.difference(&known)
    );
    assert!(kernel_causes().is_subset(&causes), "{causes:?}");
    Ok(())
}

#[test]
fn the_tail_sampling_policy_keeps_every_kernel_cause() -> anyhow::Result<()> {
    // PyYAML from the test virtualenv: a real YAML parser.
    // The ConfigMap's `collector.yaml`, the Collector's configuration.
    let script = "import json, sys, yaml\n\
                  cm = yaml.safe_load(open(sys.argv[1]))\n\
                  print(json.dumps(yaml.safe_load(cm['data']['collector.yaml'])))";
    let out = Command::new(workspace_root().join("target/venv/bin/python"))
        .args(["-c", script])
        .arg(workspace_root().join("deploy/collector/tail-sampling.yaml"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let policies = config["processors"]["tail_sampling"]["policies"]
        .as_array()
        .expect("policies");
    let kernel = policies
        .iter()
        .find(|p| p["string_attribute"]["key"] == "culprit.cause")
        .expect("a culprit.cause policy");
    let values: BTreeSet<String> = kernel["string_attribute"]["values"]
        .as_array()
        .expect("values")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    assert_eq!(values, kernel_causes());
    // Every component a pipeline names is defined.
    for (name, pipeline) in config["service"]["pipelines"]
        .as_object()
        .expect("pipelines")
    {
        for kind in ["receivers", "processors", "exporters"] {
            for c in pipeline[kind].as_array().into_iter().flatten() {
                let c = c.as_str().unwrap_or("");
                assert!(
                    config[kind].get(c).is_some(),
                    "pipeline {name} names {kind} {c}, which is not defined"
                );
            }
        }
    }
    Ok(())
}
