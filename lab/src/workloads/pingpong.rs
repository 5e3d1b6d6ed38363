//! A context-switch storm: pairs of threads bouncing one byte over pipes.

use std::{
    io::{Read as _, Write as _},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

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
