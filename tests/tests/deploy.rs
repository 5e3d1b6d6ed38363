//! The Kubernetes deployment, proven here: the manifests validate against the Kubernetes OpenAPI
//! schema offline; the agent runs with exactly the DaemonSet's capabilities (read from the
//! manifest) and attributes a lab scenario correctly; without any one of them it stops or
//! degrades, naming the capability; and a kubelet-like cgroup tree gives the right
//! `k8s.pod.uid` and `container.id` on what the agent exports.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use culprit_lab::{
    faults::cgroup::TempCgroup,
    process::binaries::bin_path,
    run::{agent::RunningAgent, demo::interrupt_flag, lab::Lab},
    scenario::{
        accuracy::Injected,
        plan::{Scenario, Timing},
    },
    service::otel::{AgentPorts, Sink, free_port, python_app, wait_success, workspace_root},
};
use culprit_tests::require_root;
use opentelemetry_proto::tonic::common::v1::any_value::Value;

const KUBERNETES_VERSION: &str = "1.37.0";

fn venv_bin(name: &str) -> anyhow::Result<PathBuf> {
    let p = workspace_root().join("target/venv/bin").join(name);
    anyhow::ensure!(
        p.exists(),
        "{} is missing: run `cargo xtask setup`",
        p.display()
    );
    Ok(p)
}

