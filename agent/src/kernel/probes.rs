//! Loading the kernel-side programs and attaching them, one hook at a time: a hook that is
//! missing or refused degrades its signal with a warning instead of stopping the agent.

use std::path::PathBuf;

use anyhow::Context as _;
use aya::{
    Btf, Ebpf, EbpfLoader, include_bytes_aligned,
    maps::Array,
    programs::{
        BtfTracePoint, PerfEvent, TracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
    util::online_cpus,
};
use culprit_common::{KernelOffsets, OFFSET_ABSENT, ProbeConfig, maps};
use serde::{Deserialize, Serialize};

use crate::{
    kernel::btf::{KernelBtf, kernel_offsets},
    kernel::tracefs_format::tcp_offsets,
};

static EBPF_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/culprit"));

pub use super::hooks::Signal;
use super::hooks::{HOOKS, Hook, HookKind, INTERRUPT_HOOKS, OWNER_HOOKS, RECEIVE_OWNER_HOOK};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookHealth {
    pub program: String,
    pub attached: bool,
    /// A stand-in left detached because the hook it stands in for is attached: not needed on
    /// this kernel, so it counts neither as attached nor as missing.
    #[serde(default)]
    pub standby: bool,
    pub error: Option<String>,
    /// Instructions the kernel's verifier processed to accept the program (its limit is one
    /// million): how close this kernel's verifier came to refusing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_insns: Option<u32>,
}

/// Why a signal runs degraded, if it does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SignalHealth {
    pub signal: Signal,
    pub ok: bool,
    pub reason: Option<String>,
}

pub(crate) struct ProbeOptions {
    pub btf: PathBuf,
    pub tracefs: PathBuf,
    pub config: ProbeConfig,
    /// Rate of the context sampler per CPU; 0: not attached.
    pub context_sample_hz: u32,
}

pub(crate) struct Probes {
    pub ebpf: Ebpf,
    pub hooks: Vec<HookHealth>,
    pub signals: Vec<SignalHealth>,
}

pub(crate) fn load(opts: &ProbeOptions) -> anyhow::Result<Probes> {
    raise_memlock_limit();
    // Each parse of the kernel's BTF takes tens of MiB: one at a time, each dropped as soon as
    // it has served, keeps the agent's peak memory at start-up near its steady state.
    let offsets = {
        let kernel_btf = KernelBtf::open(&opts.btf)?;
        kernel_offsets(&kernel_btf).context("resolving kernel struct offsets")?
    };
    log::debug!("kernel offsets: {offsets:?}");
    let tcp = tcp_offsets(&opts.tracefs);
    let tcp_globals = tcp.offsets;

    let btf = Btf::parse_file(&opts.btf, aya::Endianness::default())
        .with_context(|| format!("parsing {}", opts.btf.display()))?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        // TASK_SCHED is task-local storage: aya creates it but has no userspace wrapper,
        // which the agent does not need.
        .allow_unsupported_maps()
        .override_global(maps::KERNEL_OFFSETS_GLOBAL, &offsets, true)
        .override_global(maps::TCP_TP_OFFSETS_GLOBAL, &tcp_globals, true)
        .override_global(maps::PROBE_CONFIG_GLOBAL, &opts.config, true)
        .load(EBPF_OBJECT)
        .context(
            "loading the eBPF programs into the kernel failed: run as root, or with \
             CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE",
        )?;

    let mut hooks: Vec<HookHealth> = Vec::with_capacity(HOOKS.len());
    for hook in HOOKS {
        let primary_attached = hook
            .standby_for
            .is_some_and(|p| hooks.iter().any(|h| h.program == p && h.attached));
        if primary_attached {
            hooks.push(HookHealth {
                program: hook.program.to_string(),
                attached: false,
                standby: true,
                error: Some(format!(
                    "standby, not needed: {} is attached",
                    hook.standby_for.unwrap_or_default()
                )),
                verified_insns: None,
            });
            continue;
        }
        hooks.push({
            let started = std::time::Instant::now();
            let result = match tcp.unavailable(hook.program) {
                Some(why) => Err(anyhow::anyhow!("{why}")),
                None => attach(&mut ebpf, hook, &btf, opts.context_sample_hz),
            };
            log::debug!(
                "{} verified and attached in {:?}",
                hook.program,
                started.elapsed()
            );
            if let Err(err) = &result {
                log::warn!(
                    "hook {} unavailable, {:?} degraded: {err:#}",
                    hook.program,
                    hook.signals
                );
            }
            let verified_insns = ebpf
                .program(hook.program)
                .and_then(|p| p.info().ok())
                .and_then(|info| info.verified_instruction_count());
            HookHealth {
                program: hook.program.to_string(),
                attached: result.is_ok(),
                standby: false,
                error: result.err().map(|e| format!("{e:#}")),
                verified_insns,
            }
        });
    }
    drop(btf);
    enable_wake_chain(&mut ebpf, &hooks)?;
    let signals = signal_health(&hooks, &offsets, opts.context_sample_hz);
    for s in signals.iter().filter(|s| !s.ok) {
        log::warn!(
            "{:?} degraded: {}",
            s.signal,
            s.reason.as_deref().unwrap_or("")
        );
    }
    Ok(Probes {
        ebpf,
        hooks,
        signals,
    })
}

