use super::*;

fn view(trace: u8, name: &str, ms: f64, parts: Parts, neighbour: Option<&str>) -> RequestView {
    RequestView {
        trace_id: format!("{trace:032x}"),
        span_id: format!("{trace:016x}"),
        name: name.into(),
        service: Some("checkout".into()),
        pid: 7,
        cgroup: None,
        container_id: None,
        seen_unix_ms: 1_000 + u64::from(trace) * 100,
        duration_ms: ms,
        cause: parts.dominant(0.1).0,
        cause_share: 1.0,
        parts,
        neighbour: neighbour.map(str::to_string),
        retransmit_peer: None,
        retransmits: 0,
        waker: None,
        lock_holder: None,
        disk_device: None,
        join: "thread".into(),
        coverage: 1.0,
    }
}

fn on_cpu(ms: f64) -> Parts {
    Parts {
        on_cpu_ms: ms,
        ..Parts::default()
    }
}

#[test]
fn a_trace_is_its_longest_span_and_the_client_adds_what_is_outside() {
    let views = [
        view(1, "GET /cpu", 5.0, on_cpu(5.0), None),
        // A child span of the same trace.
        RequestView {
            span_id: "ff".repeat(8),
            ..view(1, "SELECT", 1.0, on_cpu(1.0), None)
        },
        view(2, "GET /cpu", 5.0, on_cpu(5.0), None),
    ];
    let client = [ClientRequest {
        trace_id: format!("{:032x}", 1),
        latency_ms: 6.5,
        group: Some("default".into()),
    }];
    let r = requests(&views, &client);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].name, "GET /cpu");
    assert_eq!(r[0].client_ms, Some(6.5));
    assert_eq!(r[0].latency_ms, 6.5);
    assert!(
        (r[0].parts.unobserved_ms - 1.5).abs() < 1e-9,
        "{:?}",
        r[0].parts
    );
    assert_eq!(r[0].group.as_deref(), Some("default"));
    // Not joined: the server's time.
    assert_eq!(r[1].client_ms, None);
    assert_eq!(r[1].latency_ms, 5.0);
}

#[test]
fn the_excess_splits_by_cause_each_part_at_most_the_excess() {
    let contended = Parts {
        on_cpu_ms: 5.0,
        contention_ms: 20.0,
        ..Parts::default()
    };
    let mut views: Vec<RequestView> = (1..=98)
        .map(|i| view(i, "GET /cpu", 5.0, on_cpu(5.0), None))
        .collect();
    views.push(view(99, "GET /cpu", 25.0, contended, Some("hog (42)")));
    views.push(view(100, "GET /cpu", 25.0, contended, Some("hog (42)")));
    let r = requests(&views, &[]);
    let all: Vec<&ReportRequest> = r.iter().collect();
    let s = service_report("checkout", &all);
    assert_eq!(s.requests, 100);
    // Each slow request is 20 ms over the median of 5: all contention (capped at the excess).
    assert!((s.p99_excess_ms - 40.0).abs() < 1e-9, "{s:?}");
    let top = &s.p99_by_cause[0];
    assert_eq!(top.cause, Cause::CpuContention);
    assert!((top.share - 1.0).abs() < 1e-9, "{top:?}");
    assert_eq!(top.who[0].0, "hog (42)");
    // The parts of a request that explain more than its excess are scaled to it.
    let mixed = Parts {
        contention_ms: 10.0,
        queue_ms: 10.0,
        on_cpu_ms: 5.0,
        ..Parts::default()
    };
    let slow = ReportRequest {
        latency_ms: 15.0,
        parts: mixed,
        ..r[0].clone()
    };
    let typical = BTreeMap::from([(
        "GET /cpu".to_string(),
        Typical {
            median_ms: 5.0,
            parts: on_cpu(5.0),
        },
    )]);
    let (excess, shares) = excess_by_cause(&[&slow], &typical);
    assert_eq!(excess, 10.0);
    let sum: f64 = shares.iter().map(|s| s.ms).sum();
    assert!((sum - 10.0).abs() < 1e-9, "{shares:?}");
    // Its own time, no more than the typical request's, explains none of it.
    assert!(shares.iter().all(|s| s.cause != Cause::OnCpu), "{shares:?}");
    assert_eq!(shares[0].share, 0.5);
    // A request faster than its median has no excess to split.
    let fast = ReportRequest {
        latency_ms: 1.0,
        ..slow.clone()
    };
    assert_eq!(excess_by_cause(&[&fast], &typical), (0.0, vec![]));
}

#[test]
fn time_bins_hold_the_mean_request_and_the_slowest_are_listed_first() {
    let views: Vec<RequestView> = (1..=30)
        .map(|i| view(i, "GET /cpu", f64::from(i), on_cpu(f64::from(i)), None))
        .collect();
    let r = requests(&views, &[]);
    let all: Vec<&ReportRequest> = r.iter().collect();
    let s = service_report("checkout", &all);
    // Requests 100 ms apart over 2.9 s: 1 s bins.
    assert_eq!(s.bin_s, 1.0);
    assert_eq!(s.bins.len(), 3);
    // The first bin holds requests 1..=10 (seen 1.1 s to 2.0 s after the epoch): mean 5.5 ms.
    assert!((s.bins[0].1.on_cpu_ms - 5.5).abs() < 1e-9, "{:?}", s.bins);
    assert_eq!(s.slowest.len(), 10);
    assert_eq!(s.slowest[0].latency_ms, 30.0);
}

#[test]
fn the_client_view_is_per_group_with_what_was_joined() {
    let views: Vec<RequestView> = (1..=4)
        .map(|i| view(i, "GET /cpu", 5.0, on_cpu(5.0), None))
        .collect();
    let client: Vec<ClientRequest> = (1..=6)
        .map(|i| ClientRequest {
            trace_id: format!("{i:032x}"),
            latency_ms: 6.0,
            group: Some(if i % 2 == 0 { "a" } else { "b" }.into()),
        })
        .collect();
    let joined = requests(&views, &client);
    let summaries = client_summaries(&client, &joined);
    assert_eq!(summaries.len(), 2);
    assert_eq!(summaries[0].group.as_deref(), Some("a"));
    assert_eq!((summaries[0].requests, summaries[0].joined), (3, 2));
    assert_eq!(summaries[0].p50_ms, 6.0);
}
