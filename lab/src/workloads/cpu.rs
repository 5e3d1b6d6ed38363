//! The generators themselves.

use std::{
    hint::black_box,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// Spins `threads` threads until `run_for` has passed.
pub fn hog(threads: usize, run_for: Duration) {
    let deadline = Instant::now() + run_for;
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| thread::spawn(move || spin_until(deadline)))
        .collect();
    for w in workers {
        let _ = w.join();
    }
}

/// Sleeps `period`, then works `work`, until `run_for` has passed.
pub fn wakeups(period: Duration, work: Duration, run_for: Duration) {
    let deadline = Instant::now() + run_for;
    while Instant::now() < deadline {
        thread::sleep(period);
        spin_until(Instant::now() + work);
    }
}

/// Sleeps `sleep` `count` times, with a short burst of work between sleeps, then lingers
/// (blocked) until `run_for` has passed.
pub fn sleeper(sleep: Duration, count: u32, run_for: Duration) {
    let deadline = Instant::now() + run_for;
    for _ in 0..count {
        thread::sleep(sleep);
        spin_until(Instant::now() + Duration::from_micros(200));
    }
    thread::sleep(deadline.saturating_duration_since(Instant::now()));
}

/// Burns CPU for `d`.
pub(crate) fn busy(d: Duration) {
    spin_until(Instant::now() + d);
}

fn spin_until(deadline: Instant) {
    let mut x = 0u64;
    while Instant::now() < deadline {
        for _ in 0..1000 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    black_box(x);
}

/// Serves fixed-size responses: each request is `size` bytes, answered with `size` bytes.
pub fn tcp_server(port: u16, size: usize, run_for: Duration) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    let deadline = Instant::now() + run_for;
    listener.set_nonblocking(true)?;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                thread::spawn(move || serve(stream, size));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn serve(mut stream: TcpStream, size: usize) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; size];
    while stream.read_exact(&mut buf).is_ok() {
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

/// A context-switch storm: `pairs` pairs of threads, all pinned to the calling thread's CPUs,
/// bouncing one byte back and forth over pipes. Every hop is a wakeup and a context switch.
/// `round_trips_per_s` per pair, in bursts each millisecond; 0 for as fast as the CPUs go.
pub fn pingpong(pairs: usize, round_trips_per_s: u64, run_for: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + run_for;
    let mut workers = Vec::new();
    for _ in 0..pairs.max(1) {
        let (a_read, b_write) = pipe()?;
        let (b_read, a_write) = pipe()?;
        workers.push(thread::spawn(move || {
            bounce(a_read, a_write, deadline, Some(round_trips_per_s))
        }));
        workers.push(thread::spawn(move || {
            bounce(b_read, b_write, deadline, None)
        }));
    }
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

fn pipe() -> anyhow::Result<(std::fs::File, std::fs::File)> {
    use std::os::fd::FromRawFd as _;
    let mut fds = [0i32; 2];
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe");
    }
    // SAFETY: pipe() just returned these two fresh descriptors.
    Ok(unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    })
}

/// One side of a pair: the side that serves first (`pace` given) sets the pace.
fn bounce(
    mut input: std::fs::File,
    mut output: std::fs::File,
    deadline: Instant,
    pace: Option<u64>,
) {
    let mut byte = [0u8; 1];
    if pace.is_some() && output.write_all(&byte).is_err() {
        return;
    }
    let rate = pace.filter(|&r| r > 0);
    // Bursts of about a millisecond's worth, each due at its exact share of the second.
    let burst = rate.map_or(1, |r| (r / 1000).max(1));
    let started = Instant::now();
    let mut done: u64 = 0;
    while Instant::now() < deadline {
        if input.read_exact(&mut byte).is_err() || output.write_all(&byte).is_err() {
            return;
        }
        done += 1;
        if let Some(rate) = rate
            && done.is_multiple_of(burst)
        {
            let due = started + Duration::from_nanos(done.saturating_mul(1_000_000_000) / rate);
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
        }
    }
}
