//! The accuracy arithmetic on hand-made requests.

use super::*;

fn req(route: &str, latency_ms: f64, parts: Parts, injected: Option<Injected>) -> Request {
    Request {
        trace_id: String::new(),
        route: route.into(),
        start_mono_ns: 0,
        latency_ms,
        cause: Cause::default(),
        neighbour: None,
        waker: None,
        lock_holder: None,
        disk_device: None,
        retransmit_peer: None,
        parts,
        injected,
    }
}

fn parts(on_cpu_ms: f64, contention_ms: f64, throttled_ms: f64, retransmit_ms: f64) -> Parts {
    Parts {
        on_cpu_ms,
        contention_ms,
        throttled_ms,
        retransmit_ms,
        ..Parts::default()
    }
}

#[test]
fn short_requests_count_as_decomposed_when_observed_and_explained() {
    let mut observed = req("GET /downstream", 0.2, parts(0.1, 0.0, 0.0, 0.0), None);
    observed.parts.off_cpu_ms = 0.09;
    observed.parts.unobserved_ms = 0.01;
    observed.cause = Cause::OffCpu;
    assert!(decomposed(&observed));
    let mut unknown = observed.clone();
    unknown.cause = Cause::Unknown;
    assert!(!decomposed(&unknown));
    let mut unseen = observed.clone();
    unseen.parts.unobserved_ms = 0.05;
    assert!(!decomposed(&unseen));
    let long = req("GET /cpu", 5.0, parts(5.0, 0.0, 0.0, 0.0), None);
    let s = summarize(&[observed, unknown, unseen, long], &BTreeMap::new());
    assert_eq!((s.short_requests, s.short_decomposed), (3, 1));
}

#[test]
fn quantiles_use_nearest_rank() {
    let v: Vec<f64> = (1..=10).map(f64::from).collect();
    assert_eq!(quantile(&v, 0.5), 5.0);
    assert_eq!(quantile(&v, 0.9), 9.0);
    assert_eq!(quantile(&v, 0.99), 10.0);
    assert_eq!(quantile(&v, 0.0), 1.0);
    assert_eq!(quantile(&[], 0.5), 0.0);
    assert_eq!(quantile(&[3.0, 1.0, 2.0], 1.0), 3.0);
}

#[test]
fn route_medians_are_per_route() {
    let r = [
        req("a", 1.0, Parts::default(), None),
        req("a", 3.0, Parts::default(), None),
        req("a", 2.0, Parts::default(), None),
        req("b", 10.0, Parts::default(), None),
    ];
    let m = route_medians(&r);
    assert_eq!(m["a"], 2.0);
    assert_eq!(m["b"], 10.0);
}

#[test]
fn accuracy_is_the_explained_share_of_the_slow_requests_excess() {
    let reference = BTreeMap::from([("cpu".to_string(), 5.0)]);
    let c = Some(Injected::Contention);
    // Nine requests faster than the reference (no excess), 1.0 to 1.8 ms.
    let mut measured: Vec<Request> = (0..9)
        .map(|i| {
            req(
                "cpu",
                1.0 + f64::from(i) / 10.0,
                parts(1.0, 0.0, 0.0, 0.0),
                c,
            )
        })
        .collect();
    // The slow one: 15 ms of excess, 12 ms of it blamed on contention.
    measured.push(req("cpu", 20.0, parts(5.0, 12.0, 0.0, 0.0), c));
    let s = summarize(&measured, &reference);
    assert_eq!(s.requests, 10);
    // p90 by nearest rank is the 9th value: 1.8 ms and 20 ms are the slow ones.
    assert_eq!(s.p90_ms, 1.8);
    assert_eq!(s.slow_requests, 2);
    assert!((s.accuracy.unwrap() - 0.8).abs() < 1e-9, "{s:?}");
    assert!((s.accuracy_by_cause["cpu.contention"] - 0.8).abs() < 1e-9);
    assert!((s.slow_excess_ms - 15.0).abs() < 1e-9);
}

