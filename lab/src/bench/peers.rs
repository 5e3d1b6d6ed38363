//! The processes the benches run the load through: the agent and rotel, each on fresh ports,
//! and a rotel that discards everything as the final backend.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    process::{binaries::bin_path, reaped::Reaped},
    service::otel::{free_port, rotel_agent_path, wait_for_port},
};

/// A rotel receiving OTLP on `grpc` and `http`, exporting as `exporter` says.
fn rotel(grpc: u16, http: u16, exporter: &[&str]) -> anyhow::Result<Reaped> {
    let mut cmd = Command::new(rotel_agent_path()?);
    cmd.args(["start", "--otlp-grpc-endpoint"])
        .arg(format!("127.0.0.1:{grpc}"))
        .arg("--otlp-http-endpoint")
        .arg(format!("127.0.0.1:{http}"))
        .args(exporter)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let p = Reaped::spawn("rotel-agent", &mut cmd)?;
    wait_for_port(grpc, Duration::from_secs(15))?;
    Ok(p)
}

/// A rotel that accepts and discards everything: the benches' final backend. Returns it and
/// its OTLP/gRPC endpoint.
pub(crate) fn rotel_blackhole() -> anyhow::Result<(Reaped, String)> {
    let (grpc, http) = (free_port()?, free_port()?);
    let hole = rotel(grpc, http, &["--exporter", "blackhole"])?;
    Ok((hole, format!("http://127.0.0.1:{grpc}")))
}

/// A rotel forwarding over OTLP/gRPC to `downstream`; returns it and its gRPC port.
pub(crate) fn rotel_forwarder(downstream: &str) -> anyhow::Result<(Reaped, u16)> {
    let (grpc, http) = (free_port()?, free_port()?);
    let forwarder = rotel(
        grpc,
        http,
        &[
            "--exporter",
            "otlp",
            "--otlp-exporter-protocol",
            "grpc",
            "--otlp-exporter-endpoint",
            downstream,
        ],
    )?;
    Ok((forwarder, grpc))
}

/// A `culprit agent` exporting to `downstream`; returns it and its gRPC port.
pub(crate) fn start_agent(downstream: &str) -> anyhow::Result<(Reaped, u16)> {
    let (grpc, http) = (free_port()?, free_port()?);
    let mut cmd = Command::new(bin_path("culprit")?);
    cmd.args([
        "agent",
        "--output",
        "json",
        "--interval",
        "5",
        "--otlp-grpc",
    ])
    .arg(format!("127.0.0.1:{grpc}"))
    .arg("--otlp-http")
    .arg(format!("127.0.0.1:{http}"))
    .args(["--export-protocol", "grpc", "--export-endpoint", downstream])
    .stdout(Stdio::null());
    let agent = Reaped::spawn("culprit agent", &mut cmd)?;
    wait_for_port(grpc, Duration::from_secs(30))?;
    Ok((agent, grpc))
}
