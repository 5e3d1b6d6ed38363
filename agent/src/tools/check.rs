//! `culprit check`: the preflight an SRE runs on a node before deploying. It reads what the
//! node offers (kernel, BTF, tracefs, cgroup layout, capabilities), then loads and attaches every
//! probe exactly as the agent would and detaches them at once (nothing stays attached, nothing is
//! pinned): the signal matrix `cargo xtask vm-test` prints per kernel, for this node. Exit 0 when
//! every signal works, 2 when some run degraded (the agent still serves), 1 when it cannot run.

use std::{fmt::Write as _, fs, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    cli::AgentOpts,
    host::{
        capabilities,
        cgroup_layout::{CgroupLayout, cgroup_layout},
        procfs,
    },
    kernel::probes::{self, HookHealth, ProbeOptions, SignalHealth},
    tools::status::EXIT_DEGRADED,
};

/// What `culprit check` found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Preflight {
    pub(crate) kernel: String,
    pub(crate) btf: PathBuf,
    pub(crate) btf_present: bool,
    pub(crate) tracefs: PathBuf,
    pub(crate) tracefs_mounted: bool,
    pub(crate) cgroups: CgroupLayout,
    /// Whether cgroup v2's root delegates the `cpu` controller (throttling's `cpu.stat` fields on
    /// pure v2 need it); `None` without a cgroup2 mount.
    pub(crate) v2_cpu_controller: Option<bool>,
    /// The missing capability that stops the agent, if one does.
    pub(crate) capability_error: Option<String>,
    pub(crate) capability_warnings: Vec<String>,
    /// Why the probes could not be loaded at all, if they could not.
    pub(crate) load_error: Option<String>,
    pub(crate) hooks: Vec<HookHealth>,
    pub(crate) signals: Vec<SignalHealth>,
}

impl Preflight {
    /// The agent would start and serve.
    pub(crate) fn can_run(&self) -> bool {
        self.load_error.is_none() && self.capability_error.is_none()
    }

    /// Every signal works in full.
    pub(crate) fn all_signals_ok(&self) -> bool {
        self.can_run() && self.signals.iter().all(|s| s.ok)
    }
}

/// Runs the checks with the agent's own options (its `--btf`, `--tracefs`, probe settings).
pub(crate) fn preflight(opts: &AgentOpts) -> Preflight {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let cgroups = cgroup_layout(&mountinfo);
    let v2_cpu_controller = cgroups.v2_root.as_ref().map(|root| {
        fs::read_to_string(root.join("cgroup.subtree_control"))
            .is_ok_and(|s| s.split_whitespace().any(|c| c == "cpu"))
    });
    let (capability_error, capability_warnings) = match capabilities::check_self() {
        Ok(warnings) => (None, warnings),
        Err(err) => (Some(err), Vec::new()),
    };
    let loaded = crate::daemon::probe_config(opts).and_then(|config| {
        probes::load(&ProbeOptions {
            btf: opts.btf.clone(),
            tracefs: opts.tracefs.clone(),
            config,
            context_sample_hz: opts.context_sample_hz,
        })
    });
    // Dropping the loaded object detaches every program: the node is left as it was.
    let (load_error, hooks, signals) = match loaded {
        Ok(p) => (None, p.hooks, p.signals),
        Err(err) => (Some(format!("{err:#}")), Vec::new(), Vec::new()),
    };
    Preflight {
        kernel: procfs::kernel_release().unwrap_or_default(),
        btf_present: opts.btf.exists(),
        btf: opts.btf.clone(),
        tracefs_mounted: opts.tracefs.join("events").is_dir(),
        tracefs: opts.tracefs.clone(),
        cgroups,
        v2_cpu_controller,
        capability_error,
        capability_warnings,
        load_error,
        hooks,
        signals,
    }
}

pub(crate) fn run(opts: &AgentOpts, json: bool) -> anyhow::Result<std::process::ExitCode> {
    let found = preflight(opts);
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        print!("{}", render(&found));
    }
    Ok(if !found.can_run() {
        std::process::ExitCode::FAILURE
    } else if !found.all_signals_ok() {
        std::process::ExitCode::from(EXIT_DEGRADED)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

fn yes_no(ok: bool, yes: &str, no: &str) -> String {
    if ok { yes.to_string() } else { no.to_string() }
}

fn render(p: &Preflight) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "kernel       {}", p.kernel);
    let _ = writeln!(
        out,
        "BTF          {} {}",
        p.btf.display(),
        yes_no(p.btf_present, "present", "MISSING (CONFIG_DEBUG_INFO_BTF)")
    );
    let _ = writeln!(
        out,
        "tracefs      {} {}",
        p.tracefs.display(),
        yes_no(
            p.tracefs_mounted,
            "mounted",
            "NOT MOUNTED (mount -t tracefs nodev /sys/kernel/tracing)"
        )
    );
    let cpu = match (&p.cgroups.v1_cpu_root, p.v2_cpu_controller) {
        (Some(v1), _) => format!("cpu controller on v1 at {}", v1.display()),
        (None, Some(true)) => "cpu controller on v2".to_string(),
        (None, Some(false)) => {
            "cpu controller not enabled in the v2 root (no per-cgroup throttling counts)"
                .to_string()
        }
        (None, None) => "no cpu controller found".to_string(),
    };
    let _ = writeln!(
        out,
        "cgroups      {:?}, v2 at {}; {cpu}",
        p.cgroups.mode,
        p.cgroups
            .v2_root
            .as_ref()
            .map_or("(none)".to_string(), |r| r.display().to_string())
    );
    match &p.capability_error {
        Some(err) => {
            let _ = writeln!(out, "capabilities {err}");
        }
        None if p.capability_warnings.is_empty() => {
            let _ = writeln!(out, "capabilities all the agent uses");
        }
        None => {
            for w in &p.capability_warnings {
                let _ = writeln!(out, "capabilities {w}");
            }
        }
    }
    if let Some(err) = &p.load_error {
        let _ = writeln!(out, "\nthe probes could not be loaded: {err}");
        return out;
    }
    let _ = writeln!(out, "\nsignals");
    for s in &p.signals {
        let state = if s.ok { "ok" } else { "degraded" };
        let _ = writeln!(
            out,
            "  {:<18} {state}{}",
            format!("{:?}", s.signal),
            s.reason
                .as_ref()
                .map_or(String::new(), |r| format!(": {r}"))
        );
    }
    let _ = writeln!(out, "hooks (loaded, attached and detached again)");
    for h in &p.hooks {
        let _ = writeln!(
            out,
            "  {:<24} {}",
            h.program,
            match (&h.attached, &h.error) {
                (true, _) => "attached".to_string(),
                (false, Some(e)) => e.clone(),
                (false, None) => "not attached".to_string(),
            }
        );
    }
    out
}
