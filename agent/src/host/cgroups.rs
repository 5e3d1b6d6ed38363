//! Cgroup v2 ids (as the kernel reports them) to paths (as people read them).
//!
//! The kernel identifies a cgroup by its kernfs node id, which is also the inode number of its
//! directory in the cgroup2 filesystem, so a walk of that tree gives the mapping.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};

/// Finds the cgroup2 mount point in the text of `/proc/self/mountinfo`. On a pure v2 host that
/// is `/sys/fs/cgroup`; on a hybrid one, usually `/sys/fs/cgroup/unified`.
pub(crate) fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // Fields, each followed by one space (proc(5)): id parent major:minor root mount-point
        // options [optional...] - fstype source super-options. Only space, tab, newline and
        // backslash are escaped in a path: other whitespace is part of it.
        let fields: Vec<&str> = line.split(' ').collect();
        let separator = 6 + fields.get(6..)?.iter().position(|f| *f == "-")?;
        if *fields.get(separator + 1)? != "cgroup2" {
            return None;
        }
        Some(PathBuf::from(unescape_mount_path(fields[4])))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal; a backslash followed by
/// anything else, or by digits past `\377`, is itself.
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|d| {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                u8::try_from(value).ok()
            });
        match (bytes[i], escaped) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn find_cgroup2_mount() -> anyhow::Result<PathBuf> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    cgroup2_mount(&mountinfo)
        .ok_or_else(|| anyhow!("no cgroup2 filesystem is mounted; mount one or pass --cgroup-root"))
}

/// Id-to-path cache over one cgroup2 tree, refreshed by a walk when an id is unknown.
pub(crate) struct CgroupPaths {
    root: PathBuf,
    by_id: HashMap<u64, String>,
    last_walk: Option<Instant>,
}

/// Cgroups come and go; an unknown id triggers a walk, but not more often than this.
const MIN_WALK_INTERVAL: Duration = Duration::from_millis(500);

impl CgroupPaths {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self {
            root,
            by_id: HashMap::new(),
            last_walk: None,
        }
    }

    /// The cgroup2 mount the paths are relative to.
    pub(crate) fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// The path of cgroup `id` relative to the cgroup2 root (`/` for the root itself), or
    /// `None` if it is gone.
    pub(crate) fn path_of(&mut self, id: u64) -> Option<&str> {
        if !self.by_id.contains_key(&id)
            && self
                .last_walk
                .is_none_or(|t| t.elapsed() >= MIN_WALK_INTERVAL)
        {
            self.walk();
        }
        self.by_id.get(&id).map(String::as_str)
    }

    fn walk(&mut self) {
        self.by_id.clear();
        self.last_walk = Some(Instant::now());
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            // Cgroups vanish during the walk; whatever cannot be read is simply not there.
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            self.by_id
                .insert(meta.ino(), relative_path(&self.root, &dir));
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }
}

fn relative_path(root: &Path, dir: &Path) -> String {
    match dir.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => "/".to_string(),
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => dir.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
29 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
30 29 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
31 29 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
34 29 0:31 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu
";
    const PURE_V2: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
27 24 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn finds_the_v2_tree_on_hybrid_and_pure_hosts() {
        assert_eq!(
            cgroup2_mount(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_mount(PURE_V2),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn v1_only_hosts_have_no_v2_tree() {
        let v1_only: String = HYBRID.lines().filter(|l| !l.contains("cgroup2")).collect();
        assert_eq!(cgroup2_mount(&v1_only), None);
        assert_eq!(cgroup2_mount(""), None);
        assert_eq!(cgroup2_mount("garbage without separator"), None);
    }

    #[test]
    fn escaped_mount_points_are_decoded() {
        let line = "40 29 0:40 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(line), Some(PathBuf::from("/mnt/my cgroups")));
    }

    #[test]
    fn fields_are_split_on_single_spaces_only() {
        // An em space is not escaped by the kernel: it belongs to the path.
        let line = "40 29 0:40 / /mnt/a\u{2003}b rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(line), Some(PathBuf::from("/mnt/a\u{2003}b")));
        // Optional fields before the separator; no separator, or one too early, is no mount.
        let tagged = "40 29 0:40 / /cg rw shared:1 master:2 - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount(tagged), Some(PathBuf::from("/cg")));
        assert_eq!(cgroup2_mount("1 2 3 - cgroup2 x y\n"), None);
        assert_eq!(cgroup2_mount("40 29 0:40 / /cg rw cgroup2\n"), None);
    }

    #[test]
    fn octal_escapes_past_a_byte_are_literal() {
        assert_eq!(unescape_mount_path("/a\\777b"), "/a\\777b");
        assert_eq!(unescape_mount_path("/a\\377"), "/a\u{FFFD}");
        assert_eq!(unescape_mount_path("/a\\134b"), "/a\\b");
        assert_eq!(unescape_mount_path("/a\\09"), "/a\\09");
        assert_eq!(unescape_mount_path("\\"), "\\");
    }

    #[test]
    fn paths_are_relative_to_the_root() {
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(relative_path(root, root), "/");
        assert_eq!(
            relative_path(root, Path::new("/sys/fs/cgroup/kubepods.slice/a")),
            "/kubepods.slice/a"
        );
    }

    #[test]
    fn walks_a_directory_tree_by_inode() {
        let tmp = std::env::temp_dir().join(format!("culprit-cgpaths-{}", std::process::id()));
        fs::create_dir_all(tmp.join("a/b")).unwrap();
        let ino = fs::metadata(tmp.join("a/b")).unwrap().ino();
        let mut paths = CgroupPaths::new(tmp.clone());
        assert_eq!(paths.path_of(ino), Some("/a/b"));
        assert_eq!(paths.path_of(u64::MAX), None);
        fs::remove_dir_all(&tmp).unwrap();
    }
}
