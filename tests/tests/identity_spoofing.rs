//! Payloads that lie about who sent them: another process's pid, another pod's container id and
//! uid, another process's thread. The kernel-verified sender's own identity goes out instead,
//! the lie is counted, and none of the other process's data shows on the liar's spans.

use std::{collections::BTreeMap, time::Duration};

use culprit::model::Report;
use culprit_lab::{
    faults::{cgroup::TempCgroup, netns::PodNetwork},
    process::reaped::spawn_workload,
    service::otel::{python_app_with, wait_success},
};
use culprit_tests::{
    identity::{Setup, by_service, resource_int, resource_str, span_f64, span_str},
    require_root,
};

const POD_UID: &str = "0d9c7e4a-5b1f-4c2e-9a8d-7f6e5d4c3b2a";
const CONTAINER_ID: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddeeff00";

#[test]
fn spoofed_identities_are_replaced_by_the_senders_own_and_counted() -> anyhow::Result<()> {
    require_root()?;
    // The victim: a process in a pod's container, busy on CPU 1, watched by the agent.
    let tree = TempCgroup::new_v2("culprit-test-spoof")?;
    let pod_slice = format!(
        "kubepods.slice/kubepods-pod{}.slice",
        POD_UID.replace('-', "_")
    );
    tree.child("kubepods.slice")?;
    tree.child(&pod_slice)?;
    let container = tree.child(&format!("{pod_slice}/cri-containerd-{CONTAINER_ID}.scope"))?;
    let victim = spawn_workload(&container, Some(1), 90.0, &["hog"])?;
    let victim_pid = victim.pid().to_string();
    let pod = PodNetwork::new("id-spoof", 73)?;
    let mut setup = Setup::start("spoof", "0.0.0.0", &["--watch-pid", &victim_pid])?;
    let url = format!("http://{}:{}/v1/traces", pod.node_v4, setup.http);
    let records = [
        setup.record("pid"),
        setup.record("pod"),
        setup.record("thread"),
    ];
    let claims: [(&str, Vec<String>); 3] = [
        (
            "claims-pid",
            vec![
                "--no-pid".into(),
                "--resource".into(),
                format!("process.pid={victim_pid}"),
            ],
        ),
        (
            "claims-pod",
            vec![
                "--no-pid".into(),
                "--resource".into(),
                format!("container.id={CONTAINER_ID}"),
                "--resource".into(),
                format!("k8s.pod.uid={POD_UID}"),
            ],
        ),
        (
            "claims-thread",
            vec!["--thread-tid".into(), victim_pid.clone()],
        ),
    ];
    let mut apps = Vec::new();
    for ((service, extra), record) in claims.iter().zip(&records) {
        let mut args: Vec<&str> = vec![
            "--protocol",
            "http",
            "--endpoint",
            &url,
            "--service",
            service,
            "--mode",
            "sleep",
            "--work-ms",
            "20",
            "--count",
            "10",
            "--record",
            record,
        ];
        args.extend(extra.iter().map(String::as_str));
        // Away from the victim's CPU: nothing of it may show on these spans.
        apps.push((
            service,
            python_app_with(&pod.lab_args(), &args, None, Some(0))?,
        ));
    }
    let pids: BTreeMap<String, i64> = apps
        .iter()
        .map(|(s, a)| (s.to_string(), i64::from(a.pid())))
        .collect();
    for (_, a) in apps {
        wait_success(a, Duration::from_secs(120))?;
    }
    let got = setup.collect(&records)?;
    // A report issued after every span above was released.
    let report: Report = setup.agent.fresh_report()?;
    let services = by_service(&got);
    let mut spans_total = 0;
    for (service, own_pid) in &pids {
        let spans = &services[service];
        spans_total += spans.len();
        for (resource, span) in spans {
            assert_eq!(resource_str(resource, "culprit.identity"), Some("verified"));
            // The sender's own identity, never the victim's.
            if service == "claims-pid" {
                assert_eq!(resource_int(resource, "process.pid"), Some(*own_pid));
            }
            assert_eq!(resource_str(resource, "container.id"), None, "{service}");
            assert_eq!(resource_str(resource, "k8s.pod.uid"), None, "{service}");
            // No data of the victim: never the claimed thread, only the sender's own.
            assert_ne!(span_str(span, "culprit.join"), Some("thread"), "{service}");
            // The victim computes: its data would make a sleeping request `on_cpu`. The
            // spoofers share CPU 0 with each other and the harness, so a request's wakeup may
            // wait behind one of them (a neighbour that is not the victim, checked below).
            let cause = span_str(span, "culprit.cause");
            if span.name.starts_with("request") && cause != Some("unknown") {
                assert!(
                    matches!(cause, Some("off_cpu" | "cpu.contention")),
                    "{service}: {cause:?}"
                );
            }
            // The victim never shows as a neighbour of the sender's own waits (it runs on
            // another CPU); only through the wake chain, measured on the sender's own thread: a
            // waker of it (the agent answering its export, a kernel thread) that sat behind the
            // victim on CPU 1.
            let neighbour = span_str(span, "culprit.cpu.neighbor").unwrap_or("");
            let through_waker = span_f64(span, "culprit.waker_delay.duration").unwrap_or(0.0) > 0.0;
            assert!(
                !neighbour.ends_with(&format!("({victim_pid})")) || through_waker,
                "{service}: the victim named without a waker delay: {span:?}"
            );
        }
    }
    let mismatched = report.otlp.join.spans_identity_mismatch as usize;
    eprintln!("{mismatched} mismatches counted for {spans_total} spoofers' spans");
    // Every span of the pid and pod spoofers; the thread spoofer's request spans (its child
    // spans name no thread).
    assert!(
        mismatched >= spans_total - services["claims-thread"].len() / 2,
        "{mismatched} mismatches counted for {spans_total} spans"
    );
    drop(victim);
    Ok(())
}
