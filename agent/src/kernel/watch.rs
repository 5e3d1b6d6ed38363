//! The watch set: which threads get per-thread accounting. Threads of watched processes and
//! cgroups are registered in the kernel's `THREAD_STATE`; their processes and (v2) cgroups are
//! registered too, so that threads born later are watched from their first wakeup.

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError},
};
use culprit_common::{
    maps,
    thread::{ThreadBucket, ThreadState, state},
};

use super::contexts::ContextRegistry;
use crate::host::{clock::monotonic_ns, membership, procfs};

/// What a thread is doing right now, as read from the kernel's `THREAD_STATE`: the current
/// interval and the bucket not yet streamed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LiveState {
    pub state: u32,
    pub since_ns: u64,
    pub bucket: ThreadBucket,
    /// The current run-queue wait began with the thread's cgroup throttled.
    pub throttled: bool,
    /// The span of the thread's published context as the current interval began (0: none).
    pub span_id: u64,
}

/// Every watched thread's live state at one instant, by tid: (its process, its state).
pub(crate) type LiveSnapshot = std::collections::HashMap<u32, (u32, LiveState)>;

/// BPF_NOEXIST: never reset the state of a thread the kernel already tracks.
const NOEXIST: u64 = 1;

pub(crate) struct WatchSet {
    pids: Vec<u32>,
    cgroups: Vec<PathBuf>,
    v2_root: PathBuf,
    v1_cpu_root: PathBuf,
    thread_state: HashMap<MapData, u32, ThreadState>,
    tgids: HashMap<MapData, u32, u8>,
    cgroup_ids: HashMap<MapData, u64, u8>,
    /// Bumped after threads are added, so that the kernel drops its cached "not watched".
    generation: Array<MapData, u32>,
    generation_value: u32,
    generation_bump_pending: bool,
    /// Watched process -> the cgroup directory whose `cpu.stat` governs it.
    pub cpu_cgroups: BTreeMap<u32, PathBuf>,
    /// Threads that could not be registered because `THREAD_STATE` was full.
    pub registration_failures: u64,
    /// The watched processes that publish a thread context.
    pub contexts: ContextRegistry,
}

