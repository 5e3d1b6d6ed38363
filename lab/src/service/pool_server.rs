//! The service as a prefork-style pool (gunicorn's sync workers, a thread-per-connection
//! server): each worker accepts a connection, reads its request, serves it and closes it. While
//! every worker is busy, a request waits in the kernel (the listen backlog, then the accepted
//! connection's receive queue), where no span sees it; its span starts when a worker reads it.
//! The client's `traceparent` parents the span, so the client's latency joins with it.
//!
//! `/pooled` computes a fifth of `/cpu`'s work and waits the rest on a dependency (a sleep, as a
//! database call would): the pool, not the CPU, is what saturates. `/cpu` is `/cpu`.

use std::{
    collections::HashMap,
    io::{ErrorKind, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::Context as _;
use opentelemetry::{
    KeyValue,
    propagation::TextMapPropagator as _,
    trace::{Span as _, SpanKind, Tracer as _},
};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracer};

use super::routes::CPU_ROUTE;
use crate::workloads;

/// The pool's route: a fifth of `/cpu`'s work, then a wait on a dependency.
pub(crate) const POOL_ROUTE: &str = "GET /pooled";

/// A request head larger than this is refused: the lab's clients send a few hundred bytes.
const MAX_HEAD_BYTES: usize = 8 << 10;
/// How often an idle worker looks at the stop flag.
const IDLE_POLL_MS: i32 = 100;

/// (span id, serving thread) of every request span, for `--record` (this pool's and the
/// HTTP library's workers').
pub(crate) type ServedThreads = Arc<std::sync::Mutex<Vec<(String, i64)>>>;

pub(crate) struct Pool {
    pub(crate) tracer: SdkTracer,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) served: Arc<AtomicU64>,
    pub(crate) cpu_work: Duration,
    pub(crate) thread_attr: bool,
    /// Where each span's serving thread is recorded, if asked (`--record`).
    pub(crate) truth: Option<ServedThreads>,
}

/// Serves `listen` from `workers` threads until the stop flag is set.
pub(crate) fn serve(
    listen: std::net::SocketAddr,
    workers: usize,
    pool: Pool,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    // Non-blocking, so that an idle worker can wake to see the stop flag; every worker polls
    // the listener and the one whose accept succeeds serves.
    listener.set_nonblocking(true)?;
    let pool = Arc::new(pool);
    let threads: Vec<_> = (0..workers.max(1))
        .map(|_| {
            let listener = listener.try_clone()?;
            let pool = pool.clone();
            Ok(thread::spawn(move || worker(&listener, &pool)))
        })
        .collect::<anyhow::Result<_>>()?;
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn worker(listener: &TcpListener, pool: &Pool) {
    let tid = i64::from(unsafe { libc::gettid() });
    while !pool.stop.load(Ordering::SeqCst) {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the listener's open descriptor.
        if unsafe { libc::poll(&mut pfd, 1, IDLE_POLL_MS) } <= 0 {
            continue;
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => {
                eprintln!("lab-service: accepting: {e}");
                continue;
            }
        };
        if let Err(e) = serve_connection(stream, pool, tid) {
            eprintln!("lab-service: serving a connection: {e:#}");
        }
    }
}

/// The request line's path and the headers, lower-cased names.
fn parse_head(head: &str) -> Option<(String, HashMap<String, String>)> {
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let _method = request_line.next()?;
    let path = request_line.next()?.split('?').next()?.to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((path, headers))
}

fn read_head(stream: &mut TcpStream) -> anyhow::Result<String> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        anyhow::ensure!(head.len() < MAX_HEAD_BYTES, "request head over 8 KiB");
        let n = stream.read(&mut chunk)?;
        anyhow::ensure!(n > 0, "connection closed before the request's end");
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn serve_connection(mut stream: TcpStream, pool: &Pool, tid: i64) -> anyhow::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let head = read_head(&mut stream)?;
    let (path, headers) = parse_head(&head).context("malformed request line")?;
    let (status, body) = match path.as_str() {
        "/pooled" | "/cpu" => {
            let cpu_route = path == "/cpu";
            let parent = TraceContextPropagator::new().extract(&headers);
            let mut attributes = vec![
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("http.route", path.clone()),
                KeyValue::new("url.path", path.clone()),
            ];
            if pool.thread_attr {
                attributes.push(KeyValue::new("culprit.thread.tid", tid));
            }
            let mut span = pool
                .tracer
                .span_builder(if cpu_route { CPU_ROUTE } else { POOL_ROUTE })
                .with_kind(SpanKind::Server)
                .with_attributes(attributes)
                .start_with_context(&pool.tracer, &parent);
            if cpu_route {
                workloads::busy(pool.cpu_work);
            } else {
                workloads::busy(pool.cpu_work / 5);
                thread::sleep(pool.cpu_work * 4 / 5);
            }
            span.set_attribute(KeyValue::new("http.response.status_code", 200));
            if let Some(truth) = &pool.truth
                && let Ok(mut truth) = truth.lock()
            {
                truth.push((span.span_context().span_id().to_string(), tid));
            }
            let written = respond(&mut stream, 200, "done");
            span.end();
            written?;
            pool.served.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        "/health" => (200, "ok"),
        _ => (404, "not found"),
    };
    respond(&mut stream, status, body)
}

fn respond(stream: &mut TcpStream, status: u16, body: &str) -> anyhow::Result<()> {
    let reason = if status == 200 { "OK" } else { "Not Found" };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_head_gives_its_path_and_headers() {
        let (path, headers) = parse_head(
            "GET /pooled?x=1 HTTP/1.1\r\nHost: a\r\nTraceParent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n",
        )
        .unwrap();
        assert_eq!(path, "/pooled");
        assert_eq!(
            headers["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(parse_head(""), None);
        assert_eq!(parse_head("GET"), None);
    }
}