/// Turns the wake chain on once every interrupt hook is attached: with one missing, a timer's
/// wakeup could pass an interrupted task's delay on to a sleeper it has nothing to do with.
fn enable_wake_chain(ebpf: &mut Ebpf, hooks: &[HookHealth]) -> anyhow::Result<()> {
    let all = INTERRUPT_HOOKS
        .iter()
        .all(|p| hooks.iter().any(|h| h.program == *p && h.attached));
    if !all {
        log::warn!("wake chain off: not every interrupt hook is attached");
        return Ok(());
    }
    let mut on: Array<_, u32> = Array::try_from(
        ebpf.map_mut(maps::WAKE_CHAIN_ON)
            .with_context(|| format!("map {} missing", maps::WAKE_CHAIN_ON))?,
    )?;
    on.set(0, 1, 0)?;
    Ok(())
}

fn signal_health(
    hooks: &[HookHealth],
    offsets: &KernelOffsets,
    context_sample_hz: u32,
) -> Vec<SignalHealth> {
    let all = [
        Signal::RunQueueDelay,
        Signal::ThreadStates,
        Signal::CpuThrottling,
        Signal::CpuSteal,
        Signal::TcpRetransmits,
        Signal::SenderIdentity,
        Signal::QueueWait,
        Signal::OomKills,
        Signal::ThreadContext,
    ];
    all.iter()
        .map(|&signal| {
            let attached = |program: &str| hooks.iter().any(|h| h.program == program && h.attached);
            let missing: Vec<&str> = HOOKS
                .iter()
                .filter(|hook| hook.signals.contains(&signal) && !attached(hook.program))
                // A stand-in is not missed where what it stands in for is attached.
                .filter(|hook| !hook.standby_for.is_some_and(attached))
                // Reads are seen through the stand-in as well as through what it stands in for.
                .filter(|hook| {
                    !(signal == Signal::QueueWait
                        && hook.program == "sock_recv_length"
                        && attached(RECEIVE_OWNER_HOOK))
                })
                .map(|hook| hook.program)
                .collect();
            let mut reason = (!missing.is_empty())
                .then(|| format!("hooks not attached: {}", missing.join(", ")));
            // Without the owner hooks retransmits are still seen, their owners found in /proc.
            if signal == Signal::TcpRetransmits
                && !missing.is_empty()
                && missing.iter().all(|p| OWNER_HOOKS.contains(p))
            {
                let owners = if attached(RECEIVE_OWNER_HOOK) {
                    "owners named by the kernel when they read (tcp:tcp_rcv_space_adjust), else \
                     found through /proc"
                } else {
                    "owners found through /proc only"
                };
                reason = Some(format!(
                    "{owners}, costs from the kernel's stall start or the minimum RTO (hooks not \
                     attached: {}; sock:sock_send_length and sock_recv_length arrived in 6.3)",
                    missing.join(", ")
                ));
            }
            if signal == Signal::CpuThrottling
                && (offsets.task_cfs_rq == OFFSET_ABSENT
                    || offsets.cfs_rq_throttle_count == OFFSET_ABSENT)
            {
                reason = Some(
                    "kernel without CONFIG_FAIR_GROUP_SCHED/CONFIG_CFS_BANDWIDTH: \
                     run-queue waits are not split into throttled and contended"
                        .to_string(),
                );
            }
            if signal == Signal::CpuSteal
                && (offsets.task_cfs_rq == OFFSET_ABSENT
                    || offsets.cfs_rq_rq == OFFSET_ABSENT
                    || offsets.rq_steal_clock_ns == OFFSET_ABSENT)
            {
                reason = Some(
                    "kernel without CONFIG_PARAVIRT (or group scheduling): time the hypervisor \
                     takes stays in the threads' on-CPU time"
                        .to_string(),
                );
            }
            if signal == Signal::QueueWait
                && (offsets.tcp_rcv_nxt == OFFSET_ABSENT || offsets.tcp_copied_seq == OFFSET_ABSENT)
            {
                reason = Some(
                    "no tcp_sock.rcv_nxt/copied_seq in this kernel's BTF: requests' queue waits \
                     are not measured"
                        .to_string(),
                );
            }
            if signal == Signal::ThreadContext {
                if offsets.task_fsbase == OFFSET_ABSENT {
                    reason = Some(
                        "no thread pointer in this kernel's task_struct (not x86_64): \
                         published thread contexts are not read"
                            .to_string(),
                    );
                } else if context_sample_hz == 0 && reason.is_none() {
                    reason = Some(
                        "--context-sample-hz 0: contexts are read only as threads leave a CPU"
                            .to_string(),
                    );
                }
            }
            SignalHealth {
                signal,
                ok: reason.is_none(),
                reason,
            }
        })
        .collect()
}

