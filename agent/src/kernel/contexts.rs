//! Which watched processes publish an OTEP 4947 thread context, and where: found once per
//! process (`host::thread_context`) and registered in `CONTEXT_LOCATIONS`, so that the programs
//! read the context of those processes' threads and of no other. A process is looked at again
//! only when the files it maps change (a library that may define the variable, or an exec), at
//! most every few seconds: looking parses ELF files.

use std::{
    collections::{HashMap as StdHashMap, HashSet},
    hash::{DefaultHasher, Hash as _, Hasher as _},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{HashMap, MapData},
};
use culprit_common::{context::ContextLocation, maps};

use crate::host::thread_context;

/// The least time between two looks at one process.
const RELOOK_AFTER: Duration = Duration::from_secs(5);

enum Known {
    /// Registered, as of the process's mapped files then (an exec, or a reused pid, changes
    /// them: the variable is looked for again).
    Located { mapped: u64, looked_at: Instant },
    /// Not published (or not locatable) as of the process's mapped files then.
    Absent { mapped: u64, looked_at: Instant },
}

pub(crate) struct ContextRegistry {
    locations: HashMap<MapData, u32, ContextLocation>,
    known: StdHashMap<u32, Known>,
    /// Processes that define the variable where the agent could not locate it.
    pub locate_failures: u64,
}

impl ContextRegistry {
    pub(crate) fn new(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let map = ebpf.take_map(maps::CONTEXT_LOCATIONS).with_context(|| {
            format!(
                "{} map missing from the eBPF object",
                maps::CONTEXT_LOCATIONS
            )
        })?;
        Ok(Self {
            locations: HashMap::try_from(map)?,
            known: StdHashMap::new(),
            locate_failures: 0,
        })
    }

    /// Whether process `tgid`'s threads have their context read (its variable was located).
    pub(crate) fn publishes(&self, tgid: u32) -> bool {
        matches!(self.known.get(&tgid), Some(Known::Located { .. }))
    }

    /// Looks at the watched processes not known to publish a context yet; forgets the others.
    pub(crate) fn refresh(&mut self, tgids: &HashSet<u32>) {
        let gone: Vec<u32> = self
            .known
            .keys()
            .copied()
            .filter(|t| !tgids.contains(t))
            .collect();
        for tgid in gone {
            if let Some(Known::Located { .. }) = self.known.remove(&tgid) {
                let _ = self.locations.remove(&tgid);
            }
        }
        let now = Instant::now();
        for &tgid in tgids {
            let mapped = match self.known.get(&tgid) {
                Some(Known::Located { looked_at, .. } | Known::Absent { looked_at, .. })
                    if now.duration_since(*looked_at) < RELOOK_AFTER =>
                {
                    continue;
                }
                Some(Known::Located { mapped, .. } | Known::Absent { mapped, .. }) => {
                    let now_mapped = mapped_files(tgid);
                    if now_mapped == *mapped {
                        continue;
                    }
                    now_mapped
                }
                None => mapped_files(tgid),
            };
            let known = match thread_context::locate(tgid) {
                Ok(Some(found)) => match self.locations.insert(tgid, found.slot.location(), 0) {
                    Ok(()) => {
                        log::info!(
                            "process {tgid} publishes its thread context ({:?} in {})",
                            found.model,
                            found.module_path.display()
                        );
                        Known::Located {
                            mapped,
                            looked_at: now,
                        }
                    }
                    Err(err) => {
                        log::warn!("registering the thread context of {tgid}: {err}");
                        self.locate_failures += 1;
                        Known::Absent {
                            mapped,
                            looked_at: now,
                        }
                    }
                },
                Ok(None) => Known::Absent {
                    mapped,
                    looked_at: now,
                },
                Err(err) => {
                    log::warn!("process {tgid}: thread context not readable: {err}");
                    self.locate_failures += 1;
                    Known::Absent {
                        mapped,
                        looked_at: now,
                    }
                }
            };
            self.known.insert(tgid, known);
        }
    }
}

/// A fingerprint of the files process `pid` maps: it changes when it loads a library.
fn mapped_files(pid: u32) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let mut files: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/'))
        .collect();
    files.sort_unstable();
    files.dedup();
    let mut h = DefaultHasher::new();
    files.hash(&mut h);
    h.finish()
}
