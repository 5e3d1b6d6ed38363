//! The receivers' connections, served by hyper (HTTP/1.1, and HTTP/2 with prior knowledge for
//! gRPC) with limits a sender cannot talk its way around: at most `MAX_CONNECTIONS` open per
//! listener (past it a connection is closed at once, counted); a connection must send its first
//! bytes, and each request its headers, within `HEADER_READ_TIMEOUT` (slow-loris and idle
//! keep-alive connections are closed, counted); HTTP/2 streams per connection are capped and
//! dead peers found by keepalive pings. Each request carries its connection's [`Origin`] as an
//! extension. Shutdown stops accepting and lets requests in flight finish.

use std::{future::Future, sync::Arc, sync::atomic::Ordering, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    sync::Semaphore,
};

use tokio_rustls::TlsAcceptor;

use super::ingress::{IngressStats, Origin};

/// Connections one listener keeps open; an OTLP sender needs one or two.
pub(crate) const MAX_CONNECTIONS: usize = 1024;
/// A connection's first bytes, and an HTTP/1.1 request's headers (from the moment the
/// connection is idle), must arrive within this.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams one HTTP/2 connection may have open at once: a single sender cannot queue an
/// unbounded number of buffered messages on one connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 16;
/// An HTTP/2 connection whose peer does not answer a ping within this is closed.
const KEEPALIVE: Duration = Duration::from_secs(20);
/// After a failed accept (out of file descriptors), the listener waits this before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A listener whose connections the receivers serve, with what the kernel says of each.
pub(crate) trait Listener: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_with_origin(
        &self,
    ) -> impl Future<Output = std::io::Result<(Self::Io, Origin)>> + Send;
    /// Resolves when the connection has bytes to read (or is closed).
    fn readable(io: &Self::Io) -> impl Future<Output = std::io::Result<()>> + Send;
}

impl Listener for TcpListener {
    type Io = TcpStream;

    /// Both ends: the local end is the accepted socket's own address, not the listener's (on
    /// `0.0.0.0` only the former names the address the sender connected to).
    async fn accept_with_origin(&self) -> std::io::Result<(TcpStream, Origin)> {
        let (stream, peer) = self.accept().await?;
        let origin = Origin {
            peer: Some(peer),
            local: stream.local_addr().ok(),
            peer_pid: None,
        };
        Ok((stream, origin))
    }

    async fn readable(io: &TcpStream) -> std::io::Result<()> {
        loop {
            io.readable().await?;
            match io.try_io(tokio::io::Interest::READABLE, || peek(io)) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                other => return other,
            }
        }
    }
}

impl Listener for UnixListener {
    type Io = UnixStream;

    /// The peer process (`SO_PEERCRED`), in the agent's pid namespace.
    async fn accept_with_origin(&self) -> std::io::Result<(UnixStream, Origin)> {
        let (stream, _) = self.accept().await?;
        let peer_pid = stream
            .peer_cred()
            .ok()
            .and_then(|cred| cred.pid())
            .and_then(|pid| u32::try_from(pid).ok());
        Ok((
            stream,
            Origin {
                peer_pid,
                ..Origin::default()
            },
        ))
    }

    async fn readable(io: &UnixStream) -> std::io::Result<()> {
        loop {
            io.readable().await?;
            match io.try_io(tokio::io::Interest::READABLE, || peek(io)) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                other => return other,
            }
        }
    }
}

/// Whether a byte (or the end of the stream) is there to read, without reading it: the
/// runtime's readiness alone can be spurious for a socket that has sent nothing yet.
fn peek(io: &impl std::os::fd::AsRawFd) -> std::io::Result<()> {
    let mut byte = 0u8;
    // SAFETY: a one-byte buffer we own, on a socket this process holds open.
    let n = unsafe {
        libc::recv(
            io.as_raw_fd(),
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn builder(header_read_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE);
    builder
}

/// Serves `router` on `listener` until `shutdown` resolves, then waits for the connections'
/// requests in flight (the supervisor's deadline bounds the wait). With `tls`, each connection
/// is served once its handshake completes, which must happen within the header read timeout.
pub(crate) async fn serve<L: Listener>(
    listener: L,
    router: axum::Router,
    tls: Option<TlsAcceptor>,
    stats: Arc<IngressStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_within(listener, router, tls, stats, shutdown, HEADER_READ_TIMEOUT).await
}

async fn serve_within<L: Listener>(
    listener: L,
    router: axum::Router,
    tls: Option<TlsAcceptor>,
    stats: Arc<IngressStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    header_read_timeout: Duration,
) -> anyhow::Result<()> {
    let builder = Arc::new(builder(header_read_timeout));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept_with_origin() => accepted,
            () = &mut shutdown => break,
        };
        let (io, origin) = match accepted {
            Ok(a) => a,
            Err(err) => {
                log::debug!("accepting an OTLP connection: {err}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let service = TowerToHyperService::new(router.clone().layer(axum::Extension(origin)));
        let (builder, stats, tls) = (builder.clone(), stats.clone(), tls.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // A connection that sends nothing holds a slot for no longer than a request's
            // headers may take.
            if !matches!(
                tokio::time::timeout(header_read_timeout, L::readable(&io)).await,
                Ok(Ok(()))
            ) {
                stats.connections_timed_out.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let served = match tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(tls) => {
                    match tokio::time::timeout(header_read_timeout, tls.accept(io)).await {
                        Ok(Ok(io)) => {
                            let conn =
                                builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                            watcher.watch(conn.into_owned()).await
                        }
                        Ok(Err(err)) => {
                            stats.rejected_tls.fetch_add(1, Ordering::Relaxed);
                            log::debug!("TLS handshake with {:?}: {err}", origin.peer);
                            Ok(())
                        }
                        Err(_) => {
                            stats.connections_timed_out.fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        }
                    }
                }
            };
            if let Err(err) = served {
                if is_timeout(err.as_ref()) {
                    stats.connections_timed_out.fetch_add(1, Ordering::Relaxed);
                } else {
                    log::debug!("OTLP connection from {:?}: {err}", origin.peer);
                }
            }
            drop(slot);
        });
    }
    graceful.shutdown().await;
    Ok(())
}

/// Whether a connection ended for its header read timeout.
fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    /// A connection that sends nothing, and one that trickles a request's headers, are closed
    /// and counted; a request sent in time is served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silent_and_trickling_connections_are_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(IngressStats::default());
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let server = tokio::spawn(serve_within(
            listener,
            router,
            None,
            stats.clone(),
            std::future::pending(),
            Duration::from_millis(300),
        ));
        let outcome = tokio::task::spawn_blocking(move || {
            let closed_within = |mut s: std::net::TcpStream| {
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                let mut buf = [0u8; 64];
                let started = std::time::Instant::now();
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return Some(started.elapsed());
                    }
                }
                None
            };
            let silent = std::net::TcpStream::connect(addr).unwrap();
            let mut trickling = std::net::TcpStream::connect(addr).unwrap();
            trickling.write_all(b"GET / HT").unwrap();
            let mut served = std::net::TcpStream::connect(addr).unwrap();
            served
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            served.read_to_string(&mut answer).unwrap();
            (closed_within(silent), closed_within(trickling), answer)
        })
        .await
        .unwrap();
        let (silent, trickling, answer) = outcome;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(silent.is_some(), "a silent connection stayed open");
        assert!(trickling.is_some(), "a trickling connection stayed open");
        // The server counts a connection after closing it: the client may see the close first.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while stats.connections_timed_out.load(Ordering::Relaxed) < 2
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.connections_timed_out.load(Ordering::Relaxed), 2);
        server.abort();
    }
}
