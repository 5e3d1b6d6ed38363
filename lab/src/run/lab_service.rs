//! Where a lab's service runs: in a pod's network namespace of its own (the default) or the
//! node's, and the service started there.

use std::{process::Stdio, time::Duration};

use super::lab::Lab;
use crate::{
    faults::placement::SERVICE_CPU,
    process::reaped::Reaped,
    service::{
        launch::{self, ServiceNetwork, service_command},
        otel::wait_for_addr,
    },
};

impl Lab {
    /// Runs every scenario's service in the node's network namespace, on loopback, instead of
    /// a pod's (to compare the two).
    pub fn with_host_network(mut self) -> Self {
        self.host_network = true;
        self
    }

    /// Where the service listens, where its downstream does, and how the service is placed.
    pub(super) fn service_network(&self) -> (std::net::IpAddr, std::net::IpAddr, ServiceNetwork) {
        if self.host_network {
            let lo = std::net::Ipv4Addr::LOCALHOST.into();
            return (lo, lo, ServiceNetwork::default());
        }
        let (service, node) = (self.pod.pod_v4.into(), self.pod.node_v4.into());
        let network = ServiceNetwork {
            lab_args: self.pod.lab_args(),
            listen_host: Some(std::net::Ipv4Addr::UNSPECIFIED.into()),
            downstream_host: Some(node),
        };
        (service, node, network)
    }

    /// The service, writing the thread that served each span to [`launch::served_record`] when it stops.
    pub(super) fn start_service(
        &self,
        cgroups: &[std::path::PathBuf],
        network: &ServiceNetwork,
        (listen, downstream_port): (std::net::SocketAddr, u16),
        disk_file: Option<&std::path::Path>,
        lock_holder_cpu: Option<usize>,
        accept_pool: bool,
    ) -> anyhow::Result<Reaped> {
        let mut cmd = service_command(
            cgroups,
            Some(SERVICE_CPU),
            network,
            (listen.port(), downstream_port),
            &self.ports.grpc_url_on(self.pod.node_v4.into()),
        )?;
        if accept_pool {
            cmd.arg("--accept-pool");
        }
        cmd.arg("--record")
            .arg(launch::served_record(listen.port()));
        if let Some(path) = disk_file {
            cmd.arg("--disk-file").arg(path);
        }
        if let Some(cpu) = lock_holder_cpu {
            cmd.args(["--lock-holder-cpu", &cpu.to_string()]);
        }
        cmd.stdout(Stdio::piped());
        let service = Reaped::spawn("lab service", &mut cmd)?;
        // Longer with a data file to write first.
        wait_for_addr(listen, Duration::from_secs(60))?;
        Ok(service)
    }
}
