//! Helpers for the privileged end-to-end tests in `tests/`. The tests drive the real `culprit`
//! binary, load its probes into the running kernel and inject real causes (see `culprit-lab`).
//! Run them through `cargo xtask test`, which builds the binaries first and runs them one at a
//! time (they share CPUs and the kernel).

/// Fails with an actionable message unless the tests can load eBPF programs.
pub fn require_root() -> anyhow::Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("the end-to-end tests load eBPF programs and create cgroups: run as root");
    }
    Ok(())
}