#[test]
fn the_label_share_counts_the_slowed_slow_requests_named_for_the_cause() {
    let reference = BTreeMap::from([("cpu".to_string(), 5.0)]);
    let c = Some(Injected::Contention);
    let labelled = |latency_ms: f64, cause: Cause| {
        let mut r = req("cpu", latency_ms, parts(5.0, latency_ms - 5.0, 0.0, 0.0), c);
        r.cause = cause;
        r
    };
    // 36 fast requests (at the p90 as nearest rank has it, with no excess), then two slowed and labelled contention, one slowed and
    // labelled on_cpu, one only 0.4 ms over the reference (not slowed: left out).
    let mut measured: Vec<Request> = (0..36).map(|_| labelled(4.0, Cause::OnCpu)).collect();
    measured.extend([
        labelled(12.0, Cause::CpuContention),
        labelled(9.0, Cause::CpuContention),
        labelled(7.0, Cause::OnCpu),
        labelled(5.4, Cause::OnCpu),
    ]);
    let s = summarize(&measured, &reference);
    assert!(
        (s.label_by_cause["cpu.contention"] - 2.0 / 3.0).abs() < 1e-9,
        "{s:?}"
    );
    // Nothing slowed: no label share at all rather than a zero.
    let calm: Vec<Request> = (0..10).map(|_| labelled(5.0, Cause::OnCpu)).collect();
    assert!(summarize(&calm, &reference).label_by_cause.is_empty());
}

#[test]
fn lost_packets_are_judged_only_on_the_requests_that_use_the_connection() {
    let route = crate::service::server::DOWNSTREAM_ROUTE;
    let reference = BTreeMap::from([(route.to_string(), 5.0), ("cpu".to_string(), 5.0)]);
    let r = Some(Injected::Retransmit);
    let mut measured: Vec<Request> = (0..36)
        .map(|_| req("cpu", 4.0, parts(4.0, 0.0, 0.0, 0.0), r))
        .collect();
    let mut lost = req(route, 300.0, parts(1.0, 0.0, 0.0, 299.0), r);
    lost.cause = Cause::TcpRetransmit;
    // A `/cpu` request slowed behind a neighbour in the same phase: no verdict on the loss.
    let mut queued = req("cpu", 12.0, parts(5.0, 7.0, 0.0, 0.0), r);
    queued.cause = Cause::CpuContention;
    measured.extend([lost.clone(), lost, queued.clone(), queued]);
    let s = summarize(&measured, &reference);
    assert_eq!(s.label_by_cause["tcp.retransmit"], 1.0, "{s:?}");
    assert!(Injected::Contention.reaches("cpu") && !Injected::Retransmit.reaches("cpu"));
}

#[test]
fn lost_packets_that_stall_a_reconnect_are_the_loss_too() {
    let route = crate::service::server::DOWNSTREAM_ROUTE;
    let reference = BTreeMap::from([(route.to_string(), 1.0)]);
    let r = Some(Injected::Retransmit);
    let mut measured: Vec<Request> = (0..18)
        .map(|_| req(route, 1.0, parts(1.0, 0.0, 0.0, 0.0), r))
        .collect();
    // A data retransmit, and a connection re-opened after the loss whose SYN was lost too.
    let mut lost = req(route, 301.0, parts(1.0, 0.0, 0.0, 300.0), r);
    lost.cause = Cause::TcpRetransmit;
    let mut reconnect = req(route, 1001.0, parts(1.0, 0.0, 0.0, 0.0), r);
    reconnect.parts.connect_retransmit_ms = 1000.0;
    reconnect.cause = Cause::TcpConnectRetransmit;
    measured.extend([lost, reconnect]);
    let s = summarize(&measured, &reference);
    assert!((s.accuracy.unwrap() - 1.0).abs() < 1e-9, "{s:?}");
    assert_eq!(s.label_by_cause["tcp.retransmit"], 1.0, "{s:?}");
    // Dropped SYNs alone are judged on the connect stalls only.
    assert!(Injected::ConnectRetransmit.named_by(Cause::TcpConnectRetransmit));
    assert!(!Injected::ConnectRetransmit.named_by(Cause::TcpRetransmit));
}

