//! Loading the kernel-side programs and attaching them, one hook at a time: a hook that is
//! missing or refused degrades its signal with a warning instead of stopping the agent.

use std::path::Path;

use anyhow::Context as _;
use aya::{Btf, Ebpf, EbpfLoader, include_bytes_aligned, programs::BtfTracePoint};
use culprit_common::maps;
use serde::Serialize;

use crate::kernel_btf::{KernelBtf, task_offsets};

static EBPF_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/culprit"));

/// The user-facing signals, each fed by one or more hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    RunQueueDelay,
}

/// A BTF tracepoint program and the hook it attaches to.
struct Hook {
    program: &'static str,
    tracepoint: &'static str,
    signal: Signal,
}

const HOOKS: &[Hook] = &[
    Hook {
        program: "sched_wakeup",
        tracepoint: "sched_wakeup",
        signal: Signal::RunQueueDelay,
    },
    Hook {
        program: "sched_wakeup_new",
        tracepoint: "sched_wakeup_new",
        signal: Signal::RunQueueDelay,
    },
    Hook {
        program: "sched_switch",
        tracepoint: "sched_switch",
        signal: Signal::RunQueueDelay,
    },
];

#[derive(Debug, Clone, Serialize)]
pub struct HookHealth {
    pub program: &'static str,
    pub signal: Signal,
    pub attached: bool,
    pub error: Option<String>,
}

pub struct Probes {
    pub ebpf: Ebpf,
    pub hooks: Vec<HookHealth>,
}

impl Probes {
    /// Whether every hook a signal needs is attached.
    pub fn signal_ok(&self, signal: Signal) -> bool {
        self.hooks
            .iter()
            .filter(|h| h.signal == signal)
            .all(|h| h.attached)
    }
}

pub fn load(btf_path: &Path) -> anyhow::Result<Probes> {
    raise_memlock_limit();
    let kernel_btf = KernelBtf::open(btf_path)?;
    let offsets = task_offsets(&kernel_btf).context("resolving kernel struct offsets")?;
    log::debug!("kernel offsets: {offsets:?}");

    let mut ebpf = EbpfLoader::new()
        .override_global(maps::TASK_OFFSETS_GLOBAL, &offsets, true)
        .load(EBPF_OBJECT)
        .context(
            "loading the eBPF programs into the kernel failed: run as root, or with \
             CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE",
        )?;
    let btf = Btf::parse_file(btf_path, aya::Endianness::default())
        .with_context(|| format!("parsing {}", btf_path.display()))?;

    let hooks = HOOKS
        .iter()
        .map(|hook| {
            let result = attach_btf_tracepoint(&mut ebpf, hook, &btf);
            if let Err(err) = &result {
                log::warn!(
                    "hook {} unavailable, signal {:?} degraded: {err:#}",
                    hook.tracepoint,
                    hook.signal
                );
            }
            HookHealth {
                program: hook.program,
                signal: hook.signal,
                attached: result.is_ok(),
                error: result.err().map(|e| format!("{e:#}")),
            }
        })
        .collect();
    Ok(Probes { ebpf, hooks })
}

fn attach_btf_tracepoint(ebpf: &mut Ebpf, hook: &Hook, btf: &Btf) -> anyhow::Result<()> {
    let program: &mut BtfTracePoint = ebpf
        .program_mut(hook.program)
        .with_context(|| format!("program {} missing from the eBPF object", hook.program))?
        .try_into()?;
    program
        .load(hook.tracepoint, btf)
        .with_context(|| format!("loading {}", hook.program))?;
    program
        .attach()
        .with_context(|| format!("attaching to tp_btf/{}", hook.tracepoint))?;
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
