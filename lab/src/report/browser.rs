//! The check a user makes of the HTML report: open it in headless Chromium, take a screenshot,
//! and look at what the page logged and what its DOM holds.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// What Chromium made of a page.
#[derive(Debug)]
pub struct PageLoad {
    /// Lines Chromium logged from the page's console (script errors, failed resource loads,
    /// any `console.*` call).
    pub console: Vec<String>,
    /// The DOM after load, serialized.
    pub dom: String,
    pub screenshot: PathBuf,
}

fn chromium() -> anyhow::Result<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(path) = which(name) {
            return Ok(path);
        }
    }
    bail!("no Chromium found: run `cargo xtask setup` (it installs Debian's `chromium`)")
}

fn which(name: &str) -> anyhow::Result<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} is not on PATH"))
}

/// Loads `page` in headless Chromium at `width`x`height`, writing a PNG screenshot next to it.
pub fn load(page: &Path, width: u32, height: u32) -> anyhow::Result<PageLoad> {
    let page = page
        .canonicalize()
        .with_context(|| format!("{} does not exist", page.display()))?;
    let url = format!("file://{}", page.display());
    let screenshot = page.with_extension("png");
    let _ = std::fs::remove_file(&screenshot);
    let base = |cmd: &mut Command| {
        cmd.args([
            "--headless",
            // Root in a container has no user namespace for the sandbox.
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--window-size={width},{height}"))
        .env("HOME", std::env::temp_dir());
    };
    let browser = chromium()?;
    let mut shot = Command::new(&browser);
    base(&mut shot);
    shot.arg(format!("--screenshot={}", screenshot.display()))
        .arg(&url);
    let out = shot.output().context("running chromium")?;
    if !out.status.success() || !screenshot.exists() {
        bail!(
            "chromium could not screenshot {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    let mut dump = Command::new(&browser);
    base(&mut dump);
    let out = dump
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .context("running chromium")?;
    if !out.status.success() {
        bail!(
            "chromium could not load {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(PageLoad {
        console,
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        screenshot,
    })
}
