//! A span's wall time split into disjoint parts, in ms: what the live view, the lab and the
//! reports add up and draw. (The attribution's durations overlap: the run-queue time includes
//! the throttled time, the off-CPU time the retransmit wait.)

use serde::{Deserialize, Serialize};

use super::attribution::Attribution;
use crate::cause::{Cause, Part};

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Parts {
    /// Before the span: the request waited to be read (listen backlog, receive queue), beyond
    /// the reader's own waits for a CPU (counted in contention and throttling).
    #[serde(default)]
    pub queue_ms: f64,
    pub on_cpu_ms: f64,
    pub contention_ms: f64,
    pub throttled_ms: f64,
    /// On-CPU time the hypervisor took (steal time).
    #[serde(default)]
    pub steal_ms: f64,
    pub retransmit_ms: f64,
    /// Off-CPU time waiting on a retransmitted handshake (a connect stalled).
    #[serde(default)]
    pub connect_retransmit_ms: f64,
    /// Off-CPU time asleep in the kernel's I/O wait.
    #[serde(default)]
    pub disk_io_ms: f64,
    /// Time reclaiming memory on CPU or stalled on it off CPU.
    #[serde(default)]
    pub memory_reclaim_ms: f64,
    /// Off-CPU time asleep in a page fault (a major fault's read).
    #[serde(default)]
    pub page_fault_ms: f64,
    /// Off-CPU time in `futex` its releaser's delays do not explain.
    #[serde(default)]
    pub lock_wait_ms: f64,
    /// Off-CPU time explained by nothing above (sleeps, sockets, a downstream's work).
    pub off_cpu_ms: f64,
    /// Time the probes saw no thread activity for.
    pub unobserved_ms: f64,
}

impl Parts {
    pub fn of(a: &Attribution, duration_ms: f64) -> Self {
        let ms = |secs: f64| (secs * 1e3).max(0.0);
        let steal_ms = ms(a.cpu_steal_s);
        let on_cpu_ms = ms(a.on_cpu_s - a.memory_reclaim_on_cpu_s - a.cpu_steal_s);
        // The wait before the span: its reader's waits for a CPU are contention and throttling,
        // the rest the backlog. Not part of the span's duration.
        let queue_ms = ms(a.queue_wait_s - a.queue_runq_s - a.queue_throttled_s);
        // Throttling and contention of its own and of its wakers (the wake chain), the latter
        // off-CPU time.
        let throttled_ms = ms(a.throttled_s) + ms(a.waker_throttled_s);
        let contention_ms =
            ms(a.runqueue_s - a.throttled_s - a.memory_reclaim_runq_s) + ms(a.waker_delay_s);
        let all_retransmit_ms = ms(a.retransmit_wait_s).min(duration_ms);
        let connect_retransmit_ms = ms(a.connect_retransmit_wait_s).min(all_retransmit_ms);
        let retransmit_ms = all_retransmit_ms - connect_retransmit_ms;
        let disk_io_ms = ms(a.disk_io_s);
        let memory_reclaim_ms = ms(a.memory_reclaim_s);
        let page_fault_ms = ms(a.page_fault_s);
        let lock_wait_ms = ms(a.lock_wait_s);
        let off_cpu_ms = ms(a.off_cpu_s
            - a.retransmit_wait_s
            - a.waker_delay_s
            - a.waker_throttled_s
            - a.disk_io_s
            - (a.memory_reclaim_s - a.memory_reclaim_on_cpu_s - a.memory_reclaim_runq_s)
            - a.page_fault_s
            - a.lock_wait_s);
        let seen = on_cpu_ms
            + steal_ms
            + throttled_ms
            + contention_ms
            + retransmit_ms
            + connect_retransmit_ms
            + disk_io_ms
            + memory_reclaim_ms
            + page_fault_ms
            + lock_wait_ms
            + off_cpu_ms;
        Self {
            queue_ms,
            on_cpu_ms,
            contention_ms: contention_ms + ms(a.queue_runq_s),
            throttled_ms: throttled_ms + ms(a.queue_throttled_s),
            steal_ms,
            retransmit_ms,
            connect_retransmit_ms,
            disk_io_ms,
            memory_reclaim_ms,
            page_fault_ms,
            lock_wait_ms,
            off_cpu_ms,
            unobserved_ms: (duration_ms - seen).max(0.0),
        }
    }

    /// The time of one part.
    pub fn get(&self, part: Part) -> f64 {
        match part {
            Part::Queue => self.queue_ms,
            Part::OnCpu => self.on_cpu_ms,
            Part::Contention => self.contention_ms,
            Part::Throttled => self.throttled_ms,
            Part::Steal => self.steal_ms,
            Part::Retransmit => self.retransmit_ms,
            Part::ConnectRetransmit => self.connect_retransmit_ms,
            Part::DiskIo => self.disk_io_ms,
            Part::MemoryReclaim => self.memory_reclaim_ms,
            Part::PageFault => self.page_fault_ms,
            Part::LockWait => self.lock_wait_ms,
            Part::OffCpu => self.off_cpu_ms,
            Part::Unobserved => self.unobserved_ms,
        }
    }

