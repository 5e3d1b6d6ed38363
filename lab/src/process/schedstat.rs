//! The kernel's own account of where a process's threads spent their time
//! (`/proc/<pid>/task/<tid>/schedstat`: on CPU, waiting in a run queue): the truth the tests
//! score the agent's scheduler figures against, under emulation as here.

use std::{
    fs,
    ops::Sub,
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// Sums over a process's threads, since each thread started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedStat {
    pub on_cpu_ns: u64,
    /// Time runnable but waiting for a CPU (`run_delay`).
    pub run_delay_ns: u64,
    /// Threads read.
    pub threads: usize,
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
            sum.threads += 1;
        }
        Ok(sum)
    }
}

/// Waits until `pid` has `threads` threads, then until they have run `ran_ns` more: a workload
/// just spawned (a hog) is only there once its threads spin, which under emulation is a good
/// while after its start (its own start-up, exec and page faults, costs CPU time too).
pub fn wait_until_running(
    pid: u32,
    threads: usize,
    ran_ns: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut started: Option<u64> = None;
    loop {
        let now = SchedStat::of_process(pid)?;
        match started {
            None if now.threads >= threads => started = Some(now.on_cpu_ns),
            Some(base) if now.on_cpu_ns >= base + ran_ns => return Ok(()),
            _ => {}
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "process {pid} not running in {timeout:?}: {now:?}, {threads} threads wanted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Sub for SchedStat {
    type Output = Self;

    /// What happened between two readings.
    fn sub(self, earlier: Self) -> Self {
        Self {
            on_cpu_ns: self.on_cpu_ns.saturating_sub(earlier.on_cpu_ns),
            run_delay_ns: self.run_delay_ns.saturating_sub(earlier.run_delay_ns),
            threads: self.threads,
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
        threads: 1,
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
                run_delay_ns: 137718,
                threads: 1,
            })
        );
        assert_eq!(parse("12"), None);
        assert_eq!(parse("a 1 2"), None);
    }

    #[test]
    fn this_process_has_run() {
        let now = SchedStat::of_process(std::process::id()).unwrap();
        assert!(now.on_cpu_ns > 0 && now.threads >= 1, "{now:?}");
    }

    #[test]
    fn waiting_for_threads_to_run_ends_when_they_have_or_at_the_deadline() {
        let me = std::process::id();
        let spinner = std::thread::spawn(|| {
            let end = Instant::now() + Duration::from_millis(300);
            while Instant::now() < end {}
        });
        wait_until_running(me, 2, 20_000_000, Duration::from_secs(5)).unwrap();
        spinner.join().unwrap();
        let err = wait_until_running(me, 1, u64::MAX / 2, Duration::from_millis(30)).unwrap_err();
        assert!(err.to_string().contains("not running"), "{err}");
    }

    #[test]
    fn a_difference_never_goes_below_zero() {
        let a = SchedStat {
            on_cpu_ns: 5,
            run_delay_ns: 1,
            threads: 2,
        };
        let b = SchedStat {
            on_cpu_ns: 3,
            run_delay_ns: 4,
            threads: 1,
        };
        assert_eq!(
            a - b,
            SchedStat {
                on_cpu_ns: 2,
                run_delay_ns: 0,
                threads: 2,
            }
        );
    }
}
