//! `cargo xtask check-structure`: no cycle between the modules of the library crates, no source
//! file past the size a reader can hold in mind. `cargo xtask check-deps`: no dependency that
//! nothing uses.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use crate::{
    cycles::{self, Graph, ModPath},
    modgraph, setup,
    shell::{all_ok, cargo, root, run as run_cmd, step},
};

/// The library crates whose modules must not depend on each other in a cycle.
const ACYCLIC_CRATES: &[(&str, &str)] = &[
    ("culprit", "agent/src/lib.rs"),
    ("culprit-lab", "lab/src/lib.rs"),
    ("culprit-common", "agent-common/src/lib.rs"),
];
/// Where the line limit applies.
const SOURCE_DIRS: &[&str] = &[
    "agent",
    "agent-common",
    "agent-ebpf",
    "fuzz",
    "lab",
    "tests",
    "xtask",
];
const MAX_LINES: usize = 500;
/// References printed per edge of a cycle; the rest are counted.
const EVIDENCE_SHOWN: usize = 3;

pub fn check_structure() -> anyhow::Result<()> {
    let cycles = step(
        "no cycle between modules (culprit, culprit-lab, culprit-common)",
        "move what both sides of a cycle need into a module below both, or invert one dependency",
        module_cycles,
    );
    let lines = step(
        &format!("no .rs file over {MAX_LINES} lines"),
        "split the files listed above along their responsibilities",
        line_limit,
    );
    all_ok(vec![cycles, lines])
}

pub fn check_deps() -> anyhow::Result<()> {
    setup::ensure_cargo_machete_step()?;
    let members = step(
        "no unused dependency in the members (cargo machete)",
        "remove the dependencies cargo machete listed, or list a false positive under \
         [package.metadata.cargo-machete] ignored in that member's Cargo.toml",
        || {
            run_cmd(
                cargo()
                    .args(["machete", "--skip-target-dir"])
                    // cargo-machete takes CARGO_PKG_NAME (inherited from `cargo xtask`) as the
                    // sign of a `cargo run`, and would then read `machete` as a path to scan.
                    .env_remove("CARGO_PKG_NAME"),
            )
        },
    );
    let workspace = step(
        "every [workspace.dependencies] entry is inherited by a member",
        "remove the entries listed above from the root Cargo.toml",
        workspace_deps,
    );
    all_ok(vec![members, workspace])
}

fn module_cycles() -> anyhow::Result<()> {
    let root = root();
    let read = |p: &Path| {
        fs::read_to_string(root.join(p)).with_context(|| format!("reading {}", p.display()))
    };
    let mut cyclic = Vec::new();
    for (name, lib) in ACYCLIC_CRATES {
        let krate = modgraph::load(Path::new(lib), &read)?;
        let graph = krate.graph();
        let found = graph.cycles();
        println!(
            "    {name} ({lib}): {} modules, {}",
            krate.module_count(),
            match found.len() {
                0 => "no cycle".to_string(),
                1 => "1 cycle".to_string(),
                n => format!("{n} cycles"),
            }
        );
        for cycle in &found {
            print!("{}", describe(&graph, cycle));
        }
        if !found.is_empty() {
            cyclic.push(*name);
        }
    }
    if !cyclic.is_empty() {
        bail!(
            "modules depend on each other in a cycle in {}",
            cyclic.join(", ")
        );
    }
    Ok(())
}

/// The cycle in order, then every edge between the modules of its group with the references that
/// make it: those are what to cut.
fn describe(graph: &Graph, cycle: &cycles::Cycle) -> String {
    let show = |p: &ModPath| cycles::display(p);
    let mut out = String::new();
    for path in &cycle.paths {
        let mut order: Vec<String> = path.iter().map(show).collect();
        order.push(show(&path[0]));
        out += &format!("      cycle: {}\n", order.join(" -> "));
    }
    let members: Vec<String> = cycle.members.iter().map(show).collect();
    out += &format!(
        "      the modules in these cycles: {}\n",
        members.join(", ")
    );
    for from in &cycle.members {
        for (to, evidence) in &graph.edges[from] {
            if !cycle.members.contains(to) {
                continue;
            }
            out += &format!("      {} -> {}:\n", show(from), show(to));
            for e in evidence.iter().take(EVIDENCE_SHOWN) {
                out += &format!(
                    "          {} ({}) names {}\n",
                    e.file,
                    show(&e.from),
                    e.item
                );
            }
            if evidence.len() > EVIDENCE_SHOWN {
                out += &format!("          … and {} more\n", evidence.len() - EVIDENCE_SHOWN);
            }
        }
    }
    out
}

