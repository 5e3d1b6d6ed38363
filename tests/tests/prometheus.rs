//! For clusters that scrape: the agent's `/metrics` (`--prometheus-listen`) is the OTLP metrics it
//! exports, as a real Prometheus (Debian's) scrapes and stores them, and `promtool` finds its
//! exposition well-formed.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use culprit_lab::{
    process::reaped::Reaped,
    run::agent::RunningAgent,
    service::otel::{AgentPorts, free_port, python_app, wait_for_port, wait_success},
};
use culprit_tests::require_root;

/// The series of `metric` Prometheus holds, as its query API answers.
fn query(web: u16, metric: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let body: serde_json::Value = ureq_get(&format!(
        "http://127.0.0.1:{web}/api/v1/query?query={metric}"
    ))?;
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn ureq_get(url: &str) -> anyhow::Result<serde_json::Value> {
    let out = Command::new("curl").args(["-sf", url]).output()?;
    anyhow::ensure!(out.status.success(), "GET {url} failed");
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn a_real_prometheus_scrapes_the_agents_metrics() -> anyhow::Result<()> {
    require_root()?;
    let dir = std::env::temp_dir().join(format!("culprit-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let metrics_port = free_port()?;
    let ports = AgentPorts::fresh()?;
    let mut args = ports.args();
    args.extend([
        "--prometheus-listen".into(),
        format!("127.0.0.1:{metrics_port}"),
    ]);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = RunningAgent::start(Duration::from_secs(1), &arg_refs)?;
    agent.next_report()?;

    // Spans from a real SDK, so that time is attributed by cause.
    let app = python_app(
        &[
            "--protocol",
            "http",
            "--endpoint",
            &ports.http_traces_url(),
            "--mode",
            "cpu",
            "--count",
            "10",
            "--gap-ms",
            "100",
            "--record",
            &dir.join("spans.json").display().to_string(),
        ],
        None,
        None,
    )?;
    wait_success(app, Duration::from_secs(60))?;
    agent.fresh_report()?;
    agent.fresh_report()?;

    // The exposition as promtool reads it.
    let text = Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{metrics_port}/metrics")])
        .output()?;
    anyhow::ensure!(text.status.success(), "no /metrics");
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(lint.stdin.as_mut().expect("stdin"), &text.stdout)?;
    let lint = lint.wait_with_output()?;
    let complaints =
        String::from_utf8_lossy(&lint.stdout).to_string() + &String::from_utf8_lossy(&lint.stderr);
    // promtool's lint warns of naming conventions too (exit 3); a malformed exposition fails.
    assert!(
        !complaints.contains("error"),
        "promtool: {complaints}\n{}",
        String::from_utf8_lossy(&text.stdout)
    );

    // Prometheus scrapes it every second.
    let web = free_port()?;
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: culprit\n    \
             static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )?;
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _prometheus = Reaped::spawn("prometheus", &mut cmd)?;
    wait_for_port(web, Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (attributed, runq) = loop {
        let attributed = query(web, "culprit_attributed_time_seconds_total")?;
        let runq = query(web, "culprit_sched_runqueue_delay_seconds_bucket")?;
        if (!attributed.is_empty() && !runq.is_empty()) || Instant::now() > deadline {
            break (attributed, runq);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        attributed
            .iter()
            .any(|s| s["metric"]["culprit_cause"].is_string()
                && s["metric"]["service_name"].is_string()),
        "no attributed time by cause and service: {attributed:?}"
    );
    assert!(!runq.is_empty(), "no run-queue histogram");
    let received = query(web, "culprit_agent_spans_received_total")?;
    let spans: f64 = received
        .first()
        .and_then(|s| s["value"][1].as_str()?.parse().ok())
        .unwrap_or(0.0);
    assert!(spans >= 10.0, "spans received: {received:?}");
    agent.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
