//! Field offsets from the running kernel's BTF, so the programs carry no compiled-in layout.

use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use btf_rs::{Btf, Struct, Type};
use culprit_common::{KernelOffsets, OFFSET_ABSENT};

pub(crate) struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub(crate) fn open(path: &Path) -> anyhow::Result<Self> {
        let btf = Btf::from_file(path).with_context(|| {
            format!(
                "reading kernel BTF from {}: the agent needs a kernel built with \
                 CONFIG_DEBUG_INFO_BTF=y (Linux >= 5.8)",
                path.display()
            )
        })?;
        Ok(Self { btf })
    }

    /// Byte offset of `field` in `struct name`, looking through anonymous structs and unions
    /// (the kernel nests fields in them, e.g. for randomized layouts).
    pub(crate) fn field_offset(&self, name: &str, field: &str) -> anyhow::Result<u32> {
        let st = self.struct_named(name)?;
        let bits = self
            .find_field_bits(&st, field, 0)?
            .ok_or_else(|| anyhow!("struct {name} has no field `{field}` in this kernel"))?;
        if bits % 8 != 0 {
            bail!("{name}.{field} is a bitfield; cannot read it");
        }
        Ok(bits / 8)
    }

    /// Offset of `field` in `struct name` in bits: how a one-bit field is found.
    pub(crate) fn field_bit_offset(&self, name: &str, field: &str) -> anyhow::Result<u32> {
        let st = self.struct_named(name)?;
        self.find_field_bits(&st, field, 0)?
            .ok_or_else(|| anyhow!("struct {name} has no field `{field}` in this kernel"))
    }

    /// Whether `struct name` has `field`.
    pub(crate) fn has_field(&self, name: &str, field: &str) -> anyhow::Result<bool> {
        let st = self.struct_named(name)?;
        Ok(self.find_field_bits(&st, field, 0)?.is_some())
    }

    /// Number of arguments a raw tracepoint passes to BPF programs, from its
    /// `btf_trace_<name>` typedef (the kernel's own `void *` context pointer excluded).
    pub(crate) fn tracepoint_arg_count(&self, tracepoint: &str) -> anyhow::Result<usize> {
        let typedef = format!("btf_trace_{tracepoint}");
        let ty = self
            .btf
            .resolve_types_by_name(&typedef)
            .with_context(|| format!("kernel BTF has no {typedef}: tracepoint missing"))?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("kernel BTF has no {typedef}"))?;
        for t in self
            .btf
            .chained_type_iter(ty.as_btf_type().ok_or_else(|| anyhow!("{typedef}"))?)
        {
            if let Type::FuncProto(proto) = t {
                return Ok(proto.parameters.len().saturating_sub(1));
            }
        }
        bail!("{typedef} is not a function pointer")
    }

    /// The value of enumerator `name` in `enum enum_name`.
    pub(crate) fn enum_value(&self, enum_name: &str, name: &str) -> anyhow::Result<u32> {
        self.btf
            .resolve_types_by_name(enum_name)
            .with_context(|| format!("kernel BTF has no type named {enum_name}"))?
            .into_iter()
            .find_map(|t| match t {
                Type::Enum(e) => e
                    .members
                    .iter()
                    .find(|m| self.btf.resolve_name(*m).is_ok_and(|n| n == name))
                    .map(|m| m.val()),
                _ => None,
            })
            .ok_or_else(|| anyhow!("enum {enum_name} has no {name}"))
    }

    fn struct_named(&self, name: &str) -> anyhow::Result<Struct> {
        self.btf
            .resolve_types_by_name(name)
            .with_context(|| format!("kernel BTF has no type named {name}"))?
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| anyhow!("kernel BTF has no struct {name}"))
    }

    fn find_field_bits(
        &self,
        st: &Struct,
        field: &str,
        base_bits: u32,
    ) -> anyhow::Result<Option<u32>> {
        for member in &st.members {
            let name = self.btf.resolve_name(member).unwrap_or_default();
            let bits = base_bits + member.bit_offset();
            if name == field {
                return Ok(Some(bits));
            }
            if name.is_empty() {
                let inner = self
                    .btf
                    .resolve_chained_type(member)
                    .context("resolving an anonymous member")?;
                if let Some(inner) = self.strip_modifiers(inner)?
                    && let Some(found) = self.find_field_bits(&inner, field, bits)?
                {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// Follows typedefs and qualifiers to a struct or union, if the type is one.
    fn strip_modifiers(&self, mut ty: Type) -> anyhow::Result<Option<Struct>> {
        loop {
            ty = match ty {
                Type::Struct(s) | Type::Union(s) => return Ok(Some(s)),
                Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::TypeTag(_) => {
                    let inner = ty
                        .as_btf_type()
                        .ok_or_else(|| anyhow!("bad BTF modifier"))?;
                    self.btf.resolve_chained_type(inner)?
                }
                _ => return Ok(None),
            };
        }
    }
}

/// `futex(2)`'s number on x86_64 (`arch/x86/entry/syscalls/syscall_64.tbl`): a thread blocked
/// in it waits on a lock, a condition variable or a hand-over from another thread.
const SYS_FUTEX_X86_64: u32 = 202;

/// Resolves every offset the scheduler programs read. Fields the throttling split needs are
/// optional: without them that split degrades, the rest works.
pub(crate) fn kernel_offsets(btf: &KernelBtf) -> anyhow::Result<KernelOffsets> {
    // `state` was renamed `__state` in 5.14.
    let state_field = if btf.has_field("task_struct", "__state")? {
        "__state"
    } else {
        "state"
    };
    let optional = |name: &str, field: &str| btf.field_offset(name, field).ok();
    // `se.cfs_rq` exists with CONFIG_FAIR_GROUP_SCHED (every distribution kernel).
    let task_cfs_rq = match (
        optional("task_struct", "se"),
        optional("sched_entity", "cfs_rq"),
    ) {
        (Some(se), Some(cfs_rq)) => se + cfs_rq,
        _ => OFFSET_ABSENT,
    };
    Ok(KernelOffsets {
        task_pid: btf.field_offset("task_struct", "pid")?,
        task_tgid: btf.field_offset("task_struct", "tgid")?,
        task_cgroups: btf.field_offset("task_struct", "cgroups")?,
        css_set_dfl_cgrp: btf.field_offset("css_set", "dfl_cgrp")?,
        cgroup_kn: btf.field_offset("cgroup", "kn")?,
        kernfs_node_id: btf.field_offset("kernfs_node", "id")?,
        task_state: btf.field_offset("task_struct", state_field)?,
        // `prev_state` became the fourth argument of sched_switch in 5.18.
        switch_has_prev_state: u32::from(btf.tracepoint_arg_count("sched_switch")? >= 4),
        task_cfs_rq,
        // CONFIG_CFS_BANDWIDTH.
        cfs_rq_throttle_count: optional("cfs_rq", "throttle_count").unwrap_or(OFFSET_ABSENT),
        // Linux >= 6.5 (cpu.stat.local); before, the clock PELT stops while the cfs_rq is
        // throttled, summed at each unthrottle (`throttled_clock_task_time` before 5.1): it
        // moves during a wait that was throttled, which is what the split needs to know.
        cfs_rq_throttled_self_ns: optional("cfs_rq", "throttled_clock_self_time")
            .or_else(|| optional("cfs_rq", "throttled_clock_pelt_time"))
            .or_else(|| optional("cfs_rq", "throttled_clock_task_time"))
            .unwrap_or(OFFSET_ABSENT),
        tcp_retrans_stamp: optional("tcp_sock", "retrans_stamp").unwrap_or(OFFSET_ABSENT),
        // Without CONFIG_NET_NS `possible_net_t` is empty: senders' namespaces go unrecorded.
        sock_net: optional("sock_common", "skc_net").unwrap_or(OFFSET_ABSENT),
        net_ns_inum: match (optional("net", "ns"), optional("ns_common", "inum")) {
            (Some(ns), Some(inum)) => ns + inum,
            _ => OFFSET_ABSENT,
        },
        // x86_64's saved user thread pointer; other architectures keep it elsewhere.
        task_fsbase: match (
            optional("task_struct", "thread"),
            optional("thread_struct", "fsbase"),
        ) {
            (Some(thread), Some(fsbase)) => thread + fsbase,
            _ => OFFSET_ABSENT,
        },
        task_flags: optional("task_struct", "flags").unwrap_or(OFFSET_ABSENT),
        task_in_iowait_bit: btf
            .field_bit_offset("task_struct", "in_iowait")
            .unwrap_or(OFFSET_ABSENT),
        // CONFIG_PSI kernels only.
        task_in_memstall_bit: btf
            .field_bit_offset("task_struct", "in_memstall")
            .unwrap_or(OFFSET_ABSENT),
        // x86_64's syscall number in the saved user registers; other architectures name it
        // otherwise (and number their calls otherwise): no lock wait is told apart there.
        pt_regs_syscall_nr: if cfg!(target_arch = "x86_64") {
            optional("pt_regs", "orig_ax").unwrap_or(OFFSET_ABSENT)
        } else {
            OFFSET_ABSENT
        },
        syscall_futex: SYS_FUTEX_X86_64,
        bio_bdev: optional("bio", "bi_bdev").unwrap_or(OFFSET_ABSENT),
        block_device_dev: optional("block_device", "bd_dev").unwrap_or(OFFSET_ABSENT),
        tcp_rcv_nxt: optional("tcp_sock", "rcv_nxt").unwrap_or(OFFSET_ABSENT),
        tcp_copied_seq: optional("tcp_sock", "copied_seq").unwrap_or(OFFSET_ABSENT),
        // CONFIG_MEMCG: the memory cgroup of a task (v1 or v2) and its hard limit in pages.
        css_set_memory_css: match (
            optional("css_set", "subsys"),
            btf.enum_value("cgroup_subsys_id", "memory_cgrp_id").ok(),
        ) {
            (Some(subsys), Some(id)) => subsys + id * 8,
            _ => OFFSET_ABSENT,
        },
        css_parent: optional("cgroup_subsys_state", "parent").unwrap_or(OFFSET_ABSENT),
        mem_cgroup_max_pages: match (
            optional("mem_cgroup", "memory"),
            optional("page_counter", "max"),
        ) {
            (Some(memory), Some(max)) => memory + max,
            _ => OFFSET_ABSENT,
        },
        // CONFIG_FAIR_GROUP_SCHED, and the steal the run queue's clock has taken out
        // (CONFIG_PARAVIRT_TIME_ACCOUNTING: brought up to date at every `schedule()`), else the
        // steal the tick has accounted (CONFIG_PARAVIRT: Debian's kernels, up to date to within
        // a tick).
        cfs_rq_rq: optional("cfs_rq", "rq").unwrap_or(OFFSET_ABSENT),
        rq_steal_clock_ns: optional("rq", "prev_steal_time_rq")
            .or_else(|| optional("rq", "prev_steal_time"))
            .unwrap_or(OFFSET_ABSENT),
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

    fn running_kernel() -> Option<KernelBtf> {
        Path::new(VMLINUX)
            .exists()
            .then(|| KernelBtf::open(Path::new(VMLINUX)).unwrap())
    }

    #[test]
    fn resolves_the_running_kernels_task_layout() {
        let Some(btf) = running_kernel() else {
            eprintln!("no kernel BTF here; skipped");
            return;
        };
        let off = kernel_offsets(&btf).unwrap();
        // pid and tgid are adjacent pid_t fields in every kernel since 2.6.
        assert_eq!(off.task_tgid, off.task_pid + 4);
        assert_ne!(off.task_cgroups, 0);
        // This kernel (6.x, CFS bandwidth on) has everything the throttling split reads.
        assert_ne!(off.task_cfs_rq, OFFSET_ABSENT);
        assert_ne!(off.cfs_rq_throttle_count, OFFSET_ABSENT);
        assert_ne!(off.task_fsbase, OFFSET_ABSENT);
        // A one-bit field: found by its bit offset, where a byte offset is refused.
        assert_ne!(off.task_in_iowait_bit, OFFSET_ABSENT);
        assert_ne!(off.task_in_memstall_bit, OFFSET_ABSENT);
        // orig_ax follows the fifteen 8-byte registers an x86_64 pt_regs saves first.
        assert_eq!(off.pt_regs_syscall_nr, 15 * 8);
        assert_ne!(off.bio_bdev, OFFSET_ABSENT);
        assert_ne!(off.block_device_dev, OFFSET_ABSENT);
        // A virtual machine's kernel: the steal clock of a task's CPU is readable.
        assert_ne!(off.cfs_rq_rq, OFFSET_ABSENT);
        assert_ne!(off.rq_steal_clock_ns, OFFSET_ABSENT);
        assert_eq!(btf.tracepoint_arg_count("sched_wakeup").unwrap(), 1);
        assert!(btf.tracepoint_arg_count("sched_switch").unwrap() >= 3);
    }

    #[test]
    fn missing_things_are_errors_that_name_them() {
        let Some(btf) = running_kernel() else {
            return;
        };
        let err = btf
            .field_offset("task_struct", "no_such_field")
            .unwrap_err();
        assert!(err.to_string().contains("no_such_field"));
        let err = btf.field_offset("no_such_struct_xyz", "pid").unwrap_err();
        assert!(format!("{err:#}").contains("no_such_struct_xyz"));
        assert!(btf.tracepoint_arg_count("no_such_tracepoint").is_err());
    }
}
