//! OTLP in: the gRPC (4317) and HTTP (4318, protobuf and JSON) receivers, their limits, and the
//! messages they hand to the agent. Traces are joined with kernel signals; metrics and logs pass
//! through untouched, so the agent can be the node's single OTLP endpoint.

pub(crate) mod connections;
pub(crate) mod grpc;
pub mod http;
pub(crate) mod ingress;
pub mod raw_codec;
pub mod receiver_security;
pub(crate) mod rpc_status;
pub(crate) mod work_limit;

pub(crate) use ingress::{Inbound, Origin};
pub use ingress::{Ingress, Payload};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

/// How long a busy receiver asks senders to wait (HTTP `Retry-After`, gRPC `RetryInfo`).
pub(crate) const BUSY_RETRY_AFTER_S: u64 = 1;

/// A string attribute.
pub(crate) fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_string())),
        }),
        ..KeyValue::default()
    }
}

/// The value of attribute `key` in an OTLP attribute list.
pub fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()
}

/// Binds a receiver's listener, naming it in the error.
pub(crate) async fn bind(
    addr: std::net::SocketAddr,
    what: &str,
) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the {what} receiver to {addr}: {e}"))
}

/// Serves a receiver's `router` on TCP `addr` with what `security` requires of senders, until
/// `shutdown` resolves; `what` names it (`OTLP/gRPC`) in the log and `culprit status`.
pub(crate) async fn serve_tcp(
    addr: std::net::SocketAddr,
    what: &str,
    router: axum::Router,
    security: receiver_security::ReceiverSecurity,
    stats: std::sync::Arc<ingress::IngressStats>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = bind(addr, what).await?;
    let local = listener.local_addr()?;
    log::info!("{what} receiver on {local}{}", security.describe());
    stats.on_bound(format!("{what} {local}{}", security.describe()));
    let refusals = stats.clone();
    let router = security.guard(router, move || {
        refusals
            .rejected_unauthenticated
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    connections::serve(listener, router, security.tls, stats, shutdown).await
}

/// Binds a receiver's unix socket: a stale socket file from an earlier run is replaced, and the
/// socket is opened to every user (pods run as any uid; the peer is identified by the kernel,
/// never trusted for its uid).
pub(crate) fn bind_unix(
    path: &std::path::Path,
    what: &str,
) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    let context = |e: std::io::Error| {
        anyhow::anyhow!(
            "binding the {what} receiver to unix:{}: {e}",
            path.display()
        )
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(context)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(context)?,
        Ok(_) => {
            return Err(context(std::io::Error::other(
                "the path exists and is not a socket",
            )));
        }
        Err(_) => {}
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(context)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(context)?;
    Ok(listener)
}

/// Removes a receiver's socket file at shutdown, unless another agent has bound the path since
/// (its socket is a different inode).
pub(crate) fn unbind_unix(path: &std::path::Path, listener_inode: Option<u64>) {
    use std::os::unix::fs::MetadataExt as _;
    if std::fs::symlink_metadata(path).is_ok_and(|m| Some(m.ino()) == listener_inode) {
        let _ = std::fs::remove_file(path);
    }
}

/// The inode of the socket file just bound at `path`.
pub(crate) fn socket_inode(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}
