//! Kernel-side cost per hook invocation, from the kernel's own accounting (`bpf_stats`:
//! `run_time_ns / run_cnt` per program), under a context-switch storm: the agent's programs
//! next to the classic bpftrace run-queue logic (runqlat's wakeup -> switch), measured the same
//! way on the same storm, one after the other.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::{
    programs::loaded_programs,
    sys::{Stats, enable_stats},
};

use crate::{
    faults::cgroup::TempCgroup,
    process::{
        binaries::bin_path,
        reaped::{Reaped, spawn_workload},
    },
};

/// runqlat's logic, without the kernel-header include the packaged script needs.
const BPFTRACE_RUNQLAT: &str = r#"
tracepoint:sched:sched_wakeup, tracepoint:sched:sched_wakeup_new { @qtime[args->pid] = nsecs; }
tracepoint:sched:sched_switch {
  if (args->prev_state == 0) { @qtime[args->prev_pid] = nsecs; }
  $ns = @qtime[args->next_pid];
  if ($ns) { @usecs = hist((nsecs - $ns) / 1000); }
  delete(@qtime[args->next_pid]);
}
"#;

/// Cost of one program over the storm.
#[derive(Debug, Clone)]
struct HookCost {
    tool: &'static str,
    program: String,
    run_cnt: u64,
    run_time_ns: u64,
}

impl HookCost {
    fn ns_per_run(&self) -> f64 {
        if self.run_cnt == 0 {
            0.0
        } else {
            self.run_time_ns as f64 / self.run_cnt as f64
        }
    }
}

/// The context-switch storm of a run: ping-pong pairs (every hop a switch, intervals of a few
/// µs), or a thread waking every 200 µs for 50 µs of work (intervals past the episode
/// threshold, each one streamed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Storm {
    Pingpong,
    Wakeups,
    /// `wakeups` publishing an OpenTelemetry thread context: its switches read it.
    WakeupsWithContext,
    /// 2 pairs of threads exchanging 64-byte requests over loopback TCP: every segment runs
    /// the per-segment hooks (`tcp_probe`, which dates a request's bytes for the queue wait).
    Tcp,
}

impl Storm {
    fn describe(self) -> &'static str {
        match self {
            Self::Pingpong => "2 ping-pong pairs",
            Self::Wakeups => "a thread waking every 200 µs for 50 µs of work",
            Self::WakeupsWithContext => {
                "a thread waking every 200 µs for 50 µs of work, publishing its thread context"
            }
            Self::Tcp => "2 pairs exchanging 64-byte requests over loopback TCP",
        }
    }

    fn workload(self) -> &'static [&'static str] {
        match self {
            Self::Pingpong => &["pingpong", "--pairs", "2"],
            Self::Wakeups => &["wakeups", "--period-us", "200", "--work-us", "50"],
            Self::WakeupsWithContext => &[
                "wakeups",
                "--period-us",
                "200",
                "--work-us",
                "50",
                "--thread-context",
            ],
            Self::Tcp => &["tcp-pingpong", "--pairs", "2"],
        }
    }
}

/// The floor: empty programs on the scheduler's hooks and on `tcp_probe` (a plain tracepoint,
/// where the agent's is `tp_btf`: an upper bound of the dispatch for that hook).
const EMPTY_PROGRAMS: &str = "tracepoint:sched:sched_switch, tracepoint:sched:sched_wakeup, \
    tracepoint:sched:sched_wakeup_new, tracepoint:tcp:tcp_probe { $x = 1; }";

