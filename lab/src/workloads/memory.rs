//! Memory pressure inside one memory cgroup: the service's `/alloc` requests fault in fresh
//! anonymous memory, and a dirtier (a neighbour in the same cgroup: a sidecar writing logs)
//! fills the cgroup's page cache with dirty pages. Under the cgroup's limit each new page of a
//! request is charged only after reclaim frees one, and reclaim must wait for dirty pages to be
//! written back: the request stalls on memory.

use std::{
    fs::OpenOptions,
    io::{Seek as _, SeekFrom, Write as _},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// What one `/alloc` request faults in. At 16 MiB a request spent 20 ms on CPU faulting in
/// (reference) and 40-130 ms under the pressure, and the service's two workers overlapped so
/// often that 5-6% of the slow requests' excess was each waiting for the CPU behind the other's
/// faulting (its own concurrency, not the fault under test); at 8 MiB half as often.
pub(crate) const ALLOC_BYTES: usize = 8 << 20;
/// One buffered write of the dirtier.
const DIRTY_WRITE_BYTES: usize = 1 << 20;
/// The dirtier cycles over a file this large (rewriting it from the start), so that the disk
/// never fills.
const DIRTY_FILE_BYTES: u64 = 1 << 30;
const PAGE_BYTES: usize = 4096;

/// Maps `bytes` of fresh anonymous memory, writes one byte per page (each write a page fault
/// and a charge to the thread's memory cgroup) and unmaps it: straight `mmap`, not the
/// allocator, which could hand back pages it already holds.
pub(crate) fn alloc_touch(bytes: usize) -> anyhow::Result<()> {
    // SAFETY: a private anonymous mapping of `bytes`, checked for failure, written only inside
    // its bounds and unmapped once.
    unsafe {
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mapping memory");
        }
        let base = ptr.cast::<u8>();
        for offset in (0..bytes).step_by(PAGE_BYTES) {
            std::ptr::write_volatile(base.add(offset), 1);
        }
        libc::munmap(ptr, bytes);
    }
    Ok(())
}

/// Writes through the page cache into a file in `dir` until `run_for` is over: dirty pages as
/// fast as the disk takes them. The file is unlinked once open: its space goes back when the
/// dirtier exits, however it is stopped (the lab kills it at the end of its phase).
pub fn dirtier(dir: &Path, run_for: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + run_for;
    let path = dir.join(format!("culprit-lab-dirtier-{}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    std::fs::remove_file(&path).with_context(|| format!("unlinking {}", path.display()))?;
    let chunk = vec![0x5a_u8; DIRTY_WRITE_BYTES];
    let mut written = 0u64;
    while Instant::now() < deadline {
        file.write_all(&chunk)?;
        written += DIRTY_WRITE_BYTES as u64;
        if written >= DIRTY_FILE_BYTES {
            file.seek(SeekFrom::Start(0))?;
            written = 0;
        }
    }
    Ok(())
}

/// Faults in `mib` MiB of anonymous memory, a page at a time, keeping all of it, then waits out
/// `run_for`: a worker over its cgroup's memory limit, killed by the kernel on the way.
pub fn memory_hog(mib: u64, run_for: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + run_for;
    let mut held: Vec<Vec<u8>> = Vec::new();
    for _ in 0..mib {
        let mut chunk = vec![0u8; 1 << 20];
        for offset in (0..chunk.len()).step_by(PAGE_BYTES) {
            // Volatile: every page is written, so every page is charged.
            unsafe { std::ptr::write_volatile(chunk.as_mut_ptr().add(offset), 1) };
        }
        held.push(chunk);
    }
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(held);
    Ok(())
}
