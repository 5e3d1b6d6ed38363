//! Read-only globals the loader patches before the programs are verified.

use culprit_common::{KernelOffsets, ProbeConfig, TcpTracepointOffsets};

#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets::ZERO;

#[unsafe(no_mangle)]
static TCP_TP_OFFSETS: TcpTracepointOffsets = TcpTracepointOffsets::ZERO;

#[unsafe(no_mangle)]
static PROBE_CONFIG: ProbeConfig = ProbeConfig::DEFAULT;

// Volatile reads: the values are patched by the loader, the compiler must not fold the
// defaults above into the code.

#[inline(always)]
pub fn kernel_offsets() -> KernelOffsets {
    unsafe { core::ptr::read_volatile(&KERNEL_OFFSETS) }
}

#[inline(always)]
pub fn tcp_tp_offsets() -> TcpTracepointOffsets {
    unsafe { core::ptr::read_volatile(&TCP_TP_OFFSETS) }
}

#[inline(always)]
pub fn probe_config() -> ProbeConfig {
    unsafe { core::ptr::read_volatile(&PROBE_CONFIG) }
}
