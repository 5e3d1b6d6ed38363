//! `culprit-lab service`'s command line, turned into the service's configuration.

use std::{path::PathBuf, time::Duration};

use super::server::ServiceConfig;

#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    #[arg(long)]
    pub port: u16,
    /// The address to listen on (any address, in a pod's network namespace).
    #[arg(long, default_value = "127.0.0.1")]
    pub listen_host: std::net::IpAddr,
    #[arg(long)]
    pub downstream_port: u16,
    /// Where the downstream listens (the node's address, from a pod).
    #[arg(long, default_value = "127.0.0.1")]
    pub downstream_host: std::net::IpAddr,
    /// The OTLP/gRPC endpoint, e.g. http://127.0.0.1:4317.
    #[arg(long)]
    pub endpoint: String,
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    #[arg(long, default_value_t = 5.0)]
    pub cpu_work_ms: f64,
    /// Name the serving thread in `culprit.thread.tid` (no stock SDK does: by default the
    /// agent infers it, as in a cluster).
    #[arg(long)]
    pub thread_attr: bool,
    /// Write the thread that served each span here (JSON) at shutdown: the truth a test
    /// scores the agent's inference against.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Publish each request's OpenTelemetry thread context (OTEP 4947).
    #[arg(long)]
    pub thread_context: bool,
    /// Serve `/disk` from this file (created if missing), read with O_DIRECT.
    #[arg(long)]
    pub disk_file: Option<PathBuf>,
    /// Serve `/lock`, whose requests share a lock with a thread on this CPU that holds it
    /// in bursts.
    #[arg(long)]
    pub lock_holder_cpu: Option<usize>,
    /// Serve `/pooled` from a prefork-style pool: `--workers` threads that each accept and
    /// read their connections (a request waits in the kernel while all are busy).
    #[arg(long)]
    pub accept_pool: bool,
}

impl ServiceArgs {
    pub fn into_config(self) -> ServiceConfig {
        ServiceConfig {
            port: self.port,
            listen_host: self.listen_host,
            downstream_port: self.downstream_port,
            downstream_host: self.downstream_host,
            otlp_endpoint: self.endpoint,
            workers: self.workers,
            cpu_work: Duration::from_secs_f64(self.cpu_work_ms / 1e3),
            thread_attr: self.thread_attr,
            record: self.record,
            thread_context: self.thread_context,
            disk_file: self.disk_file,
            lock_holder_cpu: self.lock_holder_cpu,
            accept_pool: self.accept_pool,
        }
    }
}