/// Every Kubernetes manifest under deploy/ (kustomizations are kustomize's, not the API's).
fn manifests() -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for dir in ["deploy/kubernetes", "deploy/collector"] {
        for e in std::fs::read_dir(workspace_root().join(dir))? {
            let p = e?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".yaml") && name != "kustomization.yaml" {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn validate(files: &[PathBuf]) -> anyhow::Result<std::process::Output> {
    Ok(Command::new(venv_bin("kubernetes-validate")?)
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(files)
        .output()?)
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schema() -> anyhow::Result<()> {
    let files = manifests()?;
    assert!(files.len() >= 8, "{files:?}");
    let out = validate(&files)?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("WARN"), "{text}");
    // The control: the validator does reject a manifest with a field Kubernetes does not have.
    let dir = std::env::temp_dir().join(format!("culprit-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let broken = dir.join("daemonset.yaml");
    let ds = std::fs::read_to_string(workspace_root().join("deploy/kubernetes/daemonset.yaml"))?;
    std::fs::write(
        &broken,
        ds.replace("hostPID: true", "hostPID: true\n      hostPIDs: true"),
    )?;
    assert!(!validate(&[broken])?.status.success());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The DaemonSet's container security context, read with a real YAML parser (PyYAML, from the
/// test virtualenv).
fn daemonset_capabilities() -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let script = r#"
import json, sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc.get("kind") == "DaemonSet":
        sc = doc["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        print(json.dumps(sc["capabilities"]))
"#;
    let out = Command::new(venv_bin("python")?)
        .args(["-c", script])
        .arg(workspace_root().join("deploy/kubernetes/daemonset.yaml"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let caps: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let list = |k: &str| -> Vec<String> {
        caps[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok((list("add"), list("drop")))
}

/// `setpriv` keeping exactly `caps` (Kubernetes names, e.g. `BPF`), as a container with
/// `drop: [ALL]`, `add: caps` and `allowPrivilegeEscalation: false` runs as root.
fn setpriv_prefix(caps: &[String]) -> Vec<String> {
    let keep: String = caps
        .iter()
        .map(|c| format!(",+{}", c.to_ascii_lowercase()))
        .collect();
    vec![
        "setpriv".into(),
        format!("--bounding-set=-all{keep}"),
        "--inh-caps=-all".into(),
        "--no-new-privs".into(),
    ]
}

#[test]
fn the_daemonset_capabilities_are_enough_and_each_one_is_needed() -> anyhow::Result<()> {
    require_root()?;
    let (add, drop) = daemonset_capabilities()?;
    assert_eq!(
        drop,
        ["ALL"],
        "the DaemonSet must drop every capability first"
    );
    assert!(!add.is_empty());

    // Exactly those capabilities: every probe attaches and contention is found per request.
    let stop = interrupt_flag()?;
    let mut lab = Lab::start_wrapped(stop, &setpriv_prefix(&add), &[])?;
    let health = Command::new(bin_path("culprit")?)
        .args(["status", "--json", "--socket"])
        .arg(lab.api_socket())
        .output()?;
    let health: serde_json::Value = serde_json::from_slice(&health.stdout)?;
    assert_eq!(
        health["probes_attached"], health["probes_total"],
        "not every probe attached: {health:#}"
    );
    assert_eq!(health["degraded"], false, "{health:#}");
    let run = lab.run(
        Scenario::CpuContention,
        Timing {
            reference: Duration::from_secs(3),
            fault: Duration::from_secs(6),
            ..Timing::DEMO
        },
    )?;
    lab.stop()?;
    let acc = run
        .summary
        .accuracy_by_cause
        .get(Injected::Contention.cause_name())
        .copied()
        .unwrap_or(0.0);
    assert!(
        acc >= 0.75,
        "contention accuracy {acc:.2} with the DaemonSet's capabilities"
    );

    // Any one of them missing: the agent stops or degrades, and says which one.
    for missing in &add {
        let rest: Vec<String> = add.iter().filter(|c| *c != missing).cloned().collect();
        let prefix = setpriv_prefix(&rest);
        let out = Command::new(&prefix[0])
            .args(&prefix[1..])
            .arg(bin_path("culprit")?)
            .args([
                "agent",
                "--duration",
                "2",
                "--no-otlp",
                "--no-api",
                "--output",
                "json",
            ])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let name = format!("CAP_{missing}");
        assert!(
            text.contains(&format!("missing capability {name}")),
            "without {name} the agent said:\n{text}"
        );
        if out.status.success() {
            assert!(
                text.contains("degraded"),
                "{name}: ran without saying it degraded:\n{text}"
            );
        }
    }
    Ok(())
}

const POD_UID: &str = "7d3c2b1a-0f9e-4d8c-b7a6-5f4e3d2c1b0a";
const CONTAINER_ID: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

#[test]
fn a_kubelet_cgroup_tree_gives_the_pod_uid_and_container_id() -> anyhow::Result<()> {
    require_root()?;
    // The systemd driver's layout for a Burstable pod under containerd, inside our own tree.
    let tree = TempCgroup::new_v2("culprit-test-k8s")?;
    let container: PathBuf = [
        "kubepods.slice",
        "kubepods-burstable.slice",
        &format!("kubepods-burstable-pod{}.slice", POD_UID.replace('-', "_")),
        &format!("cri-containerd-{CONTAINER_ID}.scope"),
    ]
    .iter()
    .fold(tree.path().to_path_buf(), |p, c| p.join(c));
    std::fs::create_dir_all(&container)?;

    let sink = Sink::start(free_port()?)?;
    let ports = AgentPorts::fresh()?;
    let mut args = ports.args();
    args.extend([
        "--export-endpoint".into(),
        sink.endpoint(),
        "--export-protocol".into(),
        "http/protobuf".into(),
        "--node-name".into(),
        "node-under-test".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = RunningAgent::start(Duration::from_secs(1), &args)?;
    agent.next_report()?;
    let record = std::env::temp_dir().join(format!("culprit-k8s-{}.json", std::process::id()));
    let app = python_app(
        &[
            "--protocol",
            "grpc",
            "--endpoint",
            &ports.grpc_url(),
            "--mode",
            "idle",
            "--count",
            "3",
            "--record",
            record.to_str().unwrap_or_default(),
        ],
        Some(Path::new(&container)),
        None,
    )?;
    wait_success(app, Duration::from_secs(60))?;
    let got = sink.collect(Duration::from_secs(20), |reqs| {
        reqs.iter().flat_map(|r| &r.resource_spans).count() > 0
    });
    agent.stop()?;
    let _ = std::fs::remove_file(&record);
    let resource = got
        .iter()
        .flat_map(|r| &r.resource_spans)
        .find_map(|rs| rs.resource.as_ref())
        .ok_or_else(|| anyhow::anyhow!("nothing exported"))?;
    let attr = |k: &str| {
        resource
            .attributes
            .iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
    };
    assert_eq!(attr("k8s.pod.uid").as_deref(), Some(POD_UID));
    assert_eq!(attr("container.id").as_deref(), Some(CONTAINER_ID));
    assert_eq!(attr("k8s.node.name").as_deref(), Some("node-under-test"));
    Ok(())
}
