//! Command-line interface.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

use crate::report::OutputFormat;

#[derive(Debug, Parser)]
#[command(
    name = "culprit",
    version,
    about = "Which kernel signal made each slow request slow"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the node agent: load the eBPF probes and report what they observe.
    Agent(Box<AgentOpts>),
    /// Live view of a running agent: services with their p99 and dominant cause, throttled
    /// cgroups, noisy neighbours, retransmitting peers, the slowest requests.
    Top {
        #[command(flatten)]
        api: ApiOpts,
        /// Print one plain-text snapshot and exit (the default when stdout is not a terminal).
        #[arg(long)]
        once: bool,
        /// Seconds between refreshes.
        #[arg(long, default_value = "1", value_parser = parse_seconds)]
        refresh: Duration,
        /// Summaries cover this many seconds.
        #[arg(long, default_value_t = 60.0)]
        window: f64,
    },
    /// One request's decomposition: where its time went and who is behind each part.
    Explain {
        #[command(flatten)]
        api: ApiOpts,
        /// A trace id (32 hex digits: every span of the trace) or a span id (16 hex digits).
        id: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// A report for a time window or a load test: per service, latency over time by cause, the
    /// p99's excess by cause with who is behind it, the slowest requests decomposed; joined with
    /// a load generator's own latencies by trace id (`--k6`). Writes report.html, report.md and
    /// report.json.
    Report {
        #[command(flatten)]
        api: ApiOpts,
        /// The last this long: seconds or `10m`, `1h30m` (default 10 minutes; with --k6, the
        /// time its requests ran).
        #[arg(long, value_parser = parse_span, conflicts_with_all = ["from", "to"])]
        since: Option<Duration>,
        /// From this time: RFC 3339 (`2026-12-06T20:00:00Z`) or Unix seconds (default: 10
        /// minutes before --to).
        #[arg(long, value_parser = parse_time, value_name = "TIME")]
        from: Option<u64>,
        /// To this time (default: now).
        #[arg(long, value_parser = parse_time, value_name = "TIME")]
        to: Option<u64>,
        /// k6's `--out json=FILE` results, each request tagged with its `trace_id` (or JSON
        /// lines of trace_id and latency_ms, e.g. from a Locust hook).
        #[arg(long, visible_alias = "client-results", value_name = "FILE")]
        k6: Option<PathBuf>,
        /// Where the report goes.
        #[arg(long, default_value = "culprit-report")]
        out: PathBuf,
    },
    /// Preflight for a node, before deploying: kernel, BTF, tracefs, cgroup layout,
    /// capabilities, and every probe loaded, attached and detached again, with what each
    /// signal would do here. Takes the agent's own options. Exit code 2 when a signal would run
    /// degraded, 1 when the agent cannot run here.
    Check {
        #[command(flatten)]
        agent: Box<AgentOpts>,
        /// JSON for scripts (the kernel matrix reads it).
        #[arg(long)]
        json: bool,
    },
    /// The agent's health: probes, signals, losses, receivers, the exporter, the event loop.
    /// Exit code 2 when anything runs degraded, 1 when the agent cannot be asked.
    Status {
        #[command(flatten)]
        api: ApiOpts,
        #[arg(long)]
        json: bool,
        /// A probe's answer: exit 0 while the agent is alive (its event loop turns, every task
        /// runs, every receiver bound), degraded signals or export or not; 2 otherwise. For
        /// Kubernetes' liveness and readiness probes.
        #[arg(long, visible_alias = "readiness")]
        liveness: bool,
    },
}

/// Where the tools find the agent's local API.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ApiOpts {
    /// The agent's unix socket.
    #[arg(long, env = "CULPRIT_SOCKET", default_value = crate::live::api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Use the agent's TCP API at this address instead (see `culprit agent --api-listen`).
    #[arg(long)]
    pub api: Option<std::net::SocketAddr>,
}

impl ApiOpts {
    pub(crate) fn endpoint(&self) -> crate::live::client::Endpoint {
        match self.api {
            Some(addr) => crate::live::client::Endpoint::Tcp(addr),
            None => crate::live::client::Endpoint::Unix(self.socket.clone()),
        }
    }
}

