//! Who sent each span, as a cluster has it: stock SDKs that send no `process.pid`, in the host's
//! network namespace, in a pod-like namespace of their own behind a veth pair, and on the unix
//! sockets; the agent on `0.0.0.0` (as a plain config has it) and on one node address (IPv6, as
//! the DaemonSet binds `status.hostIP`). Every sender is verified by the kernel, and a CPU hog on
//! the pod app's CPU is blamed on its requests.

use std::{net::SocketAddrV4, time::Duration};

use culprit_lab::{
    faults::{cgroup::TempCgroup, netns::PodNetwork, port_forward::PortForward},
    process::reaped::spawn_workload,
    service::otel::{free_port, python_app_with, wait_success},
};
use culprit_tests::{
    identity::{Setup, assert_verified, by_service, rust_app, span_str},
    require_root,
};
use opentelemetry_proto::tonic::trace::v1::Span;

const WORK_MS: f64 = 30.0;

/// Where the agent listens, and how each sender reaches it.
struct Binding {
    tag: &'static str,
    subnet: u8,
    /// The receivers' host: `0.0.0.0`, or the node's address.
    listen: fn(&PodNetwork) -> String,
    /// The host the host-namespace HTTP app dials.
    host_app_dials: fn(&PodNetwork) -> String,
    /// The node's address as the pod dials it.
    node: fn(&PodNetwork) -> String,
    /// Also send through a hostPort (an IPv4 DNAT).
    hostport: bool,
}

fn senders_are_verified(b: &Binding) -> anyhow::Result<()> {
    require_root()?;
    let pod = PodNetwork::new(b.tag, b.subnet)?;
    // A hostPort in front of the HTTP receiver: the pod dials another port, a DNAT forwards it.
    let host_port = free_port()?;
    let mut setup = Setup::start(
        b.tag,
        &(b.listen)(&pod),
        &["--otlp-dialled-port", &host_port.to_string()],
    )?;
    let _forward = b
        .hostport
        .then(|| {
            PortForward::new(
                pod.node_v4,
                host_port,
                SocketAddrV4::new(pod.node_v4, setup.http),
            )
        })
        .transpose()?;
    let in_pod = pod.lab_args();
    let node = (b.node)(&pod);
    let cg = TempCgroup::new_v2(&format!("culprit-test-identity-{}", b.tag))?;
    // A noisy neighbour on the pod app's CPU.
    let _hog = spawn_workload(&cg.child("hog")?, Some(0), 90.0, &["hog", "--threads", "2"])?;
    let names = [
        "host",
        "node",
        "pod",
        "rust",
        "grpc-unix",
        "http-unix",
        "hostport",
    ];
    let records: Vec<String> = names.iter().map(|n| setup.record(n)).collect();
    let host_url = format!(
        "http://{}:{}/v1/traces",
        (b.host_app_dials)(&pod),
        setup.http
    );
    let node_grpc = format!("http://{node}:{}", setup.grpc);
    let pod_url = format!("http://{node}:{}/v1/traces", setup.http);
    let grpc_unix = format!("unix://{}", setup.socket("grpc.sock"));
    let http_unix = setup.socket("http.sock");
    let hostport_url = format!("http://{}:{host_port}/v1/traces", pod.node_v4);
    let app = |protocol: &str, endpoint: &str, service: &str, record: &str| -> Vec<String> {
        [
            "--protocol",
            protocol,
            "--endpoint",
            endpoint,
            "--service",
            service,
            "--no-pid",
            "--count",
            "12",
            "--mode",
            "sleep",
            "--work-ms",
            "5",
            "--record",
            record,
        ]
        .into_iter()
        .map(String::from)
        .collect()
    };
    let mut host_side = vec![
        app("http", &host_url, "host-app", &records[0]),
        app("grpc", &node_grpc, "node-app", &records[1]),
        app("grpc", &grpc_unix, "grpc-unix-app", &records[4]),
        app("http-unix", &http_unix, "http-unix-app", &records[5]),
    ];
    let mut pod_side = Vec::new();
    if b.hostport {
        pod_side.push(app("http", &hostport_url, "hostport-app", &records[6]));
    }
    let mut apps = Vec::new();
    for (lab_args, args) in host_side
        .drain(..)
        .map(|a| (&[][..], a))
        .chain(pod_side.drain(..).map(|a| (&in_pod[..], a)))
    {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        apps.push(python_app_with(lab_args, &args, None, None)?);
    }
    let work = WORK_MS.to_string();
    apps.push(python_app_with(
        &in_pod,
        &[
            "--protocol",
            "http",
            "--endpoint",
            &pod_url,
            "--service",
            "pod-app",
            "--no-pid",
            "--mode",
            "cpu",
            "--work-ms",
            &work,
            "--count",
            "14",
            "--record",
            &records[2],
        ],
        Some(&cg.child("app")?),
        Some(0),
    )?);
    apps.push(rust_app(&in_pod, &node_grpc, &records[3])?);
    for a in apps {
        wait_success(a, Duration::from_secs(120))?;
    }
    let used: Vec<String> = if b.hostport {
        records.clone()
    } else {
        records[..6].to_vec()
    };
    let got = setup.collect(&used)?;
    // Every sender named by the kernel: the TCP ones by their connection's opener as the probes
    // recorded it, the unix socket ones by their peer credentials; none by /proc or a claim.
    let counts = setup.agent.fresh_report()?.otlp.join;
    let by = |k: &str| counts.spans_identified_by.get(k).copied().unwrap_or(0);
    assert!(
        by("connection_opener") > 0 && by("peer_credentials") > 0,
        "{counts:?}"
    );
    assert_eq!(
        by("connection_opener") + by("peer_credentials"),
        counts.spans_joined,
        "{counts:?}"
    );
    eprintln!(
        "{}: {} spans joined, by {:?}, {} unidentified",
        b.tag, counts.spans_joined, counts.spans_identified_by, counts.spans_unidentified
    );
    let services = by_service(&got);
    let mut expected = vec![
        "host-app",
        "node-app",
        "pod-app",
        "culprit-rust-app",
        "grpc-unix-app",
        "http-unix-app",
    ];
    if b.hostport {
        expected.push("hostport-app");
    }
    for service in expected {
        assert_verified(&services, service);
    }
    assert_contention_blamed(
        &services["pod-app"]
            .iter()
            .map(|(_, s)| s)
            .collect::<Vec<_>>(),
    )
}

