//! Locust as the lab's load generator, a real peer: `lab/locust/locustfile.py` (the phase's
//! rate spread over its users, a `traceparent` per request) writes one JSON line per request,
//! kept for `culprit report --client-results` and read back as the phase's client samples.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{generator::venv_binary, load::ClientSample, otel::workspace_root};

/// Locust's users: each sends its share of the rate, so that a slow request delays only its
/// own user's next one.
const USERS: u32 = 8;

/// Runs the lab's Locust file against `base_url` for `length` at `rate_per_s`, over `routes`,
/// writing its per-request lines to `out` (group `name`). Returns the requests as the client
/// saw them.
pub(crate) fn run(
    base_url: &str,
    rate_per_s: f64,
    length: Duration,
    routes: &[&str],
    name: &str,
    out: &Path,
) -> anyhow::Result<Vec<ClientSample>> {
    let file = workspace_root().join("lab/locust/locustfile.py");
    std::fs::write(out, "").with_context(|| format!("creating {}", out.display()))?;
    let status = Command::new(venv_binary("locust")?)
        .arg("-f")
        .arg(&file)
        .args(["--headless", "--only-summary", "--loglevel", "WARNING"])
        .args([
            "--users",
            &USERS.to_string(),
            "--spawn-rate",
            &USERS.to_string(),
        ])
        .args(["--run-time", &format!("{}s", length.as_secs().max(1))])
        .args(["--host", base_url])
        .env("CULPRIT_RESULTS", out)
        .env("RATE", format!("{rate_per_s}"))
        .env("USERS", USERS.to_string())
        .env("ROUTES", routes.join(","))
        .env("SCENARIO", name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running locust with {}", file.display()))?;
    if !status.success() {
        bail!("locust exited with {status}");
    }
    let text =
        std::fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
    Ok(samples(&text))
}

/// Each line is a request: its latency, its trace, whether it got a 200.
fn samples(text: &str) -> Vec<ClientSample> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|v| {
            Some(ClientSample {
                dispatch_lag: Duration::ZERO,
                latency: Duration::from_secs_f64(v["latency_ms"].as_f64()? / 1e3),
                ok: v["ok"] == true,
                trace_id: v["trace_id"].as_str()?.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_is_a_sample() {
        let text = r#"{"trace_id": "ab", "latency_ms": 12.5, "group": "g", "ok": true}
{"trace_id": "cd", "latency_ms": 1.0, "group": "g", "ok": false}
not json
{"latency_ms": 1.0}"#;
        let s = samples(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].latency, Duration::from_micros(12_500));
        assert!(s[0].ok && !s[1].ok);
        assert_eq!(s[1].trace_id, "cd");
    }
}
