//! CPU-bound generators: a hog that never pauses, wakeups with a little work each, and sleeps.

use std::{
    hint::black_box,
    thread,
    time::{Duration, Instant},
};

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
