//! Threads that sleep for one reason each, for the tests of why a thread slept: in `futex` for a
//! lock another thread holds, in the I/O wait of reads past the page cache, or inside page faults
//! on a mapping whose pages were just dropped from the page cache.

use std::{
    fs::{File, OpenOptions},
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::Path,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

const PAGE_BYTES: usize = 4096;
/// How long the holder keeps the lock each time (asleep with it: the waiter's wait is the lock's
/// alone).
const LOCK_HOLD: Duration = Duration::from_millis(20);
/// The part of the device the reader and the faulter use.
const SPAN_BYTES: usize = 16 << 20;
/// Pages one round of the faulter touches.
const FAULTS_PER_ROUND: usize = 64;

/// Why the workload's threads sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WaitKind {
    /// A waiter blocks in `futex` on a mutex a holder keeps while it sleeps.
    Lock,
    /// 4 KiB reads of `device` with `O_DIRECT`.
    Io,
    /// Pages of `device` read through a mapping, dropped from the page cache each round.
    Fault,
}

/// Runs the threads of `kind` until `run_for` is over.
pub fn waits(kind: WaitKind, device: Option<&Path>, run_for: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + run_for;
    match kind {
        WaitKind::Lock => lock_waits(deadline),
        WaitKind::Io => io_waits(device.context("--device is needed")?, deadline),
        WaitKind::Fault => fault_waits(device.context("--device is needed")?, deadline),
    }
}

fn lock_waits(deadline: Instant) -> anyhow::Result<()> {
    let lock = Arc::new(Mutex::new(0u64));
    let held = lock.clone();
    let holder = thread::Builder::new()
        .name("lock-holder".into())
        .spawn(move || {
            while Instant::now() < deadline {
                if let Ok(mut n) = held.lock() {
                    thread::sleep(LOCK_HOLD);
                    *n += 1;
                }
                // Let the waiter in between two holds.
                thread::sleep(Duration::from_micros(200));
            }
        })
        .context("starting the holder")?;
    while Instant::now() < deadline {
        if let Ok(mut n) = lock.lock() {
            *n += 1;
        }
        thread::sleep(Duration::from_micros(100));
    }
    let _ = holder.join();
    Ok(())
}

/// An aligned buffer for `O_DIRECT`, freed on drop.
struct Page(*mut libc::c_void);

impl Page {
    fn new() -> anyhow::Result<Self> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: a plain allocation; the result is checked.
        let err = unsafe { libc::posix_memalign(&mut ptr, PAGE_BYTES, PAGE_BYTES) };
        anyhow::ensure!(err == 0 && !ptr.is_null(), "posix_memalign: {err}");
        Ok(Self(ptr))
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: allocated by posix_memalign in `new`.
        unsafe { libc::free(self.0) };
    }
}

fn io_waits(device: &Path, deadline: Instant) -> anyhow::Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(device)
        .with_context(|| format!("opening {} with O_DIRECT", device.display()))?;
    let page = Page::new()?;
    let mut at = 0usize;
    while Instant::now() < deadline {
        at = (at + 127 * PAGE_BYTES) % SPAN_BYTES;
        // SAFETY: reads one page into the page-sized buffer.
        let n = unsafe { libc::pread(file.as_raw_fd(), page.0, PAGE_BYTES, at as libc::off_t) };
        anyhow::ensure!(
            n > 0,
            "{}: {}",
            device.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn fault_waits(device: &Path, deadline: Instant) -> anyhow::Result<()> {
    let file = File::open(device).with_context(|| format!("opening {}", device.display()))?;
    // SAFETY: a read-only shared mapping of SPAN_BYTES of an open device, checked for failure
    // and unmapped below; read only inside its bounds.
    unsafe {
        let base = libc::mmap(
            std::ptr::null_mut(),
            SPAN_BYTES,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mapping the device");
        }
        // A fault reads its own page, no read-around.
        libc::madvise(base, SPAN_BYTES, libc::MADV_RANDOM);
        let pages = SPAN_BYTES / PAGE_BYTES;
        let mut next = 0usize;
        let mut sum = 0u8;
        while Instant::now() < deadline {
            // Unmapped and dropped from the page cache: each touch below is a major fault.
            libc::madvise(base, SPAN_BYTES, libc::MADV_DONTNEED);
            libc::posix_fadvise(
                file.as_raw_fd(),
                0,
                SPAN_BYTES as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
            for _ in 0..FAULTS_PER_ROUND {
                next = (next + 127) % pages;
                sum = sum.wrapping_add(std::ptr::read_volatile(
                    base.cast::<u8>().add(next * PAGE_BYTES),
                ));
            }
        }
        std::hint::black_box(sum);
        libc::munmap(base, SPAN_BYTES);
    }
    Ok(())
}
