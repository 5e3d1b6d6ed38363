//! The client side of the local API, for `culprit top`, `explain` and `status`: one GET over the
//! unix socket (or loopback TCP), with errors that say what to do.

use std::{io::ErrorKind, path::PathBuf};

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, StatusCode, body::Bytes};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

/// Where the agent's API is.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "http://{a}"),
        }
    }
}

/// Why the API could not be reached, in the words a user needs.
#[derive(Debug)]
pub enum Unreachable {
    NoAgent(String),
    Permission(String),
}

impl std::error::Error for Unreachable {}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreachable::NoAgent(m) | Unreachable::Permission(m) => f.write_str(m),
        }
    }
}

fn connect_error(endpoint: &Endpoint, err: std::io::Error) -> anyhow::Error {
    let what = match err.kind() {
        ErrorKind::NotFound => Unreachable::NoAgent(format!(
            "no agent is running here: {endpoint} does not exist. Start one with `culprit agent` \
             (as root), or point at its socket with --socket"
        )),
        ErrorKind::ConnectionRefused => Unreachable::NoAgent(format!(
            "no agent answers on {endpoint} (a socket left by an agent that stopped?). Start \
             one with `culprit agent`"
        )),
        ErrorKind::PermissionDenied => Unreachable::Permission(format!(
            "permission denied on {endpoint}: the agent's socket is root-only. Run this \
             command as root (e.g. `sudo culprit top`)"
        )),
        _ => return anyhow::Error::new(err).context(format!("connecting to {endpoint}")),
    };
    anyhow::Error::new(what)
}

/// GETs `path` (e.g. `/v1/health`) and decodes the JSON answer. A 404 comes back as `Ok(None)`.
pub async fn get<T: DeserializeOwned>(
    endpoint: &Endpoint,
    path: &str,
) -> anyhow::Result<Option<T>> {
    let (status, body) = match endpoint {
        Endpoint::Unix(p) => {
            let stream = tokio::net::UnixStream::connect(p)
                .await
                .map_err(|e| connect_error(endpoint, e))?;
            exchange(TokioIo::new(stream), path).await?
        }
        Endpoint::Tcp(a) => {
            let stream = tokio::net::TcpStream::connect(a)
                .await
                .map_err(|e| connect_error(endpoint, e))?;
            exchange(TokioIo::new(stream), path).await?
        }
    };
    match status {
        StatusCode::OK => serde_json::from_slice(&body).map(Some).with_context(|| {
            format!("decoding the answer to {path} (agent and tool versions differ?)")
        }),
        StatusCode::NOT_FOUND => Ok(None),
        other => {
            let detail = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            bail!("the agent answered {other} to {path}: {detail}")
        }
    }
}

async fn exchange<S>(io: TokioIo<S>, path: &str) -> anyhow::Result<(StatusCode, Bytes)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .context("talking HTTP to the agent")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = Request::get(path)
        .header("host", "culprit")
        .body(Empty::<Bytes>::new())?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("GET {path}"))?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// A single-threaded runtime for the command-line tools.
pub fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f))
}
