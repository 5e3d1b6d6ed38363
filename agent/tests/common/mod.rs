//! A fixed picture of what an agent saw: the input of the API contract and TUI tests.

use std::collections::BTreeMap;

use culprit::{
    live::view::{AgentFacts, LiveView, Placement},
    model::{
        Attribution, HookHealth, Report, RetransmitRow, Signal, SignalHealth, SpanLine, ThrottleRow,
    },
};

/// "Now" for every fixture: 2026-11-28T06:00:00Z.
pub const NOW_MS: u64 = 1_795_845_600_000;
pub const SLOW_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub const SLOW_SPAN: &str = "00f067aa0ba902b7";
pub const CONTAINER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn span(i: u64, service: &str, name: &str, duration_ms: f64, a: Attribution) -> SpanLine {
    SpanLine {
        trace_id: if i == 0 {
            SLOW_TRACE.to_string()
        } else {
            format!("{i:032x}")
        },
        span_id: if i == 0 {
            SLOW_SPAN.to_string()
        } else {
            format!("{i:016x}")
        },
        name: name.to_string(),
        service: Some(service.to_string()),
        pid: if service == "checkout" { 4242 } else { 5151 },
        tid: None,
        start_mono_ns: 1_000_000_000 + i * 10_000_000,
        duration_ms,
        attribution: a,
    }
}

fn contended(total_ms: f64, runq_ms: f64) -> Attribution {
    Attribution {
        cause: "cpu.contention".into(),
        cause_share: runq_ms / total_ms,
        on_cpu_s: (total_ms - runq_ms) / 1e3,
        runqueue_s: runq_ms / 1e3,
        neighbour: Some("stress-ng (777)".into()),
        join: "thread".into(),
        coverage: 1.0,
        ..Attribution::default()
    }
}

fn computing(total_ms: f64) -> Attribution {
    Attribution {
        cause: "on_cpu".into(),
        cause_share: 1.0,
        on_cpu_s: total_ms / 1e3,
        join: "thread".into(),
        coverage: 1.0,
        ..Attribution::default()
    }
}

fn lossy(total_ms: f64, rtx_ms: f64) -> Attribution {
    Attribution {
        cause: "tcp.retransmit".into(),
        cause_share: rtx_ms / total_ms,
        on_cpu_s: 0.0005,
        off_cpu_s: (total_ms - 0.5) / 1e3,
        retransmit_wait_s: rtx_ms / 1e3,
        retransmits: 1,
        retransmit_peer: Some("10.0.0.7:5432".into()),
        join: "thread".into(),
        coverage: 1.0,
        ..Attribution::default()
    }
}

pub fn facts(degraded: bool) -> AgentFacts {
    let hook = |program: &str, attached: bool| HookHealth {
        program: program.to_string(),
        attached,
        standby: false,
        error: (!attached).then(|| "Operation not permitted (os error 1)".to_string()),
        verified_insns: attached.then_some(4096),
    };
    AgentFacts {
        version: "0.1.0".into(),
        kernel: "6.18.0-test".into(),
        started_unix_ms: NOW_MS - 3_723_000,
        probes: vec![
            hook("sched_switch", true),
            hook("sched_waking", true),
            hook("tcp_retransmit_skb", !degraded),
        ],
        signals: vec![
            SignalHealth {
                signal: Signal::RunQueueDelay,
                ok: true,
                reason: None,
            },
            SignalHealth {
                signal: Signal::TcpRetransmits,
                ok: !degraded,
                reason: degraded.then(|| "tcp_retransmit_skb: not attached".to_string()),
            },
        ],
    }
}

pub fn report() -> Report {
    let mut r = Report::new(std::time::Duration::from_secs(2));
    r.unix_time_ms = NOW_MS - 1_000;
    r.mono_ns = 2_000_000_000;
    r.drops = BTreeMap::from([
        ("sched_ring_full".to_string(), 0),
        ("tcp_ring_full".to_string(), 3),
    ]);
    r.throttling = vec![ThrottleRow {
        cgroup: "/sys/fs/cgroup/kubepods.slice/pod-a/cri-containerd-abc.scope".into(),
        nr_throttled: 12,
        cpu_stat_throttled_ns: 240_000_000,
        threads_throttled_ns: 250_000_000,
        threads_throttled_wall_ns: 230_000_000,
        episodes: vec![],
    }];
    let rtx = |remote: &str, cost_ms: u64| RetransmitRow {
        mono_ns: 1_900_000_000,
        kind: "segment".into(),
        state: "ESTABLISHED".into(),
        local: "10.0.0.5:40000".into(),
        remote: remote.into(),
        pid: Some(5151),
        tid: Some(5152),
        comm: Some("payments".into()),
        owner_from: "socket".into(),
        cost_ns: cost_ms * 1_000_000,
        cost_from: "since_send".into(),
    };
    r.retransmits = vec![
        rtx("10.0.0.7:5432", 210),
        rtx("10.0.0.7:5432", 410),
        rtx("10.0.0.9:6379", 200),
    ];
    r.otlp.ingress.spans_received = 9;
    r.otlp.join.spans_joined = 9;
    r
}

/// Nine requests of two services: checkout is contended, payments lose packets.
pub fn view(degraded: bool) -> LiveView {
    let mut v = LiveView::new(facts(degraded));
    let spans = vec![
        span(0, "checkout", "GET /checkout", 61.3, contended(61.3, 38.0)),
        span(1, "checkout", "GET /checkout", 30.0, contended(30.0, 12.0)),
        span(2, "checkout", "GET /checkout", 20.0, computing(20.0)),
        span(3, "checkout", "GET /cart", 8.0, computing(8.0)),
        span(4, "checkout", "GET /cart", 7.0, contended(7.0, 2.0)),
        span(5, "payments", "POST /pay", 215.0, lossy(215.0, 205.0)),
        span(6, "payments", "POST /pay", 3.0, computing(3.0)),
        span(7, "payments", "POST /pay", 2.5, computing(2.5)),
        span(8, "payments", "POST /pay", 420.0, lossy(420.0, 410.0)),
    ];
    v.on_spans(&spans, NOW_MS - 2_000, |pid| {
        if pid == 4242 {
            Placement {
                cgroup: Some(format!(
                    "/kubepods.slice/kubepods-pod1.slice/cri-containerd-{CONTAINER}.scope"
                )),
                container_id: Some(CONTAINER.to_string()),
            }
        } else {
            Placement {
                cgroup: Some("/system.slice/payments.service".into()),
                container_id: None,
            }
        }
    });
    v.on_report(&report());
    v
}