/// The pod app's slow requests are blamed on the hog. Its work is a busy loop of WORK_MS of wall
/// time, so under the hog a request is as long as ever but gets a fraction of the CPU done: every
/// request past the first two (sent before the agent watched the app) is slow.
fn assert_contention_blamed(spans: &[&Span]) -> anyhow::Result<()> {
    let requests: Vec<&&Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("request"))
        .collect();
    let slow: Vec<&&&Span> = requests
        .iter()
        .skip(2)
        .filter(|s| (s.end_time_unix_nano - s.start_time_unix_nano) as f64 >= WORK_MS * 1e6)
        .collect();
    anyhow::ensure!(
        slow.len() >= 6,
        "only {} slow requests of {}",
        slow.len(),
        requests.len()
    );
    let contended = slow
        .iter()
        .filter(|s| span_str(s, "culprit.cause") == Some("cpu.contention"))
        .count();
    eprintln!(
        "pod app: {contended} of {} slow requests blamed on cpu.contention",
        slow.len()
    );
    assert!(
        contended * 10 >= slow.len() * 8,
        "{contended} of {} slow pod requests blamed on contention: {:?}",
        slow.len(),
        slow.iter()
            .map(|s| span_str(s, "culprit.cause"))
            .collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn stock_senders_in_every_namespace_are_verified_with_the_agent_on_any_address()
-> anyhow::Result<()> {
    senders_are_verified(&Binding {
        tag: "id-any",
        subnet: 71,
        listen: |_| "0.0.0.0".into(),
        host_app_dials: |_| "127.0.0.1".into(),
        node: |pod| pod.node_v4.to_string(),
        hostport: true,
    })
}

#[test]
fn stock_senders_are_verified_with_the_agent_on_a_node_address_over_ipv6() -> anyhow::Result<()> {
    senders_are_verified(&Binding {
        tag: "id-v6",
        subnet: 72,
        listen: |pod| format!("[{}]", pod.node_v6),
        host_app_dials: |pod| format!("[{}]", pod.node_v6),
        node: |pod| format!("[{}]", pod.node_v6),
        hostport: false,
    })
}