#[derive(Debug, Parser)]
pub(crate) struct AgentOpts {
    /// Read flags from this file, one per line (`--interval 5`); later flags win. (Expanded
    /// before parsing by `config_file::expand`: declared here for `--help` only.)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seconds between two reports.
    #[arg(long, default_value = "2", value_parser = parse_seconds)]
    pub interval: Duration,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_parser = parse_seconds)]
    pub duration: Option<Duration>,
    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Only report cgroups whose path starts with this prefix (e.g. `/kubepods.slice`).
    #[arg(long)]
    pub cgroup_prefix: Option<String>,
    /// Rows in the table (the cgroups with most run-queue time first).
    #[arg(long, default_value_t = 15)]
    pub top: usize,
    /// Watch the threads of this process (per-thread on-CPU / run-queue / off-CPU accounting,
    /// socket ownership). Repeatable.
    #[arg(long = "watch-pid", value_name = "PID")]
    pub watch_pids: Vec<u32>,
    /// Watch the threads of this cgroup: a path in any cgroup filesystem, or relative to the
    /// cgroup v2 root. Repeatable.
    #[arg(long = "watch-cgroup", value_name = "PATH")]
    pub watch_cgroups: Vec<PathBuf>,
    /// Per-thread intervals at least this long are kept with their own start and end; shorter
    /// ones are summed into buckets. Short enough that a thread's timeline is placed to the
    /// microsecond (which thread served a span that does not say is read from it).
    #[arg(long, default_value_t = 0.02)]
    pub episode_threshold_ms: f64,
    /// Width of the per-thread buckets of short intervals.
    #[arg(long, default_value_t = 10.0)]
    pub bucket_ms: f64,
    /// How often each CPU's running thread is sampled for its published thread context (OTEP
    /// 4947), so that a runtime switching requests without leaving the CPU (async) has each
    /// request's CPU time to within one period. Only threads of processes that publish a
    /// context are read; 0 reads contexts only as threads leave a CPU.
    #[arg(long, default_value_t = 1000)]
    pub context_sample_hz: u32,
    /// How long per-thread history is kept.
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    pub retention: Duration,
    /// Memory cap of the per-thread history, in records (~100 bytes each); the oldest go first.
    #[arg(long, default_value_t = 200_000)]
    pub store_max_records: usize,
    /// Skip the node-wide per-cgroup run-queue histograms (watched threads only).
    #[arg(long)]
    pub no_node_summary: bool,
    /// OTLP/gRPC receiver address.
    #[arg(long, default_value = "127.0.0.1:4317")]
    pub otlp_grpc: std::net::SocketAddr,
    /// OTLP/HTTP receiver address (protobuf and JSON).
    #[arg(long, default_value = "127.0.0.1:4318")]
    pub otlp_http: std::net::SocketAddr,
    /// Receive OTLP on this address instead of the hosts in --otlp-grpc and --otlp-http (their
    /// ports kept): in a DaemonSet, the node's address from the downward API's `status.hostIP`,
    /// so that only the node's pods and the node itself can reach the receivers.
    #[arg(long, env = "CULPRIT_OTLP_HOST")]
    pub otlp_host: Option<std::net::IpAddr>,
    /// Also receive OTLP/gRPC on this unix socket (mode 0666; mount its directory into pods).
    /// The sender is the socket's peer, from the kernel (`SO_PEERCRED`).
    #[arg(long, value_name = "PATH")]
    pub otlp_grpc_unix: Option<PathBuf>,
    /// Also receive OTLP/HTTP on this unix socket (mode 0666), as --otlp-grpc-unix.
    #[arg(long, value_name = "PATH")]
    pub otlp_http_unix: Option<PathBuf>,
    /// A port senders dial that a NAT (a hostPort, a Service) translates to a receiver's port:
    /// connections to it have their opener recorded too. Repeatable; four ports in all.
    #[arg(long = "otlp-dialled-port", value_name = "PORT")]
    pub otlp_dialled_ports: Vec<u16>,
    /// Serve the TCP receivers over TLS with this certificate chain (PEM; with --otlp-tls-key).
    #[arg(long, value_name = "PEM")]
    pub otlp_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --otlp-tls-cert.
    #[arg(long, value_name = "PEM")]
    pub otlp_tls_key: Option<PathBuf>,
    /// Mutual TLS: senders must present a certificate signed by this CA (PEM).
    #[arg(long, value_name = "PEM")]
    pub otlp_tls_client_ca: Option<PathBuf>,
    /// The TCP receivers require `Authorization: Bearer <token>`, the token read from this file
    /// at start (a mounted Secret); others are answered 401 / UNAUTHENTICATED.
    #[arg(long, value_name = "PATH")]
    pub otlp_bearer_token_file: Option<PathBuf>,
    /// Do not receive OTLP (kernel signals only).
    #[arg(long)]
    pub no_otlp: bool,
    /// Largest OTLP message accepted (after decompression), in MiB.
    #[arg(long, default_value_t = 4)]
    pub max_message_mib: usize,
    /// OTLP requests processed at once; more are answered 429 / UNAVAILABLE (retry later).
    #[arg(long, default_value_t = 64)]
    pub max_in_flight: usize,
    /// Messages one OTLP request may decode into (spans, data points, log records, events,
    /// links, attributes), counted on the wire before decoding; more: 413 / RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 100_000)]
    pub max_items_per_request: usize,
    /// Memory all decoded trace requests may hold until they are joined and released, in MiB;
    /// past it, requests are answered 429 / UNAVAILABLE (retry later).
    #[arg(long, default_value_t = 64)]
    pub max_decoded_mib: usize,
    /// How long a span is held after its end for the kernel events of its window (max 2000).
    #[arg(long, default_value_t = 300)]
    pub hold_ms: u64,
    /// Export endpoint (overrides OTEL_EXPORTER_OTLP_ENDPOINT and friends).
    #[arg(long)]
    pub export_endpoint: Option<String>,
    /// Export protocol: grpc or http/protobuf (overrides OTEL_EXPORTER_OTLP_PROTOCOL).
    #[arg(long)]
    pub export_protocol: Option<String>,
    /// Requests the export queue holds while the backend is down; then the oldest are dropped.
    #[arg(long, default_value_t = 2048)]
    pub export_queue: usize,
    /// How long one export request is retried while the backend fails (unavailable, throttling,
    /// refusing the credentials) before it is dropped and counted, in seconds.
    #[arg(long, value_parser = parse_seconds, default_value = "300")]
    pub export_max_elapsed: Duration,
    /// The memory the agent may use, in MiB (default: its cgroup's `memory.max`): the export
    /// queue and the decoded-request budget are sized to stay below it.
    #[arg(long)]
    pub memory_limit_mib: Option<u64>,
    /// Print the decomposition of every span at least this long (always when not exporting;
    /// with an export endpoint only with --print-spans).
    #[arg(long, default_value_t = 50.0)]
    pub slow_ms: f64,
    /// Print span decompositions even when exporting.
    #[arg(long)]
    pub print_spans: bool,
    /// Kernel BTF used to resolve struct offsets.
    #[arg(long, default_value = "/sys/kernel/btf/vmlinux")]
    pub btf: PathBuf,
    /// tracefs mount (tracepoint record formats).
    #[arg(long, default_value = "/sys/kernel/tracing")]
    pub tracefs: PathBuf,
    /// Cgroup v2 mount point (default: found in /proc/self/mountinfo).
    #[arg(long)]
    pub cgroup_root: Option<PathBuf>,
    /// The local API's unix socket (root-only), read by `culprit top`, `explain` and `status`.
    #[arg(long, default_value = crate::live::api::DEFAULT_SOCKET)]
    pub api_socket: PathBuf,
    /// Also serve the local API on this TCP address: loopback only, unless
    /// --api-listen-any-address (the API has no authentication and names the node's processes).
    #[arg(long)]
    pub api_listen: Option<std::net::SocketAddr>,
    /// Allow --api-listen on an address other than loopback.
    #[arg(long)]
    pub api_listen_any_address: bool,
    /// Do not serve the local API.
    #[arg(long)]
    pub no_api: bool,
    /// Serve the agent's metrics (the ones it exports over OTLP) for Prometheus to scrape, on
    /// `http://ADDR/metrics` (e.g. `0.0.0.0:9464`, or the node's address).
    #[arg(long, value_name = "ADDR")]
    pub prometheus_listen: Option<std::net::SocketAddr>,
    /// This node's name, set as `k8s.node.name` on what the agent emits (in a DaemonSet, from
    /// the downward API's `spec.nodeName`).
    #[arg(long, env = "K8S_NODE_NAME")]
    pub node_name: Option<String>,
}

