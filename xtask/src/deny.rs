//! `cargo xtask deny`: the supply-chain check, cargo-deny's advisories, licenses, bans and sources
//! (policy in deny.toml), against the RustSec advisories vendored in supply-chain/advisory-db.
//! `cargo xtask deny --refresh <advisory-db>` renews that snapshot.
//!
//! The machines that run the tests reach crates.io but not the advisory database's repository, so
//! the repository carries the advisories of the crates in Cargo.lock, and the commit and date they
//! were taken at. cargo-deny only opens a database that is a git repository, so the check lays
//! the snapshot out as one under target/ each time, then runs cargo-deny offline.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};

use crate::{
    setup,
    shell::{cargo, output, root, run as run_cmd, step},
};

/// The vendored advisories (`crates/<name>/RUSTSEC-*.md`, as in the database) and their record.
const SNAPSHOT_DIR: &str = "supply-chain/advisory-db";
const RECORD_FILE: &str = "snapshot.txt";
/// Where cargo-deny opens the database deny.toml names: `db-path`, then the last segment of the
/// `db-urls` entry and a hash of that URL (the naming of the pinned cargo-deny; `cargo deny
/// --offline -L debug check advisories` prints it as "Opening advisory database at").
const DB_DIR: &str = "target/deny/advisory-dbs/advisory-db-3157b0e258782691";
/// Past this age the check still passes (no machine that runs it can fetch a newer database),
/// but says that the snapshot wants a refresh.
const STALE_AFTER_DAYS: u64 = 90;
const REFRESH_HINT: &str = "cargo xtask deny --refresh <a git clone of the RustSec advisory-db>";

pub fn check() -> anyhow::Result<()> {
    setup::ensure_cargo_deny_step()?;
    step(
        "advisory snapshot covers Cargo.lock; laid out as a git repository for cargo-deny",
        &format!("refresh the snapshot: {REFRESH_HINT}"),
        prepare_db,
    )?;
    step(
        "the crates in Cargo.lock, for cargo-deny's offline view (cargo fetch --locked)",
        "check that crates.io is reachable; if Cargo.lock is out of date, update and commit it",
        || run_cmd(cargo().args(["fetch", "--locked", "--quiet"])),
    )?;
    step(
        "cargo deny: advisories, licenses, bans, sources (deny.toml)",
        "upgrade (`cargo update -p CRATE`) or replace each crate cargo-deny named; a deliberate \
         exception goes into deny.toml with its reason",
        || run_cmd(cargo().args(["deny", "--frozen", "check"])),
    )
}

/// Replaces the snapshot with the advisories in `source` (a clone or a bare mirror of the
/// database) for every crates.io crate in Cargo.lock, then checks against it.
pub fn refresh(source: &Path) -> anyhow::Result<()> {
    step(
        &format!("advisory snapshot from {}", source.display()),
        "pass a git repository of the RustSec advisory-db (its HEAD is taken)",
        || refresh_snapshot(source),
    )?;
    check()
}

