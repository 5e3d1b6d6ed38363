//! The generators themselves.

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

fn spin_until(deadline: Instant) {
    let mut x = 0u64;
    while Instant::now() < deadline {
        for _ in 0..1000 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    black_box(x);
}