impl WatchSet {
    pub(crate) fn new(
        ebpf: &mut Ebpf,
        pids: Vec<u32>,
        cgroups: Vec<PathBuf>,
        v2_root: PathBuf,
    ) -> anyhow::Result<Self> {
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("{name} map missing from the eBPF object"))
        };
        let cgroups = cgroups
            .into_iter()
            .map(|c| if c.is_absolute() { c } else { v2_root.join(c) })
            .collect::<Vec<_>>();
        for c in &cgroups {
            if !membership::is_cgroup_dir(c) {
                anyhow::bail!("--watch-cgroup {}: not a cgroup directory", c.display());
            }
        }
        let mut generation = Array::try_from(take(ebpf, maps::WATCH_GENERATION)?)?;
        // 0 means "no generation yet": the kernel caches nothing until this is set.
        generation
            .set(0, 1, 0)
            .context("initialising the watch generation")?;
        Ok(Self {
            pids,
            cgroups,
            v2_root,
            generation,
            generation_value: 1,
            generation_bump_pending: false,
            v1_cpu_root: PathBuf::from("/sys/fs/cgroup/cpu"),
            thread_state: HashMap::try_from(take(ebpf, maps::THREAD_STATE)?)?,
            tgids: HashMap::try_from(take(ebpf, maps::WATCHED_TGIDS)?)?,
            cgroup_ids: HashMap::try_from(take(ebpf, maps::WATCHED_CGROUPS)?)?,
            cpu_cgroups: BTreeMap::new(),
            registration_failures: 0,
            contexts: ContextRegistry::new(ebpf)?,
        })
    }

    /// Adds a process to watch; returns whether it was new.
    pub(crate) fn add_pid(&mut self, pid: u32) -> bool {
        if self.pids.contains(&pid) {
            return false;
        }
        self.pids.push(pid);
        true
    }

    /// Registers every current thread of the watched processes and cgroups; forgets processes
    /// that are gone.
    pub(crate) fn refresh(&mut self) {
        let mut threads: Vec<(u32, u32)> = Vec::new();
        // Processes that exited are forgotten.
        self.pids.retain(|&pid| procfs::exists(pid));
        for &pid in &self.pids {
            threads.extend(procfs::threads_of(pid).into_iter().map(|tid| (tid, pid)));
        }
        for dir in &self.cgroups {
            if let Some(id) = membership::cgroup_id(dir)
                && dir.starts_with(&self.v2_root)
            {
                let _ = self.cgroup_ids.insert(id, 1, 0);
            }
            for tid in membership::threads_of(dir) {
                if let Some(tgid) = procfs::tgid_of(tid) {
                    threads.push((tid, tgid));
                }
            }
        }
        let mut live_tgids = HashSet::new();
        let now_ns = monotonic_ns();
        for (tid, tgid) in threads {
            live_tgids.insert(tgid);
            // Until its first switch the kernel cannot know the thread's state: start from what
            // /proc says, so that a thread that never switches (a spinner alone on its CPU) is
            // accounted from now on.
            let state = match procfs::run_state(tid) {
                Some('R') => state::ON_CPU,
                Some(_) => state::OFF_CPU,
                None => continue,
            };
            let fresh = ThreadState {
                tgid,
                state,
                since_ns: now_ns,
                ..ThreadState::default()
            };
            match self.thread_state.insert(tid, fresh, NOEXIST) {
                // At once, not after the loop: until the bump the kernel may skip the thread
                // (cached as unwatched), and the loop reads /proc for every thread.
                Ok(()) => self.bump_generation(),
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
                Err(_) => self.registration_failures += 1,
            }
        }
        if self.generation_bump_pending {
            self.bump_generation();
        }
        for &tgid in &live_tgids {
            let _ = self.tgids.insert(tgid, 1, 0);
            if !self.cpu_cgroups.contains_key(&tgid)
                && let Some(dir) = self.cpu_cgroup_of(tgid)
            {
                self.cpu_cgroups.insert(tgid, dir);
            }
        }
        let stale: Vec<u32> = self
            .tgids
            .keys()
            .flatten()
            .filter(|t| !live_tgids.contains(t))
            .collect();
        for tgid in stale {
            let _ = self.tgids.remove(&tgid);
            self.cpu_cgroups.remove(&tgid);
        }
        self.contexts.refresh(&live_tgids);
    }

    /// After new entries are in `THREAD_STATE`: tasks the kernel cached as unwatched are looked
    /// up again.
    fn bump_generation(&mut self) {
        self.generation_value = self.generation_value.wrapping_add(1).max(1);
        let result = self.generation.set(0, self.generation_value, 0);
        // Left as it was, the new threads would stay unseen: retried on every refresh.
        self.generation_bump_pending = result.is_err();
        if let Err(err) = result {
            log::warn!("updating the watch generation: {err}");
            self.registration_failures += 1;
        }
    }

    fn cpu_cgroup_of(&self, tgid: u32) -> Option<PathBuf> {
        membership::cpu_dir(
            &membership::memberships_of(tgid),
            &self.v1_cpu_root,
            &self.v2_root,
        )
    }

    /// Every watched thread with its process and what the kernel holds for it, in one walk.
    pub(crate) fn live_all(&self) -> impl Iterator<Item = (u32, u32, LiveState)> + '_ {
        self.thread_state
            .iter()
            .flatten()
            .map(|(tid, st)| (tid, st.tgid, live_state(&st)))
    }

    /// What the kernel holds for every watched thread right now, by tid (with its process).
    pub(crate) fn live_snapshot(&self) -> LiveSnapshot {
        self.live_all()
            .map(|(tid, tgid, live)| (tid, (tgid, live)))
            .collect()
    }

    /// What the kernel holds for a watched thread right now.
    pub(crate) fn live(&self, tid: u32) -> Option<(u32, LiveState)> {
        let st = self.thread_state.get(&tid, 0).ok()?;
        Some((st.tgid, live_state(&st)))
    }
}

fn live_state(st: &ThreadState) -> LiveState {
    LiveState {
        state: st.state,
        since_ns: st.since_ns,
        bucket: st.bucket,
        throttled: st.throttled_at_enqueue != 0,
        span_id: st.span_id,
    }
}
