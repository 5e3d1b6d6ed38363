//! CPU-bound generators: a hog that never pauses, wakeups with a little work each, and sleeps.

use std::{
    fs,
    hint::black_box,
    io::Write as _,
    path::Path,
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

/// Sleeps `sleep` `count` times (fewer if `run_for` passes first), with a short burst of work
/// between sleeps, then lingers (blocked) until `run_for` has passed. With `record`, one line
/// per loop, in ns: the sleep's wall time as the sleeper measured it (until it ran again), the
/// whole loop's (sleep, burst, record), the CPU time the kernel charged the thread over the
/// loop (`CLOCK_THREAD_CPUTIME_ID`, its system calls' kernel work included), and the monotonic
/// clock at the loop's end (the clock of the agent's reports' `mono_ns`): the truth for what
/// the agent reports over the same window, which on an emulated or overcommitted machine is
/// well above the asked-for time.
pub fn sleeper(
    sleep: Duration,
    count: u32,
    run_for: Duration,
    record: Option<&Path>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + run_for;
    let mut record = record
        .map(|p| fs::File::create(p).with_context(|| format!("creating {}", p.display())))
        .transpose()?;
    for _ in 0..count {
        if Instant::now() >= deadline {
            break;
        }
        let (started, cpu_started_ns) = (Instant::now(), thread_cpu_ns());
        thread::sleep(sleep);
        let slept = started.elapsed();
        spin_until(Instant::now() + Duration::from_micros(200));
        if let Some(f) = record.as_mut() {
            writeln!(
                f,
                "{} {} {} {}",
                slept.as_nanos(),
                started.elapsed().as_nanos(),
                thread_cpu_ns().saturating_sub(cpu_started_ns),
                culprit::clock::monotonic_ns()
            )?;
        }
    }
    thread::sleep(deadline.saturating_duration_since(Instant::now()));
    Ok(())
}

/// The CPU time the kernel has charged the calling thread, in ns.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Cannot fail for this clock id and a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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
