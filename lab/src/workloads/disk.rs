//! Block I/O that bypasses the page cache (`O_DIRECT`): the service's `/disk` reads, and a
//! writer that keeps the device's queue full. Without `O_DIRECT` the reads would be served from
//! memory after the first pass and the writes would only dirty pages: neither would wait on
//! the device, which is what the `disk-io` scenario is about.

use std::{
    alloc::{Layout, alloc_zeroed, dealloc},
    fs::{File, OpenOptions},
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// `O_DIRECT` needs buffers, offsets and lengths aligned to the device's logical block; 4 KiB
/// covers every device the lab meets.
const ALIGN_BYTES: usize = 4096;
/// The file `/disk` reads from: large enough that its blocks are not all in a device cache.
pub(crate) const DATA_FILE_BYTES: u64 = 256 << 20;
/// One write of the writer: large requests fill the device's queue with few system calls.
const WRITE_BYTES: usize = 1 << 20;
/// Each writer thread cycles over a file this large.
const WRITER_FILE_BYTES: u64 = 256 << 20;

/// A zeroed buffer aligned for `O_DIRECT`.
struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len, ALIGN_BYTES).expect("a valid layout");
        // SAFETY: the layout has a non-zero size; a null result is handled below.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Self { ptr, layout }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` holds `layout.size()` initialised bytes owned by this value.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}

// SAFETY: the buffer is plain memory owned by the value.
unsafe impl Send for AlignedBuf {}

fn open_direct(path: &Path, write: bool) -> anyhow::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .create(write)
        .truncate(false)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .with_context(|| {
            format!(
                "opening {} with O_DIRECT (tmpfs and some file systems refuse it)",
                path.display()
            )
        })
}

/// The service's reads: `path` (created and filled to [`DATA_FILE_BYTES`] if shorter), read
/// one aligned block at a time at offsets spread over the whole file.
pub(crate) struct DirectReader {
    file: File,
    buf: AlignedBuf,
    blocks: u64,
    next: u64,
}

impl DirectReader {
    pub(crate) fn open(path: &Path, block_bytes: usize) -> anyhow::Result<Self> {
        let file = open_direct(path, true)?;
        if file.metadata()?.len() < DATA_FILE_BYTES {
            // Written through O_DIRECT as well: the blocks are on the device, not in memory.
            let mut chunk = AlignedBuf::new(WRITE_BYTES);
            chunk.as_mut_slice().fill(0x5a);
            let mut at = 0;
            while at < DATA_FILE_BYTES {
                file.write_all_at(chunk.as_mut_slice(), at)?;
                at += WRITE_BYTES as u64;
            }
            file.sync_all()?;
        }
        let block_bytes = block_bytes.next_multiple_of(ALIGN_BYTES);
        Ok(Self {
            file,
            buf: AlignedBuf::new(block_bytes),
            blocks: DATA_FILE_BYTES / block_bytes as u64,
            next: 0,
        })
    }

    /// Reads `count` blocks, each from another part of the file (a stride that visits every
    /// block before repeating one).
    pub(crate) fn read_blocks(&mut self, count: usize) -> anyhow::Result<()> {
        let block_bytes = self.buf.layout.size() as u64;
        for _ in 0..count {
            // 7919 is prime, so coprime with any block count that is a power of two.
            self.next = (self.next + 7919) % self.blocks;
            let n = self
                .file
                .read_at(self.buf.as_mut_slice(), self.next * block_bytes)?;
            anyhow::ensure!(n > 0, "read nothing at block {}", self.next);
        }
        Ok(())
    }
}

/// Keeps the device busy for `run_for`: `threads` threads, each writing [`WRITE_BYTES`] at a
/// time with `O_DIRECT | O_DSYNC` (every write reaches the device before the next) over a file
/// of its own in `dir`. Each file is unlinked once open: its space goes back when the writer
/// exits, however it is stopped (the lab kills it at the end of its phase).
pub fn disk_writer(dir: &Path, threads: usize, run_for: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + run_for;
    let paths: Vec<PathBuf> = (0..threads.max(1))
        .map(|i| dir.join(format!("culprit-lab-writer-{}-{i}", std::process::id())))
        .collect();
    let workers: Vec<_> = paths
        .iter()
        .cloned()
        .map(|path| {
            thread::spawn(move || -> anyhow::Result<()> {
                let file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
                    .open(&path)
                    .with_context(|| format!("opening {} with O_DIRECT", path.display()))?;
                std::fs::remove_file(&path)
                    .with_context(|| format!("unlinking {}", path.display()))?;
                let mut chunk = AlignedBuf::new(WRITE_BYTES);
                chunk.as_mut_slice().fill(0xa5);
                let mut at = 0;
                while Instant::now() < deadline {
                    file.write_all_at(chunk.as_mut_slice(), at)?;
                    at = (at + WRITE_BYTES as u64) % WRITER_FILE_BYTES;
                }
                Ok(())
            })
        })
        .collect();
    let mut result = Ok(());
    for w in workers {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => result = Err(err),
            Err(_) => result = Err(anyhow::anyhow!("a writer thread panicked")),
        }
    }
    result
}

/// The name of the block device holding `path` (`vda`, `nvme0n1p2`), as sysfs spells it: the
/// truth the agent's `culprit.disk.device` is checked against.
pub fn block_device_name(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let uevent = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent")).ok()?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .map(str::to_string)
}
