//! Who sent each span, as a cluster has it: stock SDKs that send no `process.pid`, in the host's
//! network namespace, in a pod-like namespace of their own behind a veth pair, and on the unix
//! sockets; the agent on `0.0.0.0` (as the DaemonSet's config has it) and on one node address
//! (IPv6). Every sender is verified by the kernel.

use std::{net::SocketAddrV4, time::Duration};

use culprit_lab::{
    faults::{cgroup::TempCgroup, netns::PodNetwork, port_forward::PortForward},
    process::reaped::spawn_workload,
    service::otel::{free_port, wait_success},
};
use culprit_tests::{
    identity::{Setup, assert_verified, by_service, python, rust_app, span_str},
    require_root,
};
use opentelemetry_proto::tonic::trace::v1::Span;

const WORK_MS: f64 = 30.0;

#[test]
fn stock_senders_in_every_namespace_are_verified_with_the_agent_on_any_address()
-> anyhow::Result<()> {
    require_root()?;
    let pod = PodNetwork::new("id-any", 71)?;
    // A hostPort in front of the HTTP receiver: the pod dials another port, a DNAT forwards it.
    let host_port = free_port()?;
    let mut setup = Setup::start(
        "any",
        "0.0.0.0",
        &["--otlp-dialled-port", &host_port.to_string()],
    )?;
    let in_pod = pod.lab_args();
    let node = pod.node_v4;
    let _forward = PortForward::new(node, host_port, SocketAddrV4::new(node, setup.http))?;
    let cg = TempCgroup::new_v2("culprit-test-identity-any")?;
    // A noisy neighbour on the pod app's CPU.
    let _hog = spawn_workload(&cg.child("hog")?, Some(0), 90.0, &["hog", "--threads", "2"])?;
    let work = WORK_MS.to_string();
    let records: Vec<String> = [
        "host",
        "node",
        "pod",
        "rust",
        "grpc-unix",
        "http-unix",
        "hostport",
    ]
    .iter()
    .map(|n| setup.record(n))
    .collect();
    let host_url = format!("http://127.0.0.1:{}/v1/traces", setup.http);
    let node_url = format!("http://{node}:{}", setup.grpc);
    let pod_url = format!("http://{node}:{}/v1/traces", setup.http);
    let grpc_unix = format!("unix://{}", setup.socket("grpc.sock"));
    let http_unix = setup.socket("http.sock");
    let common = [
        "--no-pid",
        "--count",
        "12",
        "--mode",
        "sleep",
        "--work-ms",
        "5",
    ];
    let app = |protocol: &str, endpoint: &str, service: &str, record: &str| {
        let mut a = vec![
            "--protocol",
            protocol,
            "--endpoint",
            endpoint,
            "--service",
            service,
        ];
        a.extend_from_slice(&common);
        a.extend(["--record", record]);
        a.into_iter().map(String::from).collect::<Vec<String>>()
    };
    let owned = [
        app("http", &host_url, "host-app", &records[0]),
        app("grpc", &node_url, "node-app", &records[1]),
        app("grpc", &grpc_unix, "grpc-unix-app", &records[4]),
        app("http-unix", &http_unix, "http-unix-app", &records[5]),
    ];
    let mut apps = Vec::new();
    for args in &owned {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        apps.push(python(&[], &args, None, None)?);
    }
    let hostport_url = format!("http://{node}:{host_port}/v1/traces");
    let hostport = app("http", &hostport_url, "hostport-app", &records[6]);
    let hostport: Vec<&str> = hostport.iter().map(String::as_str).collect();
    apps.push(python(&in_pod, &hostport, None, None)?);
    let pod_app = python(
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
    )?;
    let rust = rust_app(&in_pod, &node_url, &records[3])?;
    for a in apps {
        wait_success(a, Duration::from_secs(120))?;
    }
    wait_success(pod_app, Duration::from_secs(120))?;
    wait_success(rust, Duration::from_secs(120))?;
    let got = setup.collect(&records)?;
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
    let services = by_service(&got);
    for service in [
        "host-app",
        "node-app",
        "pod-app",
        "culprit-rust-app",
        "grpc-unix-app",
        "http-unix-app",
        "hostport-app",
    ] {
        assert_verified(&services, service);
    }
    // The pod app's slow requests are blamed on the hog. Its work is a busy loop of WORK_MS of
    // wall time, so under the hog a request is as long as ever but gets a fraction of the CPU
    // done: every request past the first two (sent before the agent watched the app) is slow.
    let requests: Vec<&Span> = services["pod-app"]
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name.starts_with("request"))
        .collect();
    let slow: Vec<&&Span> = requests
        .iter()
        .skip(2)
        .filter(|s| (s.end_time_unix_nano - s.start_time_unix_nano) as f64 >= WORK_MS * 1e6)
        .collect();
    anyhow::ensure!(
        slow.len() >= 6,
        "only {} slow requests of {}: {:?} ms",
        slow.len(),
        requests.len(),
        requests
            .iter()
            .map(|s| (s.end_time_unix_nano - s.start_time_unix_nano) / 1_000_000)
            .collect::<Vec<_>>()
    );
    let contended = slow
        .iter()
        .filter(|s| span_str(s, "culprit.cause") == Some("cpu.contention"))
        .count();
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
fn senders_are_verified_with_the_agent_on_a_node_address_over_ipv6() -> anyhow::Result<()> {
    require_root()?;
    let pod = PodNetwork::new("id-v6", 72)?;
    let node = format!("[{}]", pod.node_v6);
    let setup = Setup::start("v6", &node, &[])?;
    let records = [setup.record("pod6"), setup.record("host6")];
    let pod_url = format!("http://{node}:{}/v1/traces", setup.http);
    let host_url = format!("http://{node}:{}", setup.grpc);
    let common = [
        "--no-pid",
        "--count",
        "10",
        "--mode",
        "sleep",
        "--work-ms",
        "5",
    ];
    let mut pod_args = vec![
        "--protocol",
        "http",
        "--endpoint",
        &pod_url,
        "--service",
        "pod6-app",
    ];
    pod_args.extend_from_slice(&common);
    pod_args.extend(["--record", &records[0]]);
    let mut host_args = vec![
        "--protocol",
        "grpc",
        "--endpoint",
        &host_url,
        "--service",
        "host6-app",
    ];
    host_args.extend_from_slice(&common);
    host_args.extend(["--record", &records[1]]);
    let pod_app = python(&pod.lab_args(), &pod_args, None, None)?;
    let host_app = python(&[], &host_args, None, None)?;
    wait_success(pod_app, Duration::from_secs(120))?;
    wait_success(host_app, Duration::from_secs(120))?;
    let services = by_service(&setup.collect(&records)?);
    assert_verified(&services, "pod6-app");
    assert_verified(&services, "host6-app");
    Ok(())
}
