//! Draining a kernel ring buffer from the async runtime.

use std::os::fd::AsRawFd as _;

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use tokio::io::unix::AsyncFd;

/// A ring buffer of fixed-size `#[repr(C)]` records of type `T`.
pub(crate) struct RingReader<T> {
    fd: AsyncFd<RingBuf<MapData>>,
    /// Items whose size did not match `T` (a layout mismatch between the two sides).
    pub malformed: u64,
    _record: std::marker::PhantomData<T>,
}

impl<T: Copy> RingReader<T> {
    pub(crate) fn new(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<Self> {
        let map = ebpf
            .take_map(name)
            .with_context(|| format!("{name} map missing from the eBPF object"))?;
        let ring = RingBuf::try_from(map)?;
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as the
        // AsyncFd owns the RingBuf.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("polling {name}: {}", e.into_parts().1))?;
        log::debug!(
            "reading ring buffer {name} (fd {})",
            fd.get_ref().as_raw_fd()
        );
        Ok(Self {
            fd,
            malformed: 0,
            _record: std::marker::PhantomData,
        })
    }

    /// Waits until the kernel signals new records. Readiness is cleared before the caller
    /// drains, so a record that lands after the drain wakes us again: none is left behind.
    pub(crate) async fn readable(&mut self) -> anyhow::Result<()> {
        let mut guard = self.fd.readable_mut().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Hands every record available now to `on_record`; returns how many there were.
    pub(crate) fn drain(&mut self, mut on_record: impl FnMut(T)) -> usize {
        let ring = self.fd.get_mut();
        let mut records = 0;
        while let Some(item) = ring.next() {
            records += 1;
            if item.len() < std::mem::size_of::<T>() {
                self.malformed += 1;
                continue;
            }
            // SAFETY: T is a plain #[repr(C)] record and the item is at least that long.
            on_record(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<T>()) });
        }
        records
    }
}
