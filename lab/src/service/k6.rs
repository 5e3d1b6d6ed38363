//! k6 as the lab's load generator, a real peer: the script in `lab/k6/load.js` (open loop at
//! the phase's rate, a `traceparent` and a `trace_id` tag per request), its `--out json`
//! results kept for `culprit report --k6` and read back as the phase's client samples.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{generator::venv_binary, load::ClientSample, otel::workspace_root};

/// Runs the lab's k6 script against `base_url` for `length` at `rate_per_s`, over `routes`,
/// writing its results to `out_json`; the k6 scenario is named `name` (each point's `scenario`
/// tag). Returns the requests as the client saw them.
pub(crate) fn run(
    base_url: &str,
    rate_per_s: f64,
    length: Duration,
    routes: &[&str],
    name: &str,
    out_json: &Path,
) -> anyhow::Result<Vec<ClientSample>> {
    let script = workspace_root().join("lab/k6/load.js");
    let status = Command::new(venv_binary("k6")?)
        .args([
            "run",
            "--quiet",
            "--no-summary",
            "--no-usage-report",
            "--out",
        ])
        .arg(format!("json={}", out_json.display()))
        .arg(&script)
        .env("BASE_URL", base_url)
        .env("RATE", format!("{}", rate_per_s.round().max(1.0)))
        .env("DURATION", format!("{}ms", length.as_millis()))
        .env("ROUTES", routes.join(","))
        .env("SCENARIO", name)
        .env("K6_NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running k6 with {}", script.display()))?;
    if !status.success() {
        bail!("k6 exited with {status}");
    }
    let text = std::fs::read_to_string(out_json)
        .with_context(|| format!("reading {}", out_json.display()))?;
    Ok(samples(&text))
}

/// Each `http_req_duration` point is a request: its latency, its trace, whether it got a 200.
fn samples(text: &str) -> Vec<ClientSample> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["type"] == "Point" && v["metric"] == "http_req_duration")
        .filter_map(|v| {
            let data = &v["data"];
            Some(ClientSample {
                dispatch_lag: Duration::ZERO,
                latency: Duration::from_secs_f64(data["value"].as_f64()? / 1e3),
                ok: data["tags"]["status"] == "200",
                trace_id: data["tags"]["trace_id"].as_str()?.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_durations_are_the_samples() {
        let text = r#"{"type":"Point","metric":"http_req_duration","data":{"value":12.5,"tags":{"status":"200","trace_id":"ab"}}}
{"type":"Point","metric":"http_req_waiting","data":{"value":12.0,"tags":{"status":"200","trace_id":"ab"}}}
{"type":"Point","metric":"http_req_duration","data":{"value":1.0,"tags":{"status":"502","trace_id":"cd"}}}
{"type":"Point","metric":"http_req_duration","data":{"value":1.0,"tags":{"status":"200"}}}"#;
        let s = samples(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].latency, Duration::from_micros(12_500));
        assert!(s[0].ok && !s[1].ok);
        assert_eq!(s[1].trace_id, "cd");
    }
}