fn refresh_snapshot(source: &Path) -> anyhow::Result<()> {
    let git = |args: &[&str]| output(git_in(source).args(args));
    let commit = git(&["rev-parse", "--verify", "HEAD^{commit}"])?
        .trim()
        .to_owned();
    let date = git(&["show", "-s", "--format=%cI", "HEAD"])?
        .trim()
        .to_owned();
    let crates = lock_crates()?;
    let listing = git(&["ls-tree", "-r", "-z", "--name-only", "HEAD", "--", "crates"])?;
    let files: Vec<&str> = listing
        .split('\0')
        .filter(|path| {
            let mut parts = path.split('/');
            parts.next() == Some("crates")
                && parts.next().is_some_and(|name| crates.contains(name))
                && parts.next().is_some_and(|file| file.ends_with(".md"))
                && parts.next().is_none()
        })
        .collect();
    if files.is_empty() {
        bail!("no crates/<name>/*.md for any crate in Cargo.lock: is this the advisory-db?");
    }

    let snapshot = root().join(SNAPSHOT_DIR);
    let vendored = snapshot.join("crates");
    if vendored.exists() {
        fs::remove_dir_all(&vendored)
            .with_context(|| format!("removing {}", vendored.display()))?;
    }
    for file in &files {
        let out = git_in(source)
            .args(["cat-file", "blob", &format!("HEAD:{file}")])
            .output()
            .with_context(|| format!("reading {file}"))?;
        if !out.status.success() {
            bail!(
                "git cat-file {file}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let dest = snapshot.join(file);
        fs::create_dir_all(dest.parent().context("advisory path")?)?;
        fs::write(&dest, out.stdout).with_context(|| format!("writing {}", dest.display()))?;
    }
    let mut record = format!(
        "# RustSec advisory-db (https://github.com/rustsec/advisory-db), cut down to the crates.io\n\
         # crates in Cargo.lock by `{REFRESH_HINT}`.\n\
         # Each `crate` line is a crate that was looked up, whether or not it has advisories.\n\
         commit {commit}\n\
         date {date}\n"
    );
    for name in &crates {
        record.push_str(&format!("crate {name}\n"));
    }
    fs::write(snapshot.join(RECORD_FILE), record)?;
    println!(
        "    {} advisories for {} crates, advisory-db {commit} ({date})",
        files.len(),
        crates.len()
    );
    Ok(())
}

/// What the snapshot's record says.
struct Record {
    commit: String,
    date: String,
    crates: BTreeSet<String>,
}

fn read_record() -> anyhow::Result<Record> {
    let path = root().join(SNAPSHOT_DIR).join(RECORD_FILE);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let (mut commit, mut date, mut crates) = (None, None, BTreeSet::new());
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        match line.split_once(' ') {
            Some(("commit", v)) => commit = Some(v.to_owned()),
            Some(("date", v)) => date = Some(v.to_owned()),
            Some(("crate", v)) => {
                crates.insert(v.to_owned());
            }
            _ => bail!("{}: unexpected line `{line}`", path.display()),
        }
    }
    match (commit, date) {
        (Some(commit), Some(date)) => Ok(Record {
            commit,
            date,
            crates,
        }),
        _ => bail!("{}: no commit or no date", path.display()),
    }
}

/// The names of the crates.io packages in Cargo.lock: the ones advisories are about.
fn lock_crates() -> anyhow::Result<BTreeSet<String>> {
    let lock = fs::read_to_string(root().join("Cargo.lock")).context("reading Cargo.lock")?;
    let mut crates = BTreeSet::new();
    for package in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            package.lines().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|v| v.trim().strip_prefix("= \""))
                    .and_then(|v| v.strip_suffix('"'))
            })
        };
        if field("source").is_some_and(|s| s.starts_with("registry+"))
            && let Some(name) = field("name")
        {
            crates.insert(name.to_owned());
        }
    }
    Ok(crates)
}

fn prepare_db() -> anyhow::Result<()> {
    let record = read_record()?;
    let unlooked: Vec<String> = lock_crates()?.difference(&record.crates).cloned().collect();
    if !unlooked.is_empty() {
        bail!(
            "Cargo.lock has crates the advisory snapshot was not taken for: {}",
            unlooked.join(", ")
        );
    }

    let db = root().join(DB_DIR);
    if db.exists() {
        fs::remove_dir_all(&db).with_context(|| format!("removing {}", db.display()))?;
    }
    let advisories = copy_tree(
        &root().join(SNAPSHOT_DIR).join("crates"),
        &db.join("crates"),
    )?;
    run_cmd(git_in(&db).args(["init", "--quiet", "--initial-branch=main"]))?;
    run_cmd(git_in(&db).args(["add", "--all"]))?;
    // The commit carries the snapshot's date: the age below is read back from it.
    run_cmd(
        git_in(&db)
            .args([
                "-c",
                "user.name=cargo xtask deny",
                "-c",
                "user.email=xtask@localhost",
                "-c",
                "commit.gpgsign=false",
                "commit",
                "--quiet",
                "--no-verify",
                "-m",
            ])
            .arg(format!("advisory-db {}", record.commit))
            .env("GIT_AUTHOR_DATE", &record.date)
            .env("GIT_COMMITTER_DATE", &record.date),
    )?;

    let committed: u64 = output(git_in(&db).args(["show", "-s", "--format=%ct", "HEAD"]))?
        .trim()
        .parse()
        .context("snapshot commit time")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let age_days = now.saturating_sub(committed) / 86_400;
    println!(
        "    {advisories} advisories, advisory-db {} of {} ({age_days} days old)",
        &record.commit[..record.commit.len().min(12)],
        record.date
    );
    if age_days > STALE_AFTER_DAYS {
        println!(
            "    warning: the advisory snapshot is over {STALE_AFTER_DAYS} days old; advisories \
             published since are not checked. Refresh it: {REFRESH_HINT}"
        );
    }
    Ok(())
}

/// Copies `crates/<name>/<file>` from `from` to `to`; returns how many files.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<usize> {
    let mut copied = 0;
    for dir in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let dir = dir?.path();
        let dest: PathBuf = to.join(dir.file_name().context("crate directory")?);
        fs::create_dir_all(&dest)?;
        for file in fs::read_dir(&dir)? {
            let file = file?.path();
            fs::copy(&file, dest.join(file.file_name().context("advisory file")?))
                .with_context(|| format!("copying {}", file.display()))?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// git in `dir`, unaffected by a repository the xtask itself may be run from (hooks set these).
fn git_in(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(dir);
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}
