//! Pages of a mapped file, and an evictor that drops them from the page cache: the page-fault
//! scenario. The service's `/mapped` requests read a few pages of a file through a mapping, as
//! a service reads its index or model weights; while the page cache holds them that is a minor
//! fault per page (microseconds). Memory pressure elsewhere on the node evicts clean file pages
//! first: the evictor stands for it, and each page a request touches is then a major fault that
//! reads the page from the disk.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;

const PAGE_BYTES: usize = 4096;
/// The part of the data file the requests read: their working set, cached in the reference.
pub(crate) const HOT_BYTES: usize = 8 << 20;
/// Pages one `/mapped` request reads, far apart (no two in one read-around).
pub(crate) const PAGES_PER_REQUEST: usize = 16;
/// How often the evictor drops the working set from the page cache.
const EVICT_EVERY: Duration = Duration::from_millis(2);

/// A read-only shared mapping of a file's first [`HOT_BYTES`], read a page at a time.
pub(crate) struct MappedPages {
    base: *mut u8,
    pages: usize,
    next: usize,
    _file: File,
}

// SAFETY: the mapping is plain memory owned by the value, read only through it.
unsafe impl Send for MappedPages {}

impl MappedPages {
    /// Maps `path` (at least [`HOT_BYTES`] long) with random access advised, so that a fault
    /// reads its own page and no read-around, and reads it all once: cached from the start.
    pub(crate) fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        anyhow::ensure!(
            file.metadata()?.len() >= HOT_BYTES as u64,
            "{} is shorter than {HOT_BYTES} bytes",
            path.display()
        );
        // SAFETY: a read-only shared mapping of an open file's first HOT_BYTES, checked for
        // failure, unmapped in Drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                HOT_BYTES,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mapping the data file");
        }
        // SAFETY: the range is the mapping just made.
        if unsafe { libc::madvise(base, HOT_BYTES, libc::MADV_RANDOM) } != 0 {
            return Err(std::io::Error::last_os_error()).context("madvise(MADV_RANDOM)");
        }
        let pages = Self {
            base: base.cast(),
            pages: HOT_BYTES / PAGE_BYTES,
            next: 0,
            _file: file,
        };
        for page in 0..pages.pages {
            pages.read_page(page);
        }
        pages.unmap_pages()?;
        Ok(pages)
    }

    fn read_page(&self, page: usize) -> u8 {
        // SAFETY: `page` < `self.pages`: inside the mapping.
        unsafe { std::ptr::read_volatile(self.base.add(page * PAGE_BYTES)) }
    }

    /// Drops the mapping's page table entries (the pages stay in the page cache): mapped pages
    /// cannot be evicted, and the next request must fault to read them again.
    fn unmap_pages(&self) -> anyhow::Result<()> {
        // SAFETY: the range is this value's mapping.
        if unsafe { libc::madvise(self.base.cast(), HOT_BYTES, libc::MADV_DONTNEED) } != 0 {
            return Err(std::io::Error::last_os_error()).context("madvise(MADV_DONTNEED)");
        }
        Ok(())
    }

    /// One request's reads: [`PAGES_PER_REQUEST`] pages, each a fault.
    pub(crate) fn read_request(&mut self) -> anyhow::Result<()> {
        let mut sum = 0u8;
        for _ in 0..PAGES_PER_REQUEST {
            // 127 is prime, so coprime with the power-of-two page count: every page in turn,
            // and consecutive reads 508 KiB apart.
            self.next = (self.next + 127) % self.pages;
            sum = sum.wrapping_add(self.read_page(self.next));
        }
        std::hint::black_box(sum);
        self.unmap_pages()
    }
}

impl Drop for MappedPages {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), HOT_BYTES) };
    }
}

/// Drops `path`'s first [`HOT_BYTES`] from the page cache every [`EVICT_EVERY`] until
/// `run_for` is over: what reclaim does to clean file pages under memory pressure.
pub fn evictor(path: &Path, run_for: Duration) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let deadline = Instant::now() + run_for;
    while Instant::now() < deadline {
        // SAFETY: a plain system call on an open descriptor.
        let err = unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                0,
                HOT_BYTES as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        anyhow::ensure!(err == 0, "posix_fadvise: error {err}");
        std::thread::sleep(EVICT_EVERY);
    }
    Ok(())
}
