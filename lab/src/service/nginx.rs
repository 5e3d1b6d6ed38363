//! nginx as the front of a backend, the way managed OTLP intakes and ingresses stand in front
//! of a collector: TLS, tokens, rate limits, body size limits. Run in the foreground from a
//! directory of its own, with an access log that stamps each request (`$msec $status $uri`).

use std::{path::Path, process::Command, time::Duration};

use super::otel::wait_for_port;
use crate::process::reaped::Reaped;

/// The access log's file name in nginx's directory.
pub const ACCESS_LOG: &str = "access.log";

/// Starts nginx in `dir` with `http_directives` (zones, certificates) and `servers` (server
/// blocks) inside its `http` block, and waits until it listens on every port of `ports`.
pub fn nginx(
    dir: &Path,
    http_directives: &str,
    servers: &str,
    ports: &[u16],
) -> anyhow::Result<Reaped> {
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{}}\n\
         http {{\n  log_format stamped '$msec $status $uri';\n  access_log {d}/{ACCESS_LOG} stamped;\n\
           client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  {http_directives}\n  {servers}\n}}\n"
    );
    std::fs::create_dir_all(dir.join("logs"))?;
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-p").arg(dir).arg("-c").arg(&path);
    let p = Reaped::spawn("nginx", &mut cmd)?;
    for port in ports {
        wait_for_port(*port, Duration::from_secs(10))?;
    }
    Ok(p)
}

/// One request nginx logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub unix_s: f64,
    pub status: u16,
    pub uri: String,
}

/// The requests nginx in `dir` has logged so far, in order.
pub fn access_log(dir: &Path) -> Vec<Logged> {
    std::fs::read_to_string(dir.join(ACCESS_LOG))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            Some(Logged {
                unix_s: f.next()?.parse().ok()?,
                status: f.next()?.parse().ok()?,
                uri: f.next()?.to_string(),
            })
        })
        .collect()
}