fn line_limit() -> anyhow::Result<()> {
    let root = root();
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        rust_files(&root.join(dir), &mut files)?;
    }
    let mut over = Vec::new();
    for file in files {
        let text =
            fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let lines = text.lines().count();
        if lines > MAX_LINES {
            over.push((
                lines,
                file.strip_prefix(&root).unwrap_or(&file).to_path_buf(),
            ));
        }
    }
    over.sort_by(|a, b| b.cmp(a));
    for (lines, file) in &over {
        println!("    {lines:>5} lines  {}", file.display());
    }
    if !over.is_empty() {
        bail!("{} files over {MAX_LINES} lines", over.len());
    }
    Ok(())
}

/// Every .rs file under `dir`, leaving out build output and hidden directories.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out)?;
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}

fn workspace_deps() -> anyhow::Result<()> {
    let root = root();
    let manifest = fs::read_to_string(root.join("Cargo.toml"))?;
    let mut members = Vec::new();
    for member in workspace_members(&manifest) {
        let path = root.join(&member).join("Cargo.toml");
        members.push(
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
        );
    }
    let unused = uninherited_workspace_deps(&manifest, &members);
    for dep in &unused {
        println!("    {dep}: declared in [workspace.dependencies], inherited by no member");
    }
    if !unused.is_empty() {
        bail!(
            "{} workspace dependencies that no member uses",
            unused.len()
        );
    }
    Ok(())
}

/// The `[workspace] members` of the root manifest (one array, on one or more lines).
fn workspace_members(manifest: &str) -> Vec<String> {
    let Some(start) = manifest.find("\nmembers") else {
        return Vec::new();
    };
    let rest = &manifest[start..];
    let array = &rest[rest.find('[').unwrap_or(0)..rest.find(']').unwrap_or(0)];
    array
        .split(',')
        .map(|s| s.trim().trim_matches(['[', '"', '\'']).trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Keys of `[workspace.dependencies]` that no member manifest inherits with
/// `name = { workspace = true, … }` or `name.workspace = true`. Cargo accepts such unused entries
/// silently, and cargo machete only looks at the members.
fn uninherited_workspace_deps(manifest: &str, members: &[String]) -> Vec<String> {
    let mut in_section = false;
    let mut declared = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == "[workspace.dependencies]";
        } else if in_section && let Some((key, _)) = line.split_once('=') {
            let key = key.trim();
            if !key.is_empty() && !key.starts_with('#') {
                declared.push(key.trim_matches('"').to_string());
            }
        }
    }
    declared
        .into_iter()
        .filter(|dep| {
            !members.iter().any(|m| {
                m.lines().map(str::trim).any(|line| {
                    line.strip_prefix(dep.as_str()).is_some_and(|after| {
                        let after = after.trim_start();
                        (after.starts_with('=')
                            && line.contains("workspace")
                            && line.contains("true"))
                            || after.starts_with(".workspace")
                    })
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = r#"[workspace]
resolver = "2"
members = ["agent", "lab",
  "xtask"]

[workspace.dependencies]
aya = { version = "=0.14.0", default-features = false }
aya-log = { version = "0.3", default-features = false }
# a comment
serde_json = "1"
tower = "0.5"

[profile.release]
debug = 2
"#;

    #[test]
    fn members_are_read_across_lines() {
        assert_eq!(workspace_members(ROOT), vec!["agent", "lab", "xtask"]);
    }

    #[test]
    fn entries_no_member_inherits_are_listed() {
        let agent =
            "[dependencies]\naya = { workspace = true }\naya-log-ebpf = \"1\"\n".to_string();
        let lab = "[dev-dependencies]\nserde_json.workspace = true\n".to_string();
        assert_eq!(
            uninherited_workspace_deps(ROOT, &[agent, lab]),
            vec!["aya-log", "tower"]
        );
    }

    #[test]
    fn a_name_that_only_starts_like_an_entry_does_not_count() {
        let agent =
            "[dependencies]\naya-log = \"0.3\"\ntower-http = { workspace = true }\n".to_string();
        assert_eq!(
            uninherited_workspace_deps(ROOT, &[agent]),
            vec!["aya", "aya-log", "serde_json", "tower"]
        );
    }
}
