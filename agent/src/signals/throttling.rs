//! CFS bandwidth statistics from a cgroup's `cpu.stat` (v1 and v2), and the throttle episodes
//! derived from polling them. The kernel's own counters: the ground truth the in-kernel
//! throttled split is checked against.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::host::membership;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CpuStat {
    pub nr_periods: u64,
    pub nr_throttled: u64,
    /// v1 `throttled_time` (ns) or v2 `throttled_usec` x 1000.
    pub throttled_ns: u64,
}

/// Parses `cpu.stat` of either cgroup version. `None` without bandwidth fields (no quota
/// support in the kernel or the root cgroup).
pub(crate) fn parse_cpu_stat(text: &str) -> Option<CpuStat> {
    let mut stat = CpuStat::default();
    let mut seen = false;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<u64>() else {
            continue;
        };
        match key {
            "nr_periods" => stat.nr_periods = value,
            "nr_throttled" => stat.nr_throttled = value,
            "throttled_time" => {
                stat.throttled_ns = value;
                seen = true;
            }
            "throttled_usec" => {
                stat.throttled_ns = value * 1000;
                seen = true;
            }
            _ => {}
        }
    }
    seen.then_some(stat)
}

/// A run of consecutive polls in which the cgroup was throttled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleEpisode {
    pub cgroup: String,
    /// Monotonic ns of the last poll before the first throttled period, and of the last poll
    /// that saw a new one: the episode lies within, to the poll interval.
    pub start_ns: u64,
    pub end_ns: u64,
    pub periods: u64,
    pub throttled_ns: u64,
}

struct Watched {
    last: Option<CpuStat>,
    last_poll_ns: u64,
    open: Option<ThrottleEpisode>,
}

/// Polls the `cpu.stat` of watched cgroups and turns counter changes into episodes.
#[derive(Default)]
pub(crate) struct ThrottleMonitor {
    cgroups: HashMap<PathBuf, Watched>,
    finished: Vec<ThrottleEpisode>,
}

impl ThrottleMonitor {
    pub(crate) fn watch(&mut self, dir: &Path) {
        self.cgroups.entry(dir.to_path_buf()).or_insert(Watched {
            last: None,
            last_poll_ns: 0,
            open: None,
        });
    }

    pub(crate) fn watched(&self) -> impl Iterator<Item = &Path> {
        self.cgroups.keys().map(PathBuf::as_path)
    }

    /// Reads every watched `cpu.stat`; cgroups that vanished are dropped, their open episode
    /// closed.
    pub(crate) fn poll(&mut self, now_ns: u64) {
        let mut gone = Vec::new();
        for (dir, w) in &mut self.cgroups {
            match membership::cpu_stat_text(dir)
                .as_deref()
                .and_then(parse_cpu_stat)
            {
                Some(stat) => {
                    if let Some(ep) = observe(w, &dir.display().to_string(), stat, now_ns) {
                        self.finished.push(ep);
                    }
                }
                None => gone.push(dir.clone()),
            }
        }
        for dir in gone {
            if let Some(ep) = self.cgroups.remove(&dir).and_then(|w| w.open) {
                self.finished.push(ep);
            }
        }
    }

    /// Episodes that ended since the last call, plus the ones still open (as they stand).
    pub(crate) fn take_episodes(&mut self) -> Vec<ThrottleEpisode> {
        let mut out = std::mem::take(&mut self.finished);
        out.extend(self.cgroups.values().filter_map(|w| w.open.clone()));
        out
    }

    /// The latest counters of a watched cgroup.
    pub(crate) fn stat(&self, dir: &Path) -> Option<CpuStat> {
        self.cgroups.get(dir).and_then(|w| w.last)
    }
}

/// Feeds one poll; returns an episode that just ended.
fn observe(w: &mut Watched, cgroup: &str, stat: CpuStat, now_ns: u64) -> Option<ThrottleEpisode> {
    let previous = w.last.replace(stat);
    let prev_poll_ns = std::mem::replace(&mut w.last_poll_ns, now_ns);
    let prev = previous?;
    let periods = stat.nr_throttled.saturating_sub(prev.nr_throttled);
    let throttled_ns = stat.throttled_ns.saturating_sub(prev.throttled_ns);
    if periods == 0 && throttled_ns == 0 {
        return w.open.take();
    }
    let ep = w.open.get_or_insert_with(|| ThrottleEpisode {
        cgroup: cgroup.to_string(),
        start_ns: prev_poll_ns,
        end_ns: now_ns,
        periods: 0,
        throttled_ns: 0,
    });
    ep.end_ns = now_ns;
    ep.periods += periods;
    ep.throttled_ns += throttled_ns;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1_and_v2() {
        let v1 = "nr_periods 50\nnr_throttled 40\nthrottled_time 3200000000\nnr_bursts 0\nburst_time 0\n";
        assert_eq!(
            parse_cpu_stat(v1),
            Some(CpuStat {
                nr_periods: 50,
                nr_throttled: 40,
                throttled_ns: 3_200_000_000
            })
        );
        let v2 = "usage_usec 1000\nuser_usec 900\nsystem_usec 100\nnr_periods 10\nnr_throttled 3\nthrottled_usec 2500\nnr_bursts 0\nburst_usec 0\n";
        assert_eq!(
            parse_cpu_stat(v2),
            Some(CpuStat {
                nr_periods: 10,
                nr_throttled: 3,
                throttled_ns: 2_500_000
            })
        );
        // The v2 root has only usage fields.
        assert_eq!(
            parse_cpu_stat("usage_usec 5\nuser_usec 3\nsystem_usec 2\n"),
            None
        );
        assert_eq!(parse_cpu_stat("garbage"), None);
    }

    fn watched() -> Watched {
        Watched {
            last: None,
            last_poll_ns: 0,
            open: None,
        }
    }

    fn stat(nr_throttled: u64, throttled_ns: u64) -> CpuStat {
        CpuStat {
            nr_periods: 0,
            nr_throttled,
            throttled_ns,
        }
    }

    #[test]
    fn consecutive_throttled_polls_make_one_episode() {
        let mut w = watched();
        assert_eq!(observe(&mut w, "/q", stat(0, 0), 100), None);
        assert_eq!(observe(&mut w, "/q", stat(1, 80), 200), None);
        assert_eq!(observe(&mut w, "/q", stat(3, 240), 300), None);
        let ep = observe(&mut w, "/q", stat(3, 240), 400).unwrap();
        assert_eq!(
            ep,
            ThrottleEpisode {
                cgroup: "/q".into(),
                start_ns: 100,
                end_ns: 300,
                periods: 3,
                throttled_ns: 240
            }
        );
        assert_eq!(observe(&mut w, "/q", stat(3, 240), 500), None);
    }

    #[test]
    fn counter_resets_do_not_invent_throttling() {
        let mut w = watched();
        observe(&mut w, "/q", stat(10, 1000), 100);
        assert_eq!(observe(&mut w, "/q", stat(0, 0), 200), None);
        assert!(w.open.is_none());
    }
}
