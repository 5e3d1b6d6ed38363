//! The lab's scenarios: what each injects, when, and for how long.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};

use super::accuracy::Injected;
use crate::service::load::LoadShape;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    Baseline,
    CpuContention,
    CpuThrottling,
    PacketLoss,
    DiskIo,
    LockContention,
    MemoryPressure,
    PageFault,
    ConnectLoss,
    Saturation,
    RetryStorm,
    Oom,
    Mixed,
}

impl Scenario {
    pub const ALL: [Scenario; 13] = [
        Scenario::Baseline,
        Scenario::CpuContention,
        Scenario::CpuThrottling,
        Scenario::PacketLoss,
        Scenario::DiskIo,
        Scenario::LockContention,
        Scenario::MemoryPressure,
        Scenario::PageFault,
        Scenario::ConnectLoss,
        Scenario::Saturation,
        Scenario::RetryStorm,
        Scenario::Oom,
        Scenario::Mixed,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::CpuContention => "cpu-contention",
            Scenario::CpuThrottling => "cpu-throttling",
            Scenario::PacketLoss => "packet-loss",
            Scenario::DiskIo => "disk-io",
            Scenario::LockContention => "lock-contention",
            Scenario::MemoryPressure => "memory-pressure",
            Scenario::PageFault => "page-fault",
            Scenario::ConnectLoss => "connect-loss",
            Scenario::Saturation => "saturation",
            Scenario::RetryStorm => "retry-storm",
            Scenario::Oom => "oom",
            Scenario::Mixed => "mixed",
        }
    }

    pub(crate) fn description(self) -> String {
        let l = Faults::LAB;
        match self {
            Scenario::Baseline => "nothing injected".into(),
            Scenario::CpuContention => {
                format!("{} CPU hog threads on the service's CPU", l.hog_threads)
            }
            Scenario::CpuThrottling => format!(
                "service in a cgroup capped at {} ms of CPU per {} ms",
                l.quota_us / 1000,
                l.period_us / 1000
            ),
            Scenario::PacketLoss => format!(
                "nftables drops {}% of the packets of the downstream connection",
                l.loss_percent
            ),
            Scenario::DiskIo => format!(
                "{} threads writing 1 MiB at a time (O_DIRECT | O_DSYNC) to the disk `/disk` reads \
                 from with O_DIRECT",
                l.disk_writers
            ),
            Scenario::LockContention => format!(
                "{} CPU hog threads on the CPU of the thread `/lock` requests wait on: it holds \
                 their lock in bursts, and is delayed holding it (a chain of two)",
                l.hog_threads
            ),
            Scenario::MemoryPressure => format!(
                "the service's memory cgroup limited to {} MiB over its use, with a neighbour in \
                 it dirtying page cache: `/alloc` requests fault in memory only after reclaim",
                l.memory_headroom_bytes >> 20
            ),
            Scenario::PageFault => format!(
                "the file `/mapped` requests read through a mapping dropped from the page cache \
                 every 2 ms (clean pages reclaimed under memory pressure) while {} threads keep \
                 the disk busy: each page they touch is a major fault",
                l.fault_disk_writers
            ),
            Scenario::ConnectLoss => format!(
                "nftables drops {}% of the SYNs to the downstream, which `/connect` requests \
                 dial afresh each time: a lost SYN is a connect stalled for its retransmit",
                l.syn_loss_percent
            ),
            Scenario::Saturation => match l.overload {
                LoadShape::Bursty { burst, every } => format!(
                    "a pool of 2 workers that accept and read their own connections, sent {burst} \
                     requests at once (3x the pool) every {} ms: a request waits for a worker in \
                     the listen backlog, before its span",
                    every.as_millis()
                ),
                LoadShape::Steady { rate_per_s } => {
                    format!(
                        "a pool of 2 workers that accept their own connections, {rate_per_s} requests/s"
                    )
                }
            },
            Scenario::RetryStorm => format!(
                "nftables drops {}% of the downstream's packets; `/retry` gives each attempt \
                 300 ms and tries {} times: a lost segment whose retransmit is lost too fails \
                 the attempt",
                l.retry_loss_percent,
                crate::service::retry_call::ATTEMPTS
            ),
            Scenario::Oom => format!(
                "a batch job beside the service, in a memory cgroup limited to {} MiB, whose \
                 workers each ask for 256 MiB: the kernel kills them one after another",
                crate::faults::oom::OOM_LIMIT_BYTES >> 20
            ),
            Scenario::Mixed => "contention, then throttling, then packet loss, one run".into(),
        }
    }

    /// What is injected in each fault phase, in order; the phases share the fault time equally.
    pub fn fault_phases(self) -> Vec<Option<Injected>> {
        match self {
            // The kills slow no request of the service: nothing to attribute.
            Scenario::Baseline | Scenario::Oom => vec![None],
            Scenario::CpuContention => vec![Some(Injected::Contention)],
            Scenario::CpuThrottling => vec![Some(Injected::Throttling)],
            Scenario::PacketLoss => vec![Some(Injected::Retransmit)],
            Scenario::DiskIo => vec![Some(Injected::DiskIo)],
            // Contention still, through the lock holder: the hog delays it, not the request.
            Scenario::LockContention => vec![Some(Injected::Contention)],
            Scenario::MemoryPressure => vec![Some(Injected::MemoryReclaim)],
            Scenario::PageFault => vec![Some(Injected::PageFault)],
            Scenario::ConnectLoss => vec![Some(Injected::ConnectRetransmit)],
            Scenario::Saturation => vec![Some(Injected::QueueBacklog)],
            Scenario::RetryStorm => vec![Some(Injected::Retransmit)],
            Scenario::Mixed => vec![
                Some(Injected::Contention),
                Some(Injected::Throttling),
                Some(Injected::Retransmit),
            ],
        }
    }
}