fn attach(ebpf: &mut Ebpf, hook: &Hook, btf: &Btf, sample_hz: u32) -> anyhow::Result<()> {
    let program = ebpf
        .program_mut(hook.program)
        .with_context(|| format!("program {} missing from the eBPF object", hook.program))?;
    match hook.kind {
        HookKind::Btf(tracepoint) => {
            let program: &mut BtfTracePoint = program.try_into()?;
            program
                .load(tracepoint, btf)
                .with_context(|| format!("loading {}", hook.program))?;
            program
                .attach()
                .with_context(|| format!("attaching to tp_btf/{tracepoint}"))?;
        }
        HookKind::Classic(category, name) => {
            let program: &mut TracePoint = program.try_into()?;
            program
                .load()
                .with_context(|| format!("loading {}", hook.program))?;
            program
                .attach(category, name)
                .with_context(|| format!("attaching to tracepoint/{category}/{name}"))?;
        }
        HookKind::CpuSampler => {
            if sample_hz == 0 {
                anyhow::bail!("disabled (--context-sample-hz 0)");
            }
            let program: &mut PerfEvent = program.try_into()?;
            program
                .load()
                .with_context(|| format!("loading {}", hook.program))?;
            let cpus = online_cpus().map_err(|(_, e)| e).context("listing CPUs")?;
            // A period, not a frequency: the kernel keeps a frequency by re-tuning the period,
            // which would make the placement's resolution drift.
            let period_ns = 1_000_000_000 / u64::from(sample_hz);
            for cpu in cpus {
                program
                    .attach(
                        PerfEventConfig::Software(SoftwareEvent::CpuClock),
                        PerfEventScope::AllProcessesOneCpu { cpu },
                        SamplePolicy::Period(period_ns),
                        false,
                    )
                    .with_context(|| format!("attaching the cpu-clock sampler on CPU {cpu}"))?;
            }
        }
    }
    Ok(())
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on kernels >= 5.11",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(missing: &[&str]) -> Vec<HookHealth> {
        HOOKS
            .iter()
            .map(|h| HookHealth {
                program: h.program.to_string(),
                attached: !missing.contains(&h.program),
                standby: false,
                error: None,
                verified_insns: None,
            })
            .collect()
    }

    fn reason(missing: &[&str], signal: Signal) -> Option<String> {
        let offsets = KernelOffsets {
            task_cfs_rq: 1,
            cfs_rq_throttle_count: 1,
            task_fsbase: 1,
            ..KernelOffsets::ZERO
        };
        signal_health(&health(missing), &offsets, 1000)
            .into_iter()
            .find(|s| s.signal == signal)
            .and_then(|s| s.reason)
    }

    #[test]
    fn each_missing_hook_degrades_only_what_needs_it() {
        assert_eq!(reason(&[], Signal::TcpRetransmits), None);
        let owners = reason(OWNER_HOOKS, Signal::TcpRetransmits).unwrap();
        assert!(
            owners.starts_with("owners found through /proc only"),
            "{owners}"
        );
        assert_eq!(reason(OWNER_HOOKS, Signal::SenderIdentity), None);
        assert_eq!(reason(OWNER_HOOKS, Signal::RunQueueDelay), None);
        let down = reason(&["tcp_retransmit_skb"], Signal::TcpRetransmits).unwrap();
        assert_eq!(down, "hooks not attached: tcp_retransmit_skb");
        let both = reason(
            &["tcp_retransmit_skb", "sock_send_length"],
            Signal::TcpRetransmits,
        );
        assert!(both.unwrap().starts_with("hooks not attached"));
    }

    /// 6.1: no `sock:sock_*_length`, receivers named by `tcp_rcv_space_adjust`; elsewhere the
    /// stand-in is not attached and not missed.
    #[test]
    fn a_stand_in_hook_counts_only_where_it_is_needed() {
        let on_6_1 = reason(
            &["sock_send_length", "sock_recv_length"],
            Signal::TcpRetransmits,
        )
        .unwrap();
        assert!(
            on_6_1.starts_with("owners named by the kernel when they read"),
            "{on_6_1}"
        );
        assert!(on_6_1.contains("hooks not attached: sock_send_length, sock_recv_length;"));
        assert_eq!(reason(&[RECEIVE_OWNER_HOOK], Signal::TcpRetransmits), None);
    }
}
