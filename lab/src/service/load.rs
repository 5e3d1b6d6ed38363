//! The lab's load generator: open-loop HTTP requests to the lab service, alternating its two
//! routes. Open loop means a request is sent on schedule whether or not earlier ones have
//! finished; a request held because every worker was still waiting on earlier ones counts
//! from when it was due, so a stalled service shows up in full (no coordinated omission).
//! Otherwise a request counts from its send, as k6's `http_req_duration` does: how late the
//! lab's own workers got to it on their shared CPU is their lag, not the service's.

use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

/// How requests are spread in time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LoadShape {
    /// `rate_per_s` requests per second, evenly spaced.
    Steady { rate_per_s: f64 },
    /// `burst` requests at once, every `every`.
    Bursty { burst: usize, every: Duration },
}

impl LoadShape {
    /// When each request is due, from the start, for a run of `length`.
    pub(crate) fn schedule(&self, length: Duration) -> Vec<Duration> {
        match *self {
            LoadShape::Steady { rate_per_s } if rate_per_s > 0.0 => {
                let gap = Duration::from_secs_f64(1.0 / rate_per_s);
                (0..).map(|i| gap * i).take_while(|t| *t < length).collect()
            }
            LoadShape::Bursty { burst, every } if !every.is_zero() => (0..)
                .map(|i| every * i)
                .take_while(|t| *t < length)
                .flat_map(|t| std::iter::repeat_n(t, burst))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// One request as the client saw it.
#[derive(Debug, Clone)]
pub(crate) struct ClientSample {
    /// From when the client sent it (when it was due, if it was held for a busy pool) to when
    /// its answer was read.
    pub(crate) latency: Duration,
    /// How late the client sent it: from when it was due to when a worker sent it. The lab's
    /// own lag (its workers share one CPU with the agent and the harness, and a burst's last
    /// request waits for the others' sends), apart from the request's latency; it would also
    /// hold a request all of whose workers were busy (coordinated omission), and is reported.
    pub(crate) dispatch_lag: Duration,
    pub(crate) ok: bool,
    /// The trace it started (its `traceparent`): a server that continues the trace joins its
    /// span with this sample.
    pub(crate) trace_id: String,
}

/// A request handed to a worker: when it was due, whether it was held for a busy pool, where.
struct Due {
    due: Instant,
    held: bool,
    path: &'static str,
}

/// The routes most scenarios and the benches load, in turn.
pub(crate) const DEFAULT_ROUTES: &[&str] = &["/cpu", "/downstream"];

/// Sends the schedule to `base_url` (e.g. `http://127.0.0.1:8080`) from `clients` threads,
/// to each of `routes` in turn. Stops early when `stop` is set.
pub(crate) fn run(
    base_url: &str,
    shape: LoadShape,
    length: Duration,
    clients: usize,
    routes: &[&'static str],
    stop: &AtomicBool,
) -> Vec<ClientSample> {
    // Each worker has a channel of its own and says when it is idle: a due request goes
    // straight to one idle worker, one wakeup. Workers sharing one receiver behind a mutex
    // handed a burst on one at a time, each woken by the one before: the sixth request of a
    // burst left 2.3 ms after it was due (p90; median 0.7 ms), the lab's own lag counted in
    // the request's latency.
    let (idle_tx, idle_rx) = mpsc::channel::<usize>();
    let (done_tx, done_rx) = mpsc::channel();
    let mut to_workers = Vec::new();
    let workers: Vec<_> = (0..clients.max(1))
        .map(|id| {
            let (due_tx, due_rx) = mpsc::channel::<Due>();
            to_workers.push(due_tx);
            let idle_tx = idle_tx.clone();
            let done_tx = done_tx.clone();
            let base_url = base_url.to_string();
            thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(10)))
                    .http_status_as_error(false)
                    .build()
                    .into();
                while idle_tx.send(id).is_ok() {
                    let Ok(Due { due, held, path }) = due_rx.recv() else {
                        break;
                    };
                    let sent = Instant::now();
                    let ids = RandomIdGenerator::default();
                    let trace_id = ids.new_trace_id().to_string();
                    let ok = agent
                        .get(format!("{base_url}{path}"))
                        .header(
                            "traceparent",
                            format!("00-{trace_id}-{}-01", ids.new_span_id()),
                        )
                        .call()
                        .is_ok_and(|mut r| {
                            r.status().is_success() && r.body_mut().read_to_vec().is_ok()
                        });
                    let _ = done_tx.send(ClientSample {
                        latency: if held { due } else { sent }.elapsed(),
                        dispatch_lag: sent.saturating_duration_since(due),
                        ok,
                        trace_id,
                    });
                }
            })
        })
        .collect();
    drop((done_tx, idle_tx));
    let start = Instant::now();
    for (i, offset) in shape.schedule(length).into_iter().enumerate() {
        let due = start + offset;
        while Instant::now() < due {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            thread::sleep((due - Instant::now()).min(Duration::from_millis(50)));
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let path = routes[i % routes.len().max(1)];
        // The next idle worker; when all are busy, the request is held until one is free and
        // counts from `due`.
        let (worker, held) = match idle_rx.try_recv() {
            Ok(worker) => (worker, false),
            Err(mpsc::TryRecvError::Empty) => match idle_rx.recv() {
                Ok(worker) => (worker, true),
                Err(_) => break,
            },
            Err(mpsc::TryRecvError::Disconnected) => break,
        };
        if to_workers[worker].send(Due { due, held, path }).is_err() {
            break;
        }
    }
    drop(to_workers);
    for w in workers {
        let _ = w.join();
    }
    done_rx.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_load_is_evenly_spaced() {
        let s = LoadShape::Steady { rate_per_s: 4.0 }.schedule(Duration::from_secs(1));
        assert_eq!(
            s,
            [0, 250, 500, 750].map(Duration::from_millis).to_vec(),
            "{s:?}"
        );
        assert!(
            LoadShape::Steady { rate_per_s: 0.0 }
                .schedule(Duration::from_secs(1))
                .is_empty()
        );
    }

    /// A server answering each request after `delay`, each on a thread of its own.
    fn slow_server(delay: Duration) -> String {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf);
                    thread::sleep(delay);
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                });
            }
        });
        format!("http://{addr}")
    }

    #[test]
    fn a_request_held_for_a_busy_worker_counts_from_when_it_was_due() {
        let url = slow_server(Duration::from_millis(300));
        let burst = LoadShape::Bursty {
            burst: 2,
            every: Duration::from_secs(10),
        };
        let stop = AtomicBool::new(false);
        // One worker: the second request waits for the first's answer (300 ms), and that wait
        // is its.
        let mut one = run(&url, burst, Duration::from_millis(1), 1, &["/"], &stop);
        one.sort_by_key(|s| s.latency);
        assert!(one.iter().all(|s| s.ok), "{one:?}");
        assert!(one[1].latency >= Duration::from_millis(600), "{one:?}");
        assert!(one[1].dispatch_lag >= Duration::from_millis(300), "{one:?}");
        // Two workers: neither is held, each counts from its send.
        let two = run(&url, burst, Duration::from_millis(1), 2, &["/"], &stop);
        assert!(
            two.iter()
                .all(|s| s.ok && s.latency < Duration::from_millis(550)),
            "{two:?}"
        );
    }

    #[test]
    fn bursty_load_sends_whole_bursts() {
        let s = LoadShape::Bursty {
            burst: 3,
            every: Duration::from_millis(400),
        }
        .schedule(Duration::from_secs(1));
        assert_eq!(s.len(), 9);
        assert_eq!(s[3], Duration::from_millis(400));
        assert_eq!(s[8], Duration::from_millis(800));
    }
}