impl Scenario {
    /// The service's routes the load sends to, in turn: `/disk` only where the disk is loaded
    /// (its requests would only add noise to the others).
    pub(crate) fn routes(self) -> &'static [&'static str] {
        match self {
            Scenario::DiskIo => &["/cpu", "/disk"],
            Scenario::LockContention => &["/cpu", "/lock"],
            Scenario::MemoryPressure => &["/cpu", "/alloc"],
            Scenario::PageFault => &["/cpu", "/mapped"],
            Scenario::ConnectLoss => &["/cpu", "/connect"],
            // The pool serves `/pooled` only.
            Scenario::Saturation => &["/pooled"],
            Scenario::RetryStorm => &["/cpu", "/retry"],
            _ => crate::service::load::DEFAULT_ROUTES,
        }
    }

    /// Whether a request's latency is what its client saw, not its span: where part of it is
    /// spent before the span starts (joined by the trace the client started).
    pub(crate) fn client_observed(self) -> bool {
        self == Scenario::Saturation
    }

    /// The CPU the hogs of a contention phase run on: the service's, or for the lock chain
    /// the lock holder's (the harness's), away from the requests' own threads.
    pub(crate) fn hog_cpu(self) -> usize {
        use crate::faults::placement::{HARNESS_CPU, SERVICE_CPU};
        match self {
            Scenario::LockContention => HARNESS_CPU,
            _ => SERVICE_CPU,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                anyhow::anyhow!("unknown scenario {s:?}; one of: {}", names.join(", "))
            })
    }
}

/// How hard each fault hits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Faults {
    pub(crate) hog_threads: usize,
    pub(crate) quota_us: u64,
    pub(crate) period_us: u64,
    pub(crate) loss_percent: u8,
    /// SYNs dropped in `connect-loss`: each lost one stalls a connect 1 s, so that a handful
    /// of the phase's `/connect` requests stall, not every worker all the time.
    pub(crate) syn_loss_percent: u8,
    pub(crate) disk_writers: usize,
    /// Writers beside the page-cache evictor: a deeper queue, so that a fault's 4 KiB read
    /// waits for the device as long as `/disk`'s 64 KiB ones do in `disk-io`.
    pub(crate) fault_disk_writers: usize,
    /// The memory limit over the service's use when the fault begins.
    pub(crate) memory_headroom_bytes: u64,
    /// The load of `saturation`'s fault phase: bursts of three times the pool.
    pub(crate) overload: LoadShape,
    /// Packets of the downstream's connections dropped in `retry-storm`.
    pub(crate) retry_loss_percent: u8,
}

impl Faults {
    pub(crate) const LAB: Faults = Faults {
        hog_threads: 2,
        // 1 ms per 5 ms: every 5 ms `/cpu` request outruns a period's quota several times,
        // while the service (about 10% of a CPU under the lab load) stays within the 20%
        // allowed. At 2 ms per 10 ms the runtime a CPU keeps between periods (up to 1 ms) and
        // the request's place against the period's edge left some runs' requests barely
        // throttled (seen: a `mixed` run whose throttling phase slowed nothing).
        quota_us: 1_000,
        period_us: 5_000,
        loss_percent: 10,
        syn_loss_percent: 5,
        disk_writers: 4,
        fault_disk_writers: 8,
        memory_headroom_bytes: 96 << 20,
        overload: LoadShape::Bursty {
            burst: 6,
            every: Duration::from_millis(100),
        },
        retry_loss_percent: 30,
    };
}

/// How long each part of a scenario lasts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Load with nothing injected, to learn each route's normal latency.
    pub reference: Duration,
    /// Load with the fault(s) injected: what is measured.
    pub fault: Duration,
    /// Requests per second, alternating the two routes.
    pub rate_per_s: f64,
}

impl Timing {
    /// About 15 s per scenario: the demo.
    pub const DEMO: Timing = Timing {
        reference: Duration::from_secs(4),
        fault: Duration::from_secs(11),
        rate_per_s: 40.0,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_choices() {
        for s in Scenario::ALL {
            assert_eq!(s.name().parse::<Scenario>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        let err = "cpu".parse::<Scenario>().unwrap_err().to_string();
        assert!(err.contains("cpu-contention, cpu-throttling"), "{err}");
    }

    #[test]
    fn mixed_injects_every_cause_in_turn() {
        let phases = Scenario::Mixed.fault_phases();
        assert_eq!(phases.len(), 3);
        assert!(phases.iter().all(Option::is_some));
        assert_eq!(Scenario::Baseline.fault_phases(), vec![None]);
    }
}
