//! A worker over its cgroup's memory limit is killed by the kernel: the agent reports the kill
//! as an OTLP log record with the victim's identity (process, name, cgroup, the limit it hit),
//! exported to a receiver, and counts it in `culprit.oom.kills`.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use culprit_lab::{
    faults::cgroup::TempCgroup,
    process::binaries::bin_path,
    run::agent::RunningAgent,
    service::otel::{AgentPorts, Sink, free_port},
};
use culprit_tests::require_root;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};

const LIMIT_BYTES: u64 = 64 << 20;

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
}

#[test]
fn an_oom_kill_is_exported_as_a_log_record_with_its_identity() -> anyhow::Result<()> {
    require_root()?;
    let sink = Sink::start(free_port()?)?;
    let ports = AgentPorts::fresh()?;
    let mut args = ports.args();
    args.extend([
        "--export-endpoint".into(),
        sink.endpoint(),
        "--export-protocol".into(),
        "http/protobuf".into(),
    ]);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = RunningAgent::start(Duration::from_secs(1), &arg_refs)?;
    agent.next_report()?;

    // The worker in a memory cgroup limited to 64 MiB, asking for 512 MiB; where that cgroup
    // is a v1 one (hybrid hosts), in a v2 cgroup of its own too: its identity.
    let root = culprit::find_cgroup2_mount()?;
    let memory = TempCgroup::new_memory("culprit-oom-mem")?;
    memory.set_memory_max(LIMIT_BYTES)?;
    let identity = match memory.path().starts_with(&root) {
        true => None,
        false => Some(TempCgroup::new_v2("culprit-oom")?),
    };
    let v2_cgroup = identity.as_ref().unwrap_or(&memory).path().to_path_buf();
    let mut cmd = Command::new(bin_path("culprit-lab")?);
    cmd.arg("--cgroup").arg(&v2_cgroup);
    if identity.is_some() {
        cmd.arg("--cgroup").arg(memory.path());
    }
    let mut hog = cmd
        .args(["--seconds", "30", "memory-hog", "--mib", "512"])
        .stdin(Stdio::null())
        .spawn()?;
    let pid = hog.id();
    let status = hog.wait()?;
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(
        status.signal(),
        Some(9),
        "the worker was not killed: {status:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    let record = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(req) = sink.next_logs(left) else {
            anyhow::bail!("no OOM log record for pid {pid} within 15 s");
        };
        let found = req
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
            .find(|r| {
                matches!(attr(&r.attributes, "process.pid"), Some(Value::IntValue(p)) if *p == i64::from(pid))
            })
            .cloned();
        if let Some(r) = found {
            break r;
        }
    };
    assert!(
        matches!(attr(&record.attributes, "event.name"), Some(Value::StringValue(e)) if e == "culprit.oom_kill"),
        "{record:?}"
    );
    assert!(
        matches!(attr(&record.attributes, "process.executable.name"), Some(Value::StringValue(c)) if c == "culprit-lab"),
        "{record:?}"
    );
    let v2_path = format!("/{}", v2_cgroup.strip_prefix(&root)?.display());
    assert!(
        matches!(attr(&record.attributes, "culprit.cgroup"), Some(Value::StringValue(c)) if *c == v2_path),
        "the victim's cgroup is not {v2_path}: {record:?}"
    );
    assert!(
        matches!(attr(&record.attributes, "culprit.oom.memory_limit_bytes"), Some(Value::IntValue(b)) if *b == LIMIT_BYTES as i64),
        "the limit it hit is not 64 MiB: {record:?}"
    );
    // `culprit report` of the last minutes lists it, with its cgroup and limit.
    let out = std::env::temp_dir().join(format!("culprit-oom-report-{}", std::process::id()));
    let status = Command::new(bin_path("culprit")?)
        .args(["report", "--since", "5m", "--socket"])
        .arg(agent.api_socket())
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .status()?;
    assert!(status.success(), "culprit report: {status}");
    let report: culprit::tools::load_report::render::LoadReport =
        serde_json::from_slice(&std::fs::read(out.join("report.json"))?)?;
    let listed = report
        .oom_kills
        .iter()
        .find(|k| k.pid == pid)
        .unwrap_or_else(|| {
            panic!(
                "the kill of {pid} is not in the report: {:?}",
                report.oom_kills
            )
        });
    assert_eq!(listed.cgroup.as_deref(), Some(v2_path.as_str()));
    assert_eq!(listed.memory_limit_bytes, Some(LIMIT_BYTES));
    let markdown = std::fs::read_to_string(out.join("report.md"))?;
    assert!(
        markdown.contains(&format!("culprit-lab ({pid})")),
        "{markdown}"
    );
    let _ = std::fs::remove_dir_all(&out);

    // The kill is in the agent's report too, and the counter moved.
    let report = agent.fresh_report()?;
    assert!(
        report.drops.get("oom_ring_full").copied().unwrap_or(0) == 0,
        "{:?}",
        report.drops
    );
    agent.stop()?;
    Ok(())
}
