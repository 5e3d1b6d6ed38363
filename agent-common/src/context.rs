//! The OpenTelemetry thread context (OTEP 4947, record layout v1): a process publishes, per
//! thread, a pointer in the ELF TLS variable `otel_thread_ctx_v1` to a record holding the
//! thread's active trace id and span id. The agent finds the variable once per process (its
//! place relative to the thread pointer, [`ContextLocation`]); the programs read it for a watched
//! thread while it is stopped (leaving a CPU, or interrupted by the sampler), as the spec
//! requires.
//!
//! Record (packed, native endianness): trace-id `[u8; 16]`, span-id `[u8; 8]`, valid `u8` (1:
//! valid, anything else: ignore), trace-flags `u8`, attrs-data-size `u16`, attrs-data.

/// How a process's `otel_thread_ctx_v1` is reached from a thread's thread pointer (x86_64
/// `fsbase`).
pub mod slot_kind {
    /// Static TLS (local-exec, initial-exec, or a TLS descriptor resolved to static TLS): the
    /// variable is at `thread pointer + tp_offset`.
    pub const THREAD_POINTER: u32 = 1;
    /// Dynamic TLS (a `dlopen`ed module): the variable is at `dtv[dtv_module] + dtv_offset`,
    /// the dtv being the word at `thread pointer + DTV_POINTER_OFFSET` (glibc's `tcbhead_t`).
    pub const DTV: u32 = 2;
}

/// glibc x86_64: `tcbhead_t { void *tcb; dtv_t *dtv; ... }` at the thread pointer.
pub const DTV_POINTER_OFFSET: u64 = 8;
/// A `dtv_t` entry: `{ void *val; void *to_free; }`; entry `m` is module `m`'s block.
pub const DTV_ENTRY_BYTES: u64 = 16;
/// A dtv entry whose block was never allocated in this thread (glibc's
/// `TLS_DTV_UNALLOCATED`): the thread never touched the module's TLS, so it has no context.
pub const DTV_UNALLOCATED: u64 = u64::MAX;
/// Offset of span-id in the record; valid, trace-flags and attrs-data-size follow it.
pub const RECORD_SPAN_ID_OFFSET: u64 = 16;
/// `task_struct.flags` of threads that share their creator's thread pointer without being its
/// threads (io_uring workers, `PF_IO_WORKER`; vhost and other user workers, `PF_USER_WORKER`):
/// their intervals are no request's.
pub const PF_WORKER_FLAGS: u32 = 0x0000_0010 | 0x0000_4000;
/// The record's valid byte when the record may be read.
pub const RECORD_VALID: u8 = 1;

/// Where a process's context variable is (map `CONTEXT_LOCATIONS`, keyed by tgid). Only
/// processes that publish a context have an entry: the programs read nothing for the others.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContextLocation {
    /// One of [`slot_kind`].
    pub kind: u32,
    pub _pad: u32,
    pub tp_offset: i64,
    pub dtv_module: u64,
    pub dtv_offset: u64,
}

const _: () = assert!(core::mem::size_of::<ContextLocation>() == 32);

/// The record's bytes from span-id to attrs-data-size: what the programs read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordTail {
    pub span_id: [u8; 8],
    pub valid: u8,
    pub trace_flags: u8,
    pub attrs_data_size: u16,
}

const _: () = assert!(core::mem::size_of::<RecordTail>() == 12);

impl RecordTail {
    /// The span this record names, as the first 8 bytes of span-id in memory order (how the
    /// agent keys a span id too); 0: invalid or no span.
    #[inline(always)]
    pub fn span(&self) -> u64 {
        if self.valid != RECORD_VALID {
            return 0;
        }
        u64::from_ne_bytes(self.span_id)
    }
}

/// The key the programs tag intervals with for an OTLP span id (8 bytes): 0 for anything else.
pub fn span_key(span_id: &[u8]) -> u64 {
    <[u8; 8]>::try_from(span_id).map_or(0, u64::from_ne_bytes)
}

/// Where thread `fsbase`'s context variable is, reading the thread's memory with `read_u64`;
/// `None` when the thread has no block for it (never touched its module's TLS) or a read failed.
#[inline(always)]
pub fn variable_address(
    loc: &ContextLocation,
    fsbase: u64,
    read_u64: impl Fn(u64) -> Option<u64>,
) -> Option<u64> {
    if fsbase == 0 {
        return None;
    }
    match loc.kind {
        slot_kind::THREAD_POINTER => Some(fsbase.wrapping_add(loc.tp_offset as u64)),
        slot_kind::DTV => {
            let dtv = read_u64(fsbase.wrapping_add(DTV_POINTER_OFFSET))?;
            if dtv == 0 {
                return None;
            }
            // Entries this thread's dtv has (the word before entry 0, the generation): a module
            // loaded after the thread last grew it is beyond them.
            let entries = read_u64(dtv.wrapping_sub(DTV_ENTRY_BYTES))?;
            if loc.dtv_module == 0 || loc.dtv_module > entries {
                return None;
            }
            let block = read_u64(dtv.wrapping_add(loc.dtv_module.wrapping_mul(DTV_ENTRY_BYTES)))?;
            if block == 0 || block == DTV_UNALLOCATED {
                return None;
            }
            Some(block.wrapping_add(loc.dtv_offset))
        }
        _ => None,
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for ContextLocation {}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn static_tls_is_an_offset_from_the_thread_pointer() {
        let loc = ContextLocation {
            kind: slot_kind::THREAD_POINTER,
            tp_offset: -0x48,
            ..ContextLocation::default()
        };
        assert_eq!(
            variable_address(&loc, 0x7000_1000, |_| None),
            Some(0x7000_0fb8)
        );
        assert_eq!(variable_address(&loc, 0, |_| None), None);
    }

    #[test]
    fn dynamic_tls_goes_through_the_threads_dtv() {
        let loc = ContextLocation {
            kind: slot_kind::DTV,
            dtv_module: 3,
            dtv_offset: 0x10,
            ..ContextLocation::default()
        };
        let fsbase = 0x7000_0000;
        let dtv = 0x5000_0000;
        let mut mem = HashMap::from([
            (fsbase + 8, dtv),
            (dtv - 16, 4),
            (dtv + 3 * 16, 0x6000_0000),
        ]);
        let at = |m: &HashMap<u64, u64>, loc: &ContextLocation| {
            variable_address(loc, fsbase, |a| m.get(&a).copied())
        };
        assert_eq!(at(&mem, &loc), Some(0x6000_0010));
        // A module loaded after this thread's dtv was last grown.
        mem.insert(dtv - 16, 2);
        assert_eq!(at(&mem, &loc), None);
        mem.insert(dtv - 16, 4);
        // The thread never touched the module's TLS.
        mem.insert(dtv + 3 * 16, DTV_UNALLOCATED);
        assert_eq!(at(&mem, &loc), None);
        mem.remove(&(fsbase + 8));
        assert_eq!(at(&mem, &loc), None);
        assert_eq!(at(&mem, &ContextLocation::default()), None);
    }

    #[test]
    fn only_a_valid_record_names_a_span() {
        let mut tail = RecordTail {
            span_id: [1, 2, 3, 4, 5, 6, 7, 8],
            valid: RECORD_VALID,
            ..RecordTail::default()
        };
        assert_eq!(tail.span(), span_key(&[1, 2, 3, 4, 5, 6, 7, 8]));
        assert_ne!(tail.span(), 0);
        tail.valid = 2;
        assert_eq!(tail.span(), 0);
        assert_eq!(span_key(&[1, 2, 3]), 0);
    }
}
