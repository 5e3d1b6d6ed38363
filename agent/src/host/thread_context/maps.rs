//! `/proc/<pid>/maps` as the resolver reads it: the files a process maps, each with its
//! mappings.

use std::{collections::HashMap, ops::Range, path::PathBuf};

/// One file mapped into the process, as listed in `/proc/<pid>/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MappedFile {
    /// Path as seen by the process (in its mount namespace), without a " (deleted)" suffix.
    pub path: PathBuf,
    /// Device (`major:minor`, hex) and inode, to tell apart files that share a path.
    pub device: String,
    pub inode: u64,
    /// Every mapping of the file, in address order.
    pub ranges: Vec<Range<u64>>,
    /// The mapping that starts at file offset 0: its start is where the ELF header is.
    pub first: Option<Range<u64>>,
}

/// Parses `/proc/<pid>/maps`; keeps file-backed mappings only, grouped per file, in the order
/// the files first appear.
pub(crate) fn parse_maps(text: &str) -> Vec<MappedFile> {
    let mut files: Vec<MappedFile> = Vec::new();
    // Indexed: a process can map tens of thousands of files.
    let mut index: HashMap<(u64, String, PathBuf), usize> = HashMap::new();
    for (range, offset, device, inode, path) in text.lines().filter_map(parse_maps_line) {
        let path = PathBuf::from(path.strip_suffix(" (deleted)").unwrap_or(path));
        let key = (inode, device.to_string(), path.clone());
        let file = match index.get(&key) {
            Some(&at) => &mut files[at],
            None => {
                index.insert(key, files.len());
                let (device, ranges, first) = (device.to_string(), Vec::new(), None);
                files.push(MappedFile {
                    path,
                    device,
                    inode,
                    ranges,
                    first,
                });
                files.last_mut().expect("just pushed")
            }
        };
        if offset == 0 && file.first.is_none() {
            file.first = Some(range.clone());
        }
        file.ranges.push(range);
    }
    files
}

/// One maps line: `start-end perms offset dev inode pathname` (the pathname may hold spaces).
/// Anonymous memory, `[heap]`, `[vdso]` and the like (inode 0 or no absolute path) are dropped.
fn parse_maps_line(line: &str) -> Option<(Range<u64>, u64, &str, u64, &str)> {
    let fields: Vec<&str> = line.splitn(6, ' ').collect();
    let [range, _perms, offset, device, inode, path] = fields[..] else {
        return None;
    };
    let hex = |text| u64::from_str_radix(text, 16).ok();
    let (start, end) = range.split_once('-')?;
    let (inode, path) = (inode.parse::<u64>().ok()?, path.trim_start());
    if inode == 0 || !path.starts_with('/') {
        return None;
    }
    Some((hex(start)?..hex(end)?, hex(offset)?, device, inode, path))
}
