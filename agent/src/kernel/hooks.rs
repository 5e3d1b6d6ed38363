//! The hooks the agent attaches, what kind each is and which signals each feeds: the table
//! `probes` loads, attaches and reports health by.

use serde::{Deserialize, Serialize};

/// The user-facing signals, each fed by one or more hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Per-cgroup run-queue delay, node-wide.
    RunQueueDelay,
    /// Per-thread on-CPU / run-queue / off-CPU accounting of watched threads.
    ThreadStates,
    /// The throttled part of run-queue waits.
    CpuThrottling,
    /// The part of watched threads' time on CPU the hypervisor took (steal time).
    CpuSteal,
    /// TCP retransmits with their owner.
    TcpRetransmits,
    /// Who opened each connection to the OTLP ports: span senders identified by the kernel.
    SenderIdentity,
    /// How long accepted connections' requests waited before a watched thread read them.
    QueueWait,
    /// OOM kills, with the victim and its cgroup.
    OomKills,
    /// Which span each interval of a thread belongs to, from the context its process publishes
    /// (OTEP 4947): read as threads leave a CPU, and sampled on CPU.
    ThreadContext,
}

pub(super) enum HookKind {
    /// A BTF tracepoint, by its raw tracepoint name.
    Btf(&'static str),
    /// A classic tracepoint: category and name.
    Classic(&'static str, &'static str),
    /// A CPU-clock perf event on every online CPU, at the configured rate.
    CpuSampler,
}

pub(super) struct Hook {
    pub(super) program: &'static str,
    pub(super) kind: HookKind,
    pub(super) signals: &'static [Signal],
    /// Attached only where this other program is not: an older kernel's stand-in for it.
    pub(super) standby_for: Option<&'static str>,
}

const SCHED: &[Signal] = &[
    Signal::RunQueueDelay,
    Signal::ThreadStates,
    Signal::CpuThrottling,
    Signal::CpuSteal,
];

const SWITCH: &[Signal] = &[
    Signal::RunQueueDelay,
    Signal::ThreadStates,
    Signal::CpuThrottling,
    Signal::CpuSteal,
    Signal::ThreadContext,
];

/// The hooks that name a retransmitting socket's owner, and date its last send.
pub(super) const OWNER_HOOKS: &[&str] =
    &["sock_send_length", "sock_recv_length", RECEIVE_OWNER_HOOK];
/// Before 6.3 (no `sock:sock_*_length`) the owner of a socket that reads is named by
/// `tcp:tcp_rcv_space_adjust`, which every TCP read passes in the reader's context.
pub(super) const RECEIVE_OWNER_HOOK: &str = "tcp_rcv_space_adjust";

pub(super) const HOOKS: &[Hook] = &[
    Hook {
        program: "sched_waking",
        kind: HookKind::Btf("sched_waking"),
        signals: SCHED,
        standby_for: None,
    },
    Hook {
        program: "sched_wakeup_new",
        kind: HookKind::Btf("sched_wakeup_new"),
        signals: SCHED,
        standby_for: None,
    },
    Hook {
        program: "sched_switch",
        kind: HookKind::Btf("sched_switch"),
        signals: SWITCH,
        standby_for: None,
    },
    Hook {
        program: "sched_process_exit",
        kind: HookKind::Btf("sched_process_exit"),
        signals: &[Signal::ThreadStates],
        standby_for: None,
    },
    // The wake chain's interrupt context (agent-ebpf `interrupts`): without all six, no delay
    // is passed on through wakeups.
    Hook {
        program: "hrtimer_expire_entry",
        kind: HookKind::Btf("hrtimer_expire_entry"),
        signals: &[Signal::ThreadStates],
        standby_for: None,
    },
    Hook {
        program: "hrtimer_expire_exit",
        kind: HookKind::Btf("hrtimer_expire_exit"),
        signals: &[Signal::ThreadStates],
        standby_for: None,
    },
    Hook {
        program: "timer_expire_entry",
        kind: HookKind::Btf("timer_expire_entry"),
        signals: &[Signal::ThreadStates],
        standby_for: None,
    },
    Hook {
        program: "timer_expire_exit",
        kind: HookKind::Btf("timer_expire_exit"),
        signals: &[Signal::ThreadStates],
        standby_for: None,
    },
    Hook {
        program: "irq_handler_entry",
        kind: HookKind::Btf("irq_handler_entry"),
        signals: &[Signal::ThreadStates],
        standby_for: None,
    },
    Hook {
        program: "irq_handler_exit",
        kind: HookKind::Btf("irq_handler_exit"),
        signals: &[Signal::ThreadStates],
        standby_for: None,
    },
    // Reclaim a watched thread does on its CPU (agent-ebpf `reclaim`): without them, that
    // time stays on-CPU time; its sleeps are memory stalls all the same.
    Hook {
        program: "mm_vmscan_direct_reclaim_begin",
        kind: HookKind::Btf("mm_vmscan_direct_reclaim_begin"),
        signals: &[Signal::ThreadStates],
        standby_for: None,
    },
    Hook {
        program: "mm_vmscan_direct_reclaim_end",
        kind: HookKind::Btf("mm_vmscan_direct_reclaim_end"),
        signals: &[Signal::ThreadStates],
        standby_for: None,
    },
    Hook {
        program: "mm_vmscan_memcg_reclaim_begin",
        kind: HookKind::Btf("mm_vmscan_memcg_reclaim_begin"),
        signals: &[Signal::ThreadStates],
        standby_for: None,
    },
    Hook {
        program: "mm_vmscan_memcg_reclaim_end",
        kind: HookKind::Btf("mm_vmscan_memcg_reclaim_end"),
        signals: &[Signal::ThreadStates],
        standby_for: None,
    },
    // The device of a watched thread's I/O wait (agent-ebpf `block_io`): without it the wait
    // is still `disk.io`, its device unnamed.
    Hook {
        program: "block_bio_queue",
        kind: HookKind::Btf("block_bio_queue"),
        signals: &[Signal::ThreadStates],
        standby_for: None,
    },
    Hook {
        program: "tcp_retransmit_skb",
        kind: HookKind::Classic("tcp", "tcp_retransmit_skb"),
        signals: &[Signal::TcpRetransmits],
        standby_for: None,
    },
    Hook {
        program: "tcp_retransmit_synack",
        kind: HookKind::Classic("tcp", "tcp_retransmit_synack"),
        signals: &[Signal::TcpRetransmits],
        standby_for: None,
    },
    // Dates the unread bytes of accepted connections; the reads that report them are the owner
    // hooks', the connections marked by `inet_sock_set_state`.
    Hook {
        program: "tcp_probe",
        kind: HookKind::Btf("tcp_probe"),
        signals: &[Signal::QueueWait],
        standby_for: None,
    },
    Hook {
        program: "sock_send_length",
        kind: HookKind::Classic("sock", "sock_send_length"),
        signals: &[Signal::TcpRetransmits],
        standby_for: None,
    },
    Hook {
        program: "sock_recv_length",
        kind: HookKind::Classic("sock", "sock_recv_length"),
        signals: &[Signal::TcpRetransmits, Signal::QueueWait],
        standby_for: None,
    },
    Hook {
        program: RECEIVE_OWNER_HOOK,
        kind: HookKind::Classic("tcp", "tcp_rcv_space_adjust"),
        signals: &[Signal::TcpRetransmits, Signal::QueueWait],
        standby_for: Some("sock_recv_length"),
    },
    Hook {
        program: "inet_sock_set_state",
        kind: HookKind::Classic("sock", "inet_sock_set_state"),
        signals: &[
            Signal::SenderIdentity,
            Signal::TcpRetransmits,
            Signal::QueueWait,
        ],
        standby_for: None,
    },
    Hook {
        program: "mark_victim",
        kind: HookKind::Classic("oom", "mark_victim"),
        signals: &[Signal::OomKills],
        standby_for: None,
    },
    Hook {
        program: "context_sample",
        kind: HookKind::CpuSampler,
        signals: &[Signal::ThreadContext],
        standby_for: None,
    },
];

/// The hooks that tell the wake chain a wakeup comes from an interrupt.
pub(super) const INTERRUPT_HOOKS: [&str; 6] = [
    "hrtimer_expire_entry",
    "hrtimer_expire_exit",
    "timer_expire_entry",
    "timer_expire_exit",
    "irq_handler_entry",
    "irq_handler_exit",
];