impl AgentOpts {
    /// The receivers' TLS and token files.
    pub(crate) fn receiver_security_files(
        &self,
    ) -> crate::otlp::receiver_security::SecurityFiles<'_> {
        crate::otlp::receiver_security::SecurityFiles {
            cert: self.otlp_tls_cert.as_deref(),
            key: self.otlp_tls_key.as_deref(),
            client_ca: self.otlp_tls_client_ca.as_deref(),
            bearer_token: self.otlp_bearer_token_file.as_deref(),
        }
    }

    /// The gRPC and HTTP receivers' addresses, on --otlp-host when it is given.
    pub(crate) fn otlp_addrs(&self) -> (std::net::SocketAddr, std::net::SocketAddr) {
        let on_host = |mut addr: std::net::SocketAddr| {
            if let Some(host) = self.otlp_host {
                addr.set_ip(host);
            }
            addr
        };
        (on_host(self.otlp_grpc), on_host(self.otlp_http))
    }
}

impl AgentOpts {
    /// The TCP address of the local API, if any: refused off loopback unless asked explicitly.
    pub(crate) fn api_tcp_address(&self) -> anyhow::Result<Option<std::net::SocketAddr>> {
        match self.api_listen {
            Some(addr) if !addr.ip().is_loopback() && !self.api_listen_any_address => {
                anyhow::bail!(
                    "--api-listen {addr}: not a loopback address; the local API has no \
                     authentication and names the node's processes (add \
                     --api-listen-any-address to serve it there anyway)"
                )
            }
            other => Ok(other),
        }
    }
}

