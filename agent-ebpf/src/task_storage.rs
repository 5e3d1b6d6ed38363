//! Task-local storage (`BPF_MAP_TYPE_TASK_STORAGE`, Linux >= 5.11): per-task values reached
//! through a pointer in the task itself, an order of magnitude cheaper than a hash map keyed by
//! tid. aya-ebpf has no wrapper for it, so this is the BTF map definition the loader expects.

use core::{ffi::c_void, ptr};

use aya_ebpf::{bindings::task_struct, helpers::generated::bpf_task_storage_get};

const BPF_MAP_TYPE_TASK_STORAGE: usize = 29;
/// Local storage maps must not be preallocated.
const BPF_F_NO_PREALLOC: usize = 1;
const BPF_LOCAL_STORAGE_GET_F_CREATE: u64 = 1;

/// Field order and `*const [i32; N]` encodings are the BTF map-definition convention.
#[repr(C)]
pub struct TaskStorage<V> {
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE],
    key: *const i32,
    value: *const V,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC],
}

// SAFETY: the fields are placeholders patched by the loader, never dereferenced.
unsafe impl<V> Sync for TaskStorage<V> {}

impl<V> TaskStorage<V> {
    pub const fn new() -> Self {
        Self {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
            map_flags: ptr::null(),
        }
    }

    #[inline(always)]
    fn lookup(&self, task: *const u8, flags: u64) -> Option<*mut V> {
        let map = ptr::from_ref(self).cast_mut().cast::<c_void>();
        let value = unsafe {
            bpf_task_storage_get(
                map,
                task.cast_mut().cast::<task_struct>(),
                ptr::null_mut(),
                flags,
            )
        };
        (!value.is_null()).then_some(value.cast::<V>())
    }

    /// The task's value, created zeroed if it has none.
    #[inline(always)]
    pub fn get_or_create(&self, task: *const u8) -> Option<*mut V> {
        self.lookup(task, BPF_LOCAL_STORAGE_GET_F_CREATE)
    }
}
