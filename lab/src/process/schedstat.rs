//! The kernel's own account of where a process's threads spent their time
//! (`/proc/<pid>/task/<tid>/schedstat`: on CPU, waiting in a run queue): the truth the tests
//! score the agent's scheduler figures against, under emulation as here.

use std::{fs, ops::Sub};

use anyhow::Context as _;

/// Sums over a process's threads, since each thread started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedStat {
    pub on_cpu_ns: u64,
    /// Time runnable but waiting for a CPU (`run_delay`).
    pub run_delay_ns: u64,
}

impl SchedStat {
    /// Every thread of `pid` now (threads that have exited take their time with them).
    pub fn of_process(pid: u32) -> anyhow::Result<Self> {
        let tasks = format!("/proc/{pid}/task");
        let mut sum = Self::default();
        for entry in fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
            let path = entry?.path().join("schedstat");
            // A thread that exits between the listing and the read is simply not counted.
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            let one = parse(&text).with_context(|| format!("{}: {text:?}", path.display()))?;
            sum.on_cpu_ns += one.on_cpu_ns;
            sum.run_delay_ns += one.run_delay_ns;
        }
        Ok(sum)
    }
}

impl Sub for SchedStat {
    type Output = Self;

    /// What happened between two readings.
    fn sub(self, earlier: Self) -> Self {
        Self {
            on_cpu_ns: self.on_cpu_ns.saturating_sub(earlier.on_cpu_ns),
            run_delay_ns: self.run_delay_ns.saturating_sub(earlier.run_delay_ns),
        }
    }
}

/// `<on cpu ns> <run delay ns> <timeslices>`.
fn parse(text: &str) -> Option<SchedStat> {
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    let on_cpu_ns = fields.next()?.ok()?;
    let run_delay_ns = fields.next()?.ok()?;
    Some(SchedStat {
        on_cpu_ns,
        run_delay_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedstat_line_gives_on_cpu_and_run_delay() {
        assert_eq!(
            parse("8114 137718 1\n"),
            Some(SchedStat {
                on_cpu_ns: 8114,
                run_delay_ns: 137718
            })
        );
        assert_eq!(parse("12"), None);
        assert_eq!(parse("a 1 2"), None);
    }

    #[test]
    fn this_process_has_run() {
        let now = SchedStat::of_process(std::process::id()).unwrap();
        assert!(now.on_cpu_ns > 0, "{now:?}");
    }

    #[test]
    fn a_difference_never_goes_below_zero() {
        let a = SchedStat {
            on_cpu_ns: 5,
            run_delay_ns: 1,
        };
        let b = SchedStat {
            on_cpu_ns: 3,
            run_delay_ns: 4,
        };
        assert_eq!(
            a - b,
            SchedStat {
                on_cpu_ns: 2,
                run_delay_ns: 0
            }
        );
    }
}
