//! Reading a watched thread's published context (OTEP 4947) while it is stopped: as it leaves a
//! CPU (`sched_switch`, where it is still the current task) or when the sampler interrupts it.
//! Only processes the agent found publishing one have a `CONTEXT_LOCATIONS` entry; for every
//! other thread this costs one hash lookup.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_user},
    macros::map,
    maps::HashMap,
};
use culprit_common::{
    DropCounter, KernelOffsets, OFFSET_ABSENT,
    context::{
        ContextLocation, PF_WORKER_FLAGS, RECORD_SPAN_ID_OFFSET, RecordTail, variable_address,
    },
};

use crate::drops::count_drop;

#[map(name = "CONTEXT_LOCATIONS")]
static CONTEXT_LOCATIONS: HashMap<u32, ContextLocation> = HashMap::with_max_entries(4096, 0);

/// Whether process `tgid` publishes a context the agent located.
#[inline(always)]
pub fn publishes(tgid: u32) -> bool {
    unsafe { CONTEXT_LOCATIONS.get(tgid) }.is_some()
}

/// The span of the current task's (`task`, of process `tgid`) published context: 0 when it has
/// none, `last` (what it had) when its process publishes none or a read failed.
#[inline(always)]
pub fn current_span(task: *const u8, tgid: u32, off: &KernelOffsets, last: u64) -> u64 {
    let Some(loc) = (unsafe { CONTEXT_LOCATIONS.get(tgid) }) else {
        return last;
    };
    if off.task_fsbase == OFFSET_ABSENT {
        return last;
    }
    match read_span(task, loc, off) {
        Ok(span) => span,
        Err(()) => {
            count_drop(DropCounter::ContextReadFailed);
            last
        }
    }
}

#[inline(always)]
fn read_span(task: *const u8, loc: &ContextLocation, off: &KernelOffsets) -> Result<u64, ()> {
    if off.task_flags != OFFSET_ABSENT {
        let flags: u32 =
            unsafe { bpf_probe_read_kernel(task.add(off.task_flags as usize) as *const u32) }
                .map_err(|_| ())?;
        if flags & PF_WORKER_FLAGS != 0 {
            return Ok(0);
        }
    }
    let fsbase: u64 =
        unsafe { bpf_probe_read_kernel(task.add(off.task_fsbase as usize) as *const u64) }
            .map_err(|_| ())?;
    let read_u64 = |addr: u64| unsafe { bpf_probe_read_user(addr as *const u64) }.ok();
    // No block for the variable in this thread: it never set a context.
    let Some(variable) = variable_address(loc, fsbase, read_u64) else {
        return Ok(0);
    };
    let record = read_u64(variable).ok_or(())?;
    if record == 0 {
        return Ok(0);
    }
    let tail: RecordTail =
        unsafe { bpf_probe_read_user((record + RECORD_SPAN_ID_OFFSET) as *const RecordTail) }
            .map_err(|_| ())?;
    Ok(tail.span())
}