#[test]
fn a_request_slowed_less_than_a_lost_syn_costs_is_no_verdict_on_it() {
    let route = crate::service::server::CONNECT_ROUTE;
    let reference = BTreeMap::from([(route.to_string(), 1.0)]);
    let c = Some(Injected::ConnectRetransmit);
    let mut measured: Vec<Request> = (0..16)
        .map(|_| req(route, 1.0, parts(1.0, 0.0, 0.0, 0.0), c))
        .collect();
    let mut stalled = req(route, 1001.0, parts(1.0, 0.0, 0.0, 0.0), c);
    stalled.parts.connect_retransmit_ms = 1000.0;
    stalled.cause = Cause::TcpConnectRetransmit;
    // Slow in its phase, behind the other worker: 6 ms, not a second.
    let mut queued = req(route, 7.0, parts(1.0, 6.0, 0.0, 0.0), c);
    queued.cause = Cause::CpuContention;
    measured.extend([stalled.clone(), stalled, queued.clone(), queued]);
    let s = summarize(&measured, &reference);
    assert_eq!(s.label_by_cause["tcp.connect_retransmit"], 1.0, "{s:?}");
}

#[test]
fn explained_time_beyond_the_excess_does_not_count_twice() {
    let reference = BTreeMap::from([("cpu".to_string(), 5.0)]);
    let t = Some(Injected::Throttling);
    // 10 ms of excess, 30 ms of throttling reported: the request counts as fully explained,
    // but no more.
    let measured = [
        req("cpu", 15.0, parts(5.0, 0.0, 30.0, 0.0), t),
        req("cpu", 15.0, parts(5.0, 10.0, 0.0, 0.0), t),
    ];
    let s = summarize(&measured, &reference);
    assert!((s.accuracy.unwrap() - 0.5).abs() < 1e-9, "{s:?}");
}

#[test]
fn each_request_is_judged_against_the_cause_injected_at_its_time() {
    let reference = BTreeMap::from([("r".to_string(), 0.0)]);
    let measured = [
        req(
            "r",
            10.0,
            parts(0.0, 10.0, 0.0, 0.0),
            Some(Injected::Contention),
        ),
        req(
            "r",
            10.0,
            parts(0.0, 10.0, 0.0, 0.0),
            Some(Injected::Retransmit),
        ),
    ];
    let s = summarize(&measured, &reference);
    assert_eq!(s.accuracy_by_cause["cpu.contention"], 1.0);
    assert_eq!(s.accuracy_by_cause["tcp.retransmit"], 0.0);
    assert!((s.accuracy.unwrap() - 0.5).abs() < 1e-9);
}

#[test]
fn each_phase_has_its_own_slow_requests() {
    let reference = BTreeMap::from([("r".to_string(), 1.0)]);
    let c = Some(Injected::Contention);
    let x = Some(Injected::Retransmit);
    let mut measured = Vec::new();
    // Contention's phase: 9 requests of 1 ms and one of 11 ms, 10 of it contention.
    measured.extend((0..9).map(|_| req("r", 1.0, parts(1.0, 0.0, 0.0, 0.0), c)));
    measured.push(req("r", 11.0, parts(1.0, 10.0, 0.0, 0.0), c));
    // Packet loss's phase: every request far slower than anything in the other phase.
    measured.extend((0..10).map(|_| req("r", 201.0, parts(1.0, 0.0, 0.0, 200.0), x)));
    let s = summarize(&measured, &reference);
    assert_eq!(s.accuracy_by_cause["cpu.contention"], 1.0, "{s:?}");
    assert_eq!(s.accuracy_by_cause["tcp.retransmit"], 1.0, "{s:?}");
}

#[test]
fn nothing_injected_means_no_accuracy_but_a_kernel_share() {
    let reference = BTreeMap::new();
    let measured = [
        req("r", 10.0, parts(9.0, 1.0, 0.0, 0.0), None),
        req("r", 10.0, parts(10.0, 0.0, 0.0, 0.0), None),
    ];
    let s = summarize(&measured, &reference);
    assert_eq!(s.accuracy, None);
    assert!((s.kernel_share - 0.05).abs() < 1e-9);
    assert_eq!(summarize(&[], &reference), Summary::default());
}