pub(crate) fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("`{s}` must be a positive number of seconds"));
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d.is_zero() => Err(format!("`{s}` is shorter than a nanosecond")),
        Ok(d) => Ok(d),
        Err(_) => Err(format!("`{s}` seconds is longer than a duration can be")),
    }
}

/// A length of time as `--since` takes it: seconds (`600`, `0.5`) or a friendly duration
/// (`10m`, `1h30m`, `90s`).
pub(crate) fn parse_span(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("`{s}` must be a positive number of seconds"));
    }
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|_| format!("`{s}` is neither seconds nor a duration like 10m or 1h30m"))?;
    Duration::try_from(d)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{s}` must be a positive duration"))
}

/// A wall-clock time as `--from`/`--to` take it: RFC 3339 (`2026-12-06T20:00:00Z`, any offset)
/// or Unix seconds. Returns Unix ms.
pub(crate) fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return (secs >= 0.0 && secs.is_finite() && secs < 1e15)
            .then_some((secs * 1e3) as u64)
            .ok_or_else(|| format!("`{s}` is not a time in Unix seconds"));
    }
    let t: jiff::Timestamp = s.parse().map_err(|e| {
        format!("`{s}` is neither Unix seconds nor an RFC 3339 time (2026-12-06T20:00:00Z): {e}")
    })?;
    u64::try_from(t.as_millisecond()).map_err(|_| format!("`{s}` is before 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_listens_off_loopback_only_when_asked() {
        let opts = |args: &[&str]| {
            let mut all = vec!["culprit", "agent"];
            all.extend_from_slice(args);
            match Cli::try_parse_from(all).unwrap().command {
                Command::Agent(o) => o,
                _ => unreachable!(),
            }
        };
        let local = opts(&["--api-listen", "127.0.0.1:7000"]);
        assert!(local.api_tcp_address().unwrap().is_some());
        assert!(
            opts(&["--api-listen", "[::1]:7000"])
                .api_tcp_address()
                .is_ok()
        );
        assert!(opts(&[]).api_tcp_address().unwrap().is_none());
        let open = opts(&["--api-listen", "0.0.0.0:7000"]);
        assert!(format!("{:#}", open.api_tcp_address().unwrap_err()).contains("loopback"));
        let asked = opts(&["--api-listen", "0.0.0.0:7000", "--api-listen-any-address"]);
        assert!(asked.api_tcp_address().unwrap().is_some());
    }

    #[test]
    fn spans_and_times_take_what_people_type() {
        assert_eq!(parse_span("600"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_span("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_span("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_span("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["", "ten minutes", "-5m", "0s"] {
            assert!(parse_span(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_time("1800000000"), Ok(1_800_000_000_000));
        assert_eq!(parse_time("2027-01-15T08:00:00Z"), Ok(1_800_000_000_000));
        assert_eq!(
            parse_time("2027-01-15T09:00:00+01:00"),
            Ok(1_800_000_000_000)
        );
        for bad in ["yesterday", "-1", "1e300", "2026-13-01T00:00:00Z"] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn seconds_accept_fractions_and_reject_garbage() {
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_seconds("2"), Ok(Duration::from_secs(2)));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("abc").is_err());
        assert!(parse_seconds("inf").is_err());
    }

    #[test]
    fn seconds_past_what_a_duration_holds_are_refused() {
        let err = parse_seconds("1e30").unwrap_err();
        assert!(err.contains("longer than a duration"), "{err}");
        assert!(parse_seconds("1e-30").unwrap_err().contains("nanosecond"));
        assert_eq!(parse_seconds("1e-9"), Ok(Duration::from_nanos(1)));
        // Through clap, as `--duration 1e30` is given.
        assert!(Cli::try_parse_from(["culprit", "agent", "--duration", "1e30"]).is_err());
    }

    /// The flags the DaemonSet's ConfigMap ships, as `culprit agent --config` reads them.
    fn shipped_config() -> Vec<std::ffi::OsString> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/kubernetes/configmap.yaml"
        );
        let yaml = std::fs::read_to_string(path).expect("the ConfigMap");
        let block: String = yaml
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("agent.conf: |"))
            .skip(1)
            .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
            .map(|l| format!("{}\n", l.trim()))
            .collect();
        crate::config_file::parse(&block)
    }

    #[test]
    fn the_daemonsets_config_binds_the_node_address_and_the_unix_sockets() {
        let mut args: Vec<std::ffi::OsString> = vec!["culprit".into(), "agent".into()];
        args.extend(shipped_config());
        assert!(args.len() > 6, "{args:?}");
        // CULPRIT_OTLP_HOST, as the DaemonSet sets it from status.hostIP.
        args.extend(["--otlp-host".into(), "10.1.2.3".into()]);
        let Command::Agent(opts) = Cli::try_parse_from(args)
            .expect("the shipped flags parse")
            .command
        else {
            panic!("not the agent command");
        };
        let (grpc, http) = opts.otlp_addrs();
        assert_eq!(grpc, "10.1.2.3:4317".parse().unwrap());
        assert_eq!(http, "10.1.2.3:4318".parse().unwrap());
        assert_eq!(
            opts.otlp_grpc_unix.as_deref(),
            Some(std::path::Path::new("/run/culprit-otlp/grpc.sock"))
        );
        assert!(opts.otlp_http_unix.is_some());
        // Without a host, the addresses as given.
        let Command::Agent(bare) = Cli::try_parse_from(["culprit", "agent"]).unwrap().command
        else {
            panic!("not the agent command");
        };
        assert_eq!(bare.otlp_addrs().0, bare.otlp_grpc);
    }
}
