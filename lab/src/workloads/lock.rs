//! A lock shared by the service's workers and a background thread that holds it in bursts: the
//! lock-contention scenario's chain of two. A request waits in `futex` for the holder; when a
//! hog delays the holder on its own CPU, the request waits for the hog through it.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::Context as _;

use super::busy;
use crate::faults::placement::pin_to_cpu;

/// How long the holder holds the lock each time, computing: longer than the scheduler's base
/// slice, so that a neighbour on its CPU can preempt it while it holds the lock.
pub(crate) const HOLD: Duration = Duration::from_millis(2);
/// How long the holder sleeps between holds: the lock is held a quarter of the time.
pub(crate) const HOLDER_PAUSE: Duration = Duration::from_millis(6);
/// The holder's nice value: a background thread (a cache refresher, a compactor) that runs at a
/// lower priority than the work around it, as such threads are set to. Beside a busy neighbour
/// it is preempted within its hold and waits several of the neighbour's slices for its turn: the
/// requests' wait is the neighbour's doing, not the few milliseconds the hold itself takes.
pub(crate) const HOLDER_NICE: i32 = 5;
/// How long a request computes with the lock held.
pub(crate) const REQUEST_HOLD: Duration = Duration::from_micros(200);
/// The holder thread's name, as the agent reports it (`culprit.lock.holder`).
pub const HOLDER_NAME: &str = "lock-holder";

/// The shared lock and its holder thread, stopped with `stop`.
pub(crate) struct SharedLock {
    lock: Arc<Mutex<u64>>,
}

impl SharedLock {
    /// Starts the holder, pinned to `holder_cpu` (a CPU of its own, so that only a fault
    /// aimed there delays it).
    pub(crate) fn start(holder_cpu: usize, stop: Arc<AtomicBool>) -> anyhow::Result<SharedLock> {
        let lock = Arc::new(Mutex::new(0u64));
        let held = lock.clone();
        thread::Builder::new()
            .name(HOLDER_NAME.into())
            .spawn(move || {
                // Affinity is per thread: this pins the holder alone.
                if let Err(err) = pin_to_cpu(holder_cpu) {
                    eprintln!("lab-service: {err:#}");
                    return;
                }
                // SAFETY: a plain system call; on Linux the "process" of PRIO_PROCESS with a
                // thread id is that thread alone.
                if unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as u32, HOLDER_NICE)
                } != 0
                {
                    eprintln!(
                        "lab-service: renicing the lock holder: {}",
                        std::io::Error::last_os_error()
                    );
                }
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(mut n) = held.lock() {
                        busy(HOLD);
                        *n += 1;
                    }
                    thread::sleep(HOLDER_PAUSE);
                }
            })
            .context("starting the lock holder")?;
        Ok(SharedLock { lock })
    }

    /// A request's turn: waits for the lock, computes [`REQUEST_HOLD`] with it.
    pub(crate) fn take_turn(&self) -> anyhow::Result<()> {
        let mut n = self
            .lock
            .lock()
            .map_err(|_| anyhow::anyhow!("the shared lock is poisoned"))?;
        busy(REQUEST_HOLD);
        *n += 1;
        Ok(())
    }
}

impl Clone for SharedLock {
    fn clone(&self) -> Self {
        SharedLock {
            lock: self.lock.clone(),
        }
    }
}
