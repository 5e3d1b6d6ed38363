//! The lab's load generator: open-loop HTTP requests to the lab service, alternating its two
//! routes. Open loop means a request is sent on schedule whether or not earlier ones have
//! finished, and its latency is counted from when it was due, so a stalled service shows up
//! in full (no coordinated omission).

use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
use std::{
    sync::{
        Arc, Mutex,
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
    /// From when it was due to when its answer was read.
    pub(crate) latency: Duration,
    pub(crate) ok: bool,
    /// The trace it started (its `traceparent`): a server that continues the trace joins its
    /// span with this sample.
    pub(crate) trace_id: String,
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
    let (due_tx, due_rx) = mpsc::channel::<(Instant, &'static str)>();
    let due_rx = Arc::new(Mutex::new(due_rx));
    let (done_tx, done_rx) = mpsc::channel();
    let workers: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let due_rx = due_rx.clone();
            let done_tx = done_tx.clone();
            let base_url = base_url.to_string();
            thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(10)))
                    .http_status_as_error(false)
                    .build()
                    .into();
                loop {
                    let next = due_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((due, path))) = next else { break };
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
                        latency: due.elapsed(),
                        ok,
                        trace_id,
                    });
                }
            })
        })
        .collect();
    drop(done_tx);
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
        if due_tx.send((due, path)).is_err() {
            break;
        }
    }
    drop(due_tx);
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
