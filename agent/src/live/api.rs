//! The local read-only API: HTTP/JSON on a unix socket only root can open (and optionally on a
//! loopback TCP port), serving the live view to `culprit top`, `explain` and `status`.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::{Path as UrlPath, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;

use super::view::{DEFAULT_WINDOW_MS, LiveView};
use crate::host::clock::realtime_ns;

pub type Shared = Arc<Mutex<LiveView>>;

/// Where the agent serves by default, and clients look.
pub const DEFAULT_SOCKET: &str = "/run/culprit/culprit.sock";

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    /// Summaries over the last `window_s` seconds.
    window_s: Option<f64>,
    limit: Option<usize>,
    min_ms: Option<f64>,
}

impl Params {
    fn window_ms(&self) -> u64 {
        self.window_s
            .filter(|w| w.is_finite() && *w > 0.0)
            .map_or(DEFAULT_WINDOW_MS, |w| (w * 1e3) as u64)
    }
}

fn now_ms() -> u64 {
    realtime_ns() / 1_000_000
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

pub fn router(view: Shared) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/requests", get(requests))
        .route("/v1/requests/{id}", get(request))
        .route("/v1/services", get(services))
        .route("/v1/containers", get(containers))
        .route("/v1/neighbours", get(neighbours))
        .route("/v1/throttled", get(throttled))
        .route("/v1/retransmits", get(retransmits))
        .route("/v1/snapshot", get(snapshot))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint; see /v1/health") })
        .with_state(view)
}

/// Runs `f` on the view; a panic elsewhere that poisoned the lock does not stop the API.
fn with<T>(view: &Shared, f: impl FnOnce(&LiveView) -> T) -> T {
    let guard = view.lock().unwrap_or_else(|p| p.into_inner());
    f(&guard)
}

async fn health(State(v): State<Shared>) -> Response {
    Json(with(&v, |v| v.health(now_ms()))).into_response()
}

async fn requests(State(v): State<Shared>, Query(p): Query<Params>) -> Response {
    let limit = p.limit.unwrap_or(100).min(super::view::MAX_REQUESTS);
    Json(with(&v, |v| v.requests(limit, p.min_ms.unwrap_or(0.0)))).into_response()
}

async fn request(State(v): State<Shared>, UrlPath(id): UrlPath<String>) -> Response {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return error(
            StatusCode::BAD_REQUEST,
            "a trace id (32 hex digits) or span id (16 hex digits) is expected",
        );
    }
    let found = with(&v, |v| v.request(&id));
    if found.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "no request with this trace or span id among the recent ones",
        );
    }
    Json(found).into_response()
}

async fn services(State(v): State<Shared>, Query(p): Query<Params>) -> Response {
    Json(with(&v, |v| v.services(now_ms(), p.window_ms()))).into_response()
}

async fn containers(State(v): State<Shared>, Query(p): Query<Params>) -> Response {
    Json(with(&v, |v| v.containers(now_ms(), p.window_ms()))).into_response()
}

async fn neighbours(State(v): State<Shared>, Query(p): Query<Params>) -> Response {
    Json(with(&v, |v| v.neighbours(now_ms(), p.window_ms()))).into_response()
}

async fn throttled(State(v): State<Shared>, Query(p): Query<Params>) -> Response {
    Json(with(&v, |v| v.throttled(now_ms(), p.window_ms()))).into_response()
}

async fn retransmits(State(v): State<Shared>, Query(p): Query<Params>) -> Response {
    Json(with(&v, |v| v.retransmits(now_ms(), p.window_ms()))).into_response()
}

async fn snapshot(State(v): State<Shared>, Query(p): Query<Params>) -> Response {
    let limit = p.limit.unwrap_or(50);
    Json(with(&v, |v| v.snapshot(now_ms(), p.window_ms(), limit))).into_response()
}

/// Binds the unix socket: its directory is created if needed, a stale socket (nobody answers)
/// is replaced, a live one is left to its agent. The socket is made root-only (0600).
pub fn bind_unix(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another agent already serves on {}; pass --api-socket to use another path",
                path.display()
            );
        }
        use std::os::unix::fs::FileTypeExt as _;
        if !std::fs::symlink_metadata(path)?.file_type().is_socket() {
            anyhow::bail!(
                "{} exists and is not a socket; pass --api-socket to use another path",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} root-only", path.display()))?;
    Ok(listener)
}

/// Serves until `shutdown` resolves, then removes the socket file.
pub async fn serve_unix(
    path: PathBuf,
    listener: tokio::net::UnixListener,
    view: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let result = axum::serve(listener, router(view))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the local API");
    let _ = std::fs::remove_file(&path);
    result
}

pub async fn serve_tcp(
    addr: std::net::SocketAddr,
    view: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the local API on {addr}"))?;
    axum::serve(listener, router(view))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the local API")
}
