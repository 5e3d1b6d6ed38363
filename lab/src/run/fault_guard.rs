//! An injected fault held for its phase: dropped, it is removed (the quota lifted, the limit
//! lifted, its processes killed, its rules deleted).

use crate::{
    faults::{cgroup::TempCgroup, packet_loss::PacketLoss, placement},
    process::reaped::Reaped,
};

/// A fault, removed when dropped.
pub(super) enum Fault<'a> {
    Hogs(#[allow(dead_code)] Reaped),
    Quota(&'a TempCgroup),
    Loss(#[allow(dead_code)] PacketLoss),
    Writers(#[allow(dead_code)] Reaped),
    Evictor(#[allow(dead_code)] Reaped, #[allow(dead_code)] Reaped),
    Memory(
        &'a TempCgroup,
        #[allow(dead_code)] Reaped,
        #[allow(dead_code)] placement::WritebackWorkers,
    ),
}

impl Drop for Fault<'_> {
    fn drop(&mut self) {
        if let Fault::Quota(cg) = self
            && let Err(err) = cg.set_cpu_quota(None)
        {
            eprintln!("warning: could not lift the CPU quota: {err:#}");
        }
        if let Fault::Memory(cg, _, _) = self
            && let Err(err) = cg.set_memory_limit(None)
        {
            eprintln!("warning: could not lift the memory limit: {err:#}");
        }
    }
}
