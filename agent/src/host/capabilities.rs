//! The Linux capabilities the agent uses, checked at start: a missing one that the agent cannot
//! run without stops it with a message naming it; one that only a part needs degrades that part,
//! with a warning naming it. (deploy/README.md has the same table for the DaemonSet.)

use std::fs;

/// Capability numbers (linux/capability.h).
pub(crate) const CAP_SYS_PTRACE: u32 = 19;
pub(crate) const CAP_SYS_ADMIN: u32 = 21;
pub(crate) const CAP_PERFMON: u32 = 38;
pub(crate) const CAP_BPF: u32 = 39;

/// One capability the agent uses and what for.
pub(crate) struct Need {
    pub cap: u32,
    pub name: &'static str,
    /// Without it the agent cannot run at all.
    pub required: bool,
    pub why: &'static str,
}

pub(crate) const NEEDS: [Need; 3] = [
    Need {
        cap: CAP_BPF,
        name: "CAP_BPF",
        required: true,
        why: "load the eBPF programs and create their maps",
    },
    Need {
        cap: CAP_PERFMON,
        name: "CAP_PERFMON",
        required: true,
        why: "attach to tracepoints and read kernel memory from the programs",
    },
    Need {
        cap: CAP_SYS_PTRACE,
        name: "CAP_SYS_PTRACE",
        required: false,
        why: "read other users' /proc/<pid>/fd to find the owner of a retransmitting socket \
              and the sender of a span by its TCP peer; without it those owners stay unknown \
              for processes of other users",
    },
];

/// The effective set from the `CapEff:` line of /proc/<pid>/status.
pub(crate) fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

pub(crate) fn has(effective: u64, cap: u32) -> bool {
    effective & (1u64 << cap) != 0
}

/// What the agent can and cannot do with `effective`: the error for a missing required
/// capability, else the warnings for the optional ones. CAP_SYS_ADMIN stands in for BPF and
/// PERFMON (kernels before 5.8 know only it).
pub(crate) fn check(effective: u64) -> Result<Vec<String>, String> {
    let admin = has(effective, CAP_SYS_ADMIN);
    let mut warnings = Vec::new();
    for need in &NEEDS {
        if has(effective, need.cap) || (admin && need.cap != CAP_SYS_PTRACE) {
            continue;
        }
        if need.required {
            return Err(format!(
                "missing capability {}: the agent needs it to {} (run as root, or grant \
                 {} as the DaemonSet in deploy/kubernetes does)",
                need.name,
                need.why,
                NEEDS
                    .iter()
                    .filter(|n| n.required)
                    .map(|n| n.name)
                    .collect::<Vec<_>>()
                    .join(" and ")
            ));
        }
        warnings.push(format!(
            "missing capability {}: degraded, the agent cannot {}",
            need.name, need.why
        ));
    }
    Ok(warnings)
}

/// Checks this process's capabilities; unreadable status means no check (and no claim).
pub(crate) fn check_self() -> Result<Vec<String>, String> {
    match fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(parse_cap_eff)
    {
        Some(eff) => check(eff),
        None => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[u32]) -> u64 {
        list.iter().fold(0, |acc, c| acc | (1u64 << c))
    }

    #[test]
    fn the_effective_set_is_read_from_status() {
        let status = "Name:\tculprit\nCapInh:\t0000000000000000\nCapPrm:\t000000c000080000\n\
                      CapEff:\t000000c000080000\nCapBnd:\t000000c000080000\n";
        let eff = parse_cap_eff(status).unwrap();
        assert_eq!(eff, caps(&[CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE]));
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }

    #[test]
    fn the_daemonset_set_runs_clean_and_root_too() {
        assert_eq!(
            check(caps(&[CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE])),
            Ok(vec![])
        );
        assert_eq!(check(u64::MAX >> 23), Ok(vec![]));
        // Old kernels: CAP_SYS_ADMIN covers BPF and PERFMON.
        assert_eq!(check(caps(&[CAP_SYS_ADMIN, CAP_SYS_PTRACE])), Ok(vec![]));
    }

    #[test]
    fn each_missing_capability_is_named() {
        let err = check(caps(&[CAP_PERFMON, CAP_SYS_PTRACE])).unwrap_err();
        assert!(err.contains("missing capability CAP_BPF"), "{err}");
        let err = check(caps(&[CAP_BPF, CAP_SYS_PTRACE])).unwrap_err();
        assert!(err.contains("missing capability CAP_PERFMON"), "{err}");
        let warnings = check(caps(&[CAP_BPF, CAP_PERFMON])).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("CAP_SYS_PTRACE"), "{warnings:?}");
        assert!(check(0).is_err());
    }
}
