//! Where the workspace's binaries are: next to the running executable (cargo puts test
//! executables one level below, in `deps/`), unless `CULPRIT_BIN_DIR` says otherwise.

use std::path::PathBuf;

use anyhow::{Context as _, bail};

fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CULPRIT_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("locating the running executable")?;
    let mut dir = exe
        .parent()
        .context("the running executable has no parent directory")?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// Path of a workspace binary, which must have been built.
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.exists() {
        bail!(
            "{} is not built; run `cargo xtask build` (or set CULPRIT_BIN_DIR)",
            path.display()
        );
    }
    Ok(path)
}
