//! OOM kills (`oom:mark_victim`, a classic tracepoint: its `pid` field is there on every
//! kernel, where the BTF arguments changed in 6.8). Rare: one record per kill, with the cgroup
//! of the task whose allocation failed, and the victim's own when it was that task.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
    },
    macros::{map, tracepoint},
    maps::RingBuf,
    programs::TracePointContext,
};
use culprit_common::{DropCounter, OFFSET_ABSENT, oom::OomRecord};

use crate::{
    config::{kernel_offsets, tcp_tp_offsets},
    drops::count_drop,
    task::{read_kernel, task_cgroup_id},
};

#[map(name = "OOM_EVENTS")]
static OOM_EVENTS: RingBuf = RingBuf::with_byte_size(16 << 10, 0);

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    let _ = try_mark_victim(&ctx);
    0
}

#[inline(always)]
fn try_mark_victim(ctx: &TracePointContext) -> Result<(), i64> {
    let victim: i32 = unsafe { ctx.read_at(tcp_tp_offsets().mark_victim_pid as usize)? };
    let pid_tgid = bpf_get_current_pid_tgid();
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let cgroup_id = task_cgroup_id(task, &kernel_offsets()).unwrap_or(0);
    let mut rec = OomRecord {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        victim_pid: victim as u32,
        trigger_tgid: (pid_tgid >> 32) as u32,
        trigger_cgroup_id: cgroup_id,
        ..OomRecord::default()
    };
    rec.memory_limit_bytes = memory_limit_bytes(task);
    if pid_tgid as u32 == victim as u32 {
        rec.victim_cgroup_id = cgroup_id;
        rec.victim_comm = bpf_get_current_comm().unwrap_or_default();
    }
    if OOM_EVENTS.output::<OomRecord>(&rec, 0).is_err() {
        count_drop(DropCounter::OomRingFull);
    }
    Ok(())
}

/// Memory cgroups walked up from a task's: containers sit a few levels down.
const MAX_MEMCG_DEPTH: u32 = 8;
/// `PAGE_COUNTER_MAX` and above: no limit.
const UNLIMITED_PAGES: u64 = 1 << 50;

/// The lowest `memory.max` (v1 `memory.limit_in_bytes`) from `task`'s memory cgroup to the root,
/// in bytes; 0 when there is none or the layout is unknown.
#[inline(always)]
fn memory_limit_bytes(task: *const u8) -> u64 {
    let off = kernel_offsets();
    if off.css_set_memory_css == OFFSET_ABSENT
        || off.css_parent == OFFSET_ABSENT
        || off.mem_cgroup_max_pages == OFFSET_ABSENT
    {
        return 0;
    }
    let Ok(css_set) = read_kernel::<*const u8>(task, off.task_cgroups) else {
        return 0;
    };
    let Ok(mut css) = read_kernel::<*const u8>(css_set, off.css_set_memory_css) else {
        return 0;
    };
    let mut lowest = UNLIMITED_PAGES;
    let mut depth = 0;
    while depth < MAX_MEMCG_DEPTH && !css.is_null() {
        if let Ok(max) = read_kernel::<u64>(css, off.mem_cgroup_max_pages)
            && max < lowest
        {
            lowest = max;
        }
        css = read_kernel::<*const u8>(css, off.css_parent).unwrap_or(core::ptr::null());
        depth += 1;
    }
    if lowest >= UNLIMITED_PAGES {
        0
    } else {
        lowest * PAGE_BYTES
    }
}

const PAGE_BYTES: u64 = 4096;
