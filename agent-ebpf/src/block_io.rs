//! The block device a watched thread's I/O goes to: `block_bio_queue` runs in the submitting
//! thread's context for every bio, before any merging or plugging, so the thread that will
//! wait in `io_schedule()` for it is the current task. Kept per thread, the device names its
//! next I/O wait. An unwatched submitter costs one hash lookup.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use culprit_common::OFFSET_ABSENT;

use crate::{config::kernel_offsets, task::read_kernel, thread_state};

#[btf_tracepoint(function = "block_bio_queue")]
pub fn block_bio_queue(ctx: BtfTracePointContext) -> i32 {
    let off = kernel_offsets();
    if off.bio_bdev == OFFSET_ABSENT || off.block_device_dev == OFFSET_ABSENT {
        return 0;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let bio: *const u8 = ctx.arg(0);
    let Ok(bdev) = read_kernel::<*const u8>(bio, off.bio_bdev) else {
        return 0;
    };
    if bdev.is_null() {
        return 0;
    }
    if let Ok(dev) = read_kernel::<u32>(bdev, off.block_device_dev) {
        thread_state::note_io_device(tid, dev);
    }
    0
}
