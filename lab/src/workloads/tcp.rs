//! TCP request/response over loopback: a server answering fixed-size requests, and a client
//! sending them one after the other over one connection.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// Serves fixed-size responses: each request is `size` bytes, answered with `size` bytes after
/// `work` of computing (a downstream that does something for its answer).
pub fn tcp_server(
    listen: std::net::SocketAddr,
    size: usize,
    work: Duration,
    run_for: Duration,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let deadline = Instant::now() + run_for;
    listener.set_nonblocking(true)?;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                thread::spawn(move || serve(stream, size, work));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Asleep until a connection comes (or a second passes, for the deadline): a
                // server polling every few ms is a CPU neighbour of everything on its CPU.
                wait_readable(&listener, Duration::from_secs(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Waits until `listener` has a connection to accept, or `timeout` passes.
fn wait_readable(listener: &TcpListener, timeout: Duration) {
    use std::os::fd::AsRawFd as _;
    let mut fds = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut fds, 1, timeout.as_millis() as libc::c_int) };
}

fn serve(mut stream: TcpStream, size: usize, work: Duration) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; size];
    while stream.read_exact(&mut buf).is_ok() {
        if !work.is_zero() {
            super::busy(work);
        }
        if stream.write_all(&buf).is_err() {
            break;
        }
    }
}

/// Sends requests of `size` bytes over one connection and waits for each answer, until
/// `run_for` has passed.
pub fn tcp_client(port: u16, size: usize, run_for: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + run_for;
    let mut stream = connect_with_retry(port, deadline)?;
    stream.set_nodelay(true)?;
    let request = vec![7u8; size];
    let mut response = vec![0u8; size];
    while Instant::now() < deadline {
        stream.write_all(&request)?;
        stream.read_exact(&mut response)?;
    }
    Ok(())
}

fn connect_with_retry(port: u16, deadline: Instant) -> anyhow::Result<TcpStream> {
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() < deadline => {
                log_retry(&e);
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to 127.0.0.1:{port}")),
        }
    }
}

fn log_retry(e: &std::io::Error) {
    if e.kind() != std::io::ErrorKind::ConnectionRefused {
        eprintln!("culprit-lab: connect failed ({e}); retrying");
    }
}

/// `pairs` clients each exchanging `size`-byte requests and answers with a server thread over
/// a loopback connection of their own, in one process, until `run_for` has passed: every
/// segment passes the agent's per-segment TCP hooks (the storm of `bench-hooks --storm tcp`).
pub fn tcp_pingpong(pairs: usize, size: usize, run_for: Duration) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    let port = listener.local_addr()?.port();
    let pairs = pairs.max(1);
    thread::spawn(move || {
        for stream in listener.incoming().take(pairs).flatten() {
            thread::spawn(move || serve(stream, size, Duration::ZERO));
        }
    });
    let clients: Vec<_> = (0..pairs)
        .map(|_| thread::spawn(move || tcp_client(port, size, run_for)))
        .collect();
    for c in clients {
        c.join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pingpong_pairs_talk_until_their_time_is_up() {
        let started = Instant::now();
        tcp_pingpong(2, 64, Duration::from_millis(200)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(200));
    }
}