    /// Each part with its time, in drawing order.
    pub fn each(&self) -> impl Iterator<Item = (Part, f64)> + '_ {
        Part::ALL.into_iter().map(|p| (p, self.get(p)))
    }

    /// The times in [`Part::ALL`] order.
    pub fn values(&self) -> [f64; Part::ALL.len()] {
        [
            self.queue_ms,
            self.on_cpu_ms,
            self.contention_ms,
            self.throttled_ms,
            self.steal_ms,
            self.retransmit_ms,
            self.connect_retransmit_ms,
            self.disk_io_ms,
            self.memory_reclaim_ms,
            self.page_fault_ms,
            self.lock_wait_ms,
            self.off_cpu_ms,
            self.unobserved_ms,
        ]
    }

    /// Every part multiplied by `k` (a mean from a sum).
    pub fn scaled(&self, k: f64) -> Parts {
        let v = self.values().map(|ms| ms * k);
        Parts {
            queue_ms: v[0],
            on_cpu_ms: v[1],
            contention_ms: v[2],
            throttled_ms: v[3],
            steal_ms: v[4],
            retransmit_ms: v[5],
            connect_retransmit_ms: v[6],
            disk_io_ms: v[7],
            memory_reclaim_ms: v[8],
            page_fault_ms: v[9],
            lock_wait_ms: v[10],
            off_cpu_ms: v[11],
            unobserved_ms: v[12],
        }
    }

    pub fn total_ms(&self) -> f64 {
        self.values().iter().sum()
    }

    pub fn kernel_ms(&self) -> f64 {
        self.each()
            .filter(|(p, _)| p.is_kernel())
            .map(|(_, ms)| ms)
            .sum()
    }

    pub fn add(&mut self, o: &Parts) {
        self.queue_ms += o.queue_ms;
        self.on_cpu_ms += o.on_cpu_ms;
        self.contention_ms += o.contention_ms;
        self.throttled_ms += o.throttled_ms;
        self.steal_ms += o.steal_ms;
        self.retransmit_ms += o.retransmit_ms;
        self.connect_retransmit_ms += o.connect_retransmit_ms;
        self.disk_io_ms += o.disk_io_ms;
        self.memory_reclaim_ms += o.memory_reclaim_ms;
        self.page_fault_ms += o.page_fault_ms;
        self.lock_wait_ms += o.lock_wait_ms;
        self.off_cpu_ms += o.off_cpu_ms;
        self.unobserved_ms += o.unobserved_ms;
    }

    /// The part with most time, preferring a kernel cause when it holds at least `kernel_min`
    /// of the total: on_cpu and off_cpu are the code's own time, a kernel cause is news.
    pub fn dominant(&self, kernel_min: f64) -> (Cause, f64) {
        let total = self.total_ms();
        if total <= 0.0 {
            return (Cause::Unknown, 0.0);
        }
        let best = |kernel: bool| {
            self.each()
                .filter_map(|(p, ms)| Some((p.cause()?, ms / total)))
                .filter(|(c, _)| c.is_kernel() == kernel)
                .max_by(|a, b| a.1.total_cmp(&b.1))
        };
        match (best(true), best(false)) {
            (Some(k), _) if k.1 >= kernel_min => k,
            (_, Some(p)) => p,
            (Some(k), None) => k,
            (None, None) => (Cause::Unknown, 0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_split_the_attribution_without_overlap() {
        let a = Attribution {
            on_cpu_s: 0.005,
            runqueue_s: 0.003,
            throttled_s: 0.001,
            off_cpu_s: 0.232,
            retransmit_wait_s: 0.2,
            ..Default::default()
        };
        let p = Parts::of(&a, 250.0);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert!(close(p.on_cpu_ms, 5.0), "{p:?}");
        assert!(close(p.contention_ms, 2.0), "{p:?}");
        assert!(close(p.throttled_ms, 1.0), "{p:?}");
        assert!(close(p.retransmit_ms, 200.0), "{p:?}");
        assert!(close(p.off_cpu_ms, 32.0), "{p:?}");
        assert!(close(p.unobserved_ms, 10.0), "{p:?}");
        assert!(close(p.total_ms(), 250.0));
        assert!(close(p.kernel_ms(), 203.0));
    }

    #[test]
    fn scaling_keeps_each_part_in_its_place() {
        let p = Parts {
            queue_ms: 1.0,
            lock_wait_ms: 2.0,
            unobserved_ms: 4.0,
            ..Parts::default()
        };
        let half = p.scaled(0.5);
        for (part, ms) in p.each() {
            assert_eq!(half.get(part), ms / 2.0, "{part:?}");
        }
    }

    #[test]
    fn a_kernel_cause_dominates_from_its_threshold_on() {
        let p = Parts {
            on_cpu_ms: 70.0,
            contention_ms: 25.0,
            off_cpu_ms: 5.0,
            ..Parts::default()
        };
        assert_eq!(p.dominant(0.10).0, "cpu.contention");
        assert_eq!(p.dominant(0.30).0, "on_cpu");
        assert_eq!(Parts::default().dominant(0.1), (Cause::Unknown, 0.0));
        let idle = Parts {
            off_cpu_ms: 10.0,
            unobserved_ms: 50.0,
            ..Parts::default()
        };
        assert_eq!(idle.dominant(0.1).0, "off_cpu");
    }
}