pub fn run(
    storm_seconds: f64,
    markdown: Option<&Path>,
    episode_threshold_ms: Option<f64>,
    storm: Storm,
) -> anyhow::Result<()> {
    // Held open for the whole run: the kernel counts run time only while someone asks.
    let _stats = enable_stats(Stats::RunTime).context("enabling bpf_stats (needs root)")?;
    let cgroup = TempCgroup::new_v2("culprit-bench")?;

    let agent_costs = measure("culprit", storm_seconds, storm, &cgroup, |storm_pid| {
        let mut cmd = Command::new(bin_path("culprit")?);
        cmd.args([
            "agent",
            "--output",
            "json",
            "--interval",
            "5",
            "--watch-pid",
        ])
        .arg(storm_pid.to_string())
        .stdout(Stdio::null());
        if let Some(ms) = episode_threshold_ms {
            cmd.arg("--episode-threshold-ms").arg(ms.to_string());
        }
        Reaped::spawn("culprit agent", &mut cmd)
    })?;
    // The common case on a node: threads that send no spans, so only node-wide work.
    let unwatched_costs = measure(
        "culprit, storm not watched",
        storm_seconds,
        storm,
        &cgroup,
        |_| {
            let mut cmd = Command::new(bin_path("culprit")?);
            cmd.args(["agent", "--output", "json", "--interval", "5"])
                .stdout(Stdio::null());
            Reaped::spawn("culprit agent", &mut cmd)
        },
    )?;
    let bpftrace_costs = measure("bpftrace runqlat", storm_seconds, storm, &cgroup, |_| {
        let mut cmd = Command::new("bpftrace");
        cmd.arg("-e").arg(BPFTRACE_RUNQLAT).stdout(Stdio::null());
        Reaped::spawn("bpftrace", &mut cmd)
    })?;

    // The floor: a program that does nothing, as cheap as any hook can be on this machine
    // (tracepoint dispatch plus the run-time accounting itself).
    let floor_costs = measure("empty program", storm_seconds, storm, &cgroup, |_| {
        let mut cmd = Command::new("bpftrace");
        cmd.arg("-e").arg(EMPTY_PROGRAMS).stdout(Stdio::null());
        Reaped::spawn("bpftrace", &mut cmd)
    })?;

    let text = render(
        &agent_costs,
        &unwatched_costs,
        &bpftrace_costs,
        &floor_costs,
        storm_seconds,
        storm,
    );
    print!("{text}");
    if let Some(path) = markdown {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Starts the tool, waits for its programs to load, runs the storm, and returns the run-time
/// deltas of the programs the tool loaded.
fn measure(
    tool: &'static str,
    storm_seconds: f64,
    storm: Storm,
    cgroup: &TempCgroup,
    start_tool: impl FnOnce(u32) -> anyhow::Result<Reaped>,
) -> anyhow::Result<Vec<HookCost>> {
    let before: BTreeSet<u32> = program_stats()?.keys().copied().collect();
    let storm_cg = cgroup.child(&format!("storm-{}", tool.replace(' ', "-")))?;
    // Both threads of each pair on one CPU: every hop is a context switch.
    let storm = spawn_workload(&storm_cg, Some(1), storm_seconds + 30.0, storm.workload())?;
    let tool_process = start_tool(storm.pid())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let ours = loop {
        let now = program_stats()?;
        let new: Vec<u32> = now
            .keys()
            .filter(|id| !before.contains(id))
            .copied()
            .collect();
        if new.len() >= 3 {
            // Let the rest of the tool's programs attach.
            thread::sleep(Duration::from_secs(2));
            break program_stats()?
                .into_iter()
                .filter(|(id, _)| !before.contains(id))
                .collect::<BTreeMap<_, _>>();
        }
        if Instant::now() > deadline {
            bail!("{tool} loaded no programs within 30 s");
        }
        thread::sleep(Duration::from_millis(200));
    };
    thread::sleep(Duration::from_secs_f64(storm_seconds));
    let after = program_stats()?;
    drop(tool_process);
    drop(storm);
    Ok(ours
        .into_iter()
        .filter_map(|(id, (name, cnt0, ns0))| {
            let (_, cnt1, ns1) = after.get(&id)?;
            Some(HookCost {
                tool,
                program: name,
                run_cnt: cnt1 - cnt0,
                run_time_ns: ns1 - ns0,
            })
        })
        .filter(|c| c.run_cnt > 0)
        .collect())
}

/// id -> (name, run count, run time ns) of every loaded program.
fn program_stats() -> anyhow::Result<BTreeMap<u32, (String, u64, u64)>> {
    loaded_programs()
        .map(|p| {
            let p = p?;
            Ok((
                p.id(),
                (
                    p.name_as_str().unwrap_or("?").to_string(),
                    p.run_count(),
                    p.run_time().as_nanos() as u64,
                ),
            ))
        })
        .collect()
}

fn render(
    agent: &[HookCost],
    unwatched: &[HookCost],
    bpftrace: &[HookCost],
    floor: &[HookCost],
    storm_seconds: f64,
    storm: Storm,
) -> String {
    let mut s = String::new();
    let switches = agent
        .iter()
        .find(|c| c.program == "sched_switch")
        .map_or(0, |c| c.run_cnt);
    let _ = writeln!(
        s,
        "Context-switch storm: {} on CPU 1, {storm_seconds:.0} s per tool \
         (~{:.0} switches/s node-wide during the agent's run).\n",
        storm.describe(),
        switches as f64 / storm_seconds
    );
    let _ = writeln!(s, "| tool | program | invocations | ns per invocation |");
    let _ = writeln!(s, "|---|---|---:|---:|");
    for c in agent.iter().chain(unwatched).chain(bpftrace).chain(floor) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} |",
            c.tool,
            c.program,
            c.run_cnt,
            c.ns_per_run()
        );
    }
    let switch_cost = |costs: &[HookCost], names: &[&str]| -> f64 {
        costs
            .iter()
            .filter(|c| names.iter().any(|n| c.program.contains(n)))
            .map(HookCost::ns_per_run)
            .sum()
    };
    let ours = switch_cost(agent, &["sched_switch"]);
    let theirs = switch_cost(bpftrace, &["sched_switch"]);
    let empty = switch_cost(floor, &["sched_switch"]);
    let ours_unwatched = switch_cost(unwatched, &["sched_switch"]);
    let _ = writeln!(
        s,
        "\nPer sched_switch (all of a tool's programs on that hook): culprit {ours:.0} ns, \
         bpftrace runqlat {theirs:.0} ns, ratio {:.2}; an empty program costs {empty:.0} ns \
         here, so above that floor: culprit {:.0} ns ({} programs), bpftrace {:.0} ns.",
        if theirs > 0.0 { ours / theirs } else { 0.0 },
        ours - empty
            * agent
                .iter()
                .filter(|c| c.program.contains("sched_switch"))
                .count() as f64,
        agent
            .iter()
            .filter(|c| c.program.contains("sched_switch"))
            .count(),
        theirs - empty,
    );
    let _ = writeln!(
        s,
        "With the storm not watched (threads that send no spans, most of a node's): culprit \
         {ours_unwatched:.0} ns per sched_switch, ratio {:.2} to bpftrace runqlat.",
        if theirs > 0.0 {
            ours_unwatched / theirs
        } else {
            0.0
        },
    );
    let per_segment = switch_cost(agent, &["tcp_probe"]);
    if per_segment > 0.0 {
        let _ = writeln!(
            s,
            "Per TCP segment received (`tcp_probe`): culprit {per_segment:.0} ns with the storm \
             watched, {:.0} ns not watched; an empty program on the plain tracepoint costs \
             {:.0} ns here.",
            switch_cost(unwatched, &["tcp_probe"]),
            switch_cost(floor, &["tcp_probe"]),
        );
    }
    s
}
