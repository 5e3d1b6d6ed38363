//! Full scans of /proc, cached and rationed. A scan reads a file or more per process on the
//! node; it runs on the event loop, so a sender must not be able to make it run at will (a
//! stream of unknown container ids, or of connections from addresses no process holds).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// How long the result of a full /proc scan stands: one sender's batches must not repeat it,
/// but processes come and go.
const SCAN_TTL: Duration = Duration::from_secs(5);
/// Entries kept per cache before it is cleared: senders are few, hostile payloads many.
const SCAN_CACHE_MAX: usize = 1024;
/// Full scans per second over all the caches: a handful of new senders a second is a busy
/// node; more is a sender making the agent work.
const SCANS_PER_SECOND: u32 = 20;

/// The node-wide ration of full scans.
pub(crate) struct ScanBudget {
    window_start: Instant,
    used: u32,
    /// Scans refused since start: their senders stay unidentified for now.
    pub(crate) refused: u64,
}

impl Default for ScanBudget {
    fn default() -> Self {
        Self {
            window_start: Instant::now(),
            used: 0,
            refused: 0,
        }
    }
}

impl ScanBudget {
    fn take(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.used = 0;
        }
        if self.used >= SCANS_PER_SECOND {
            self.refused += 1;
            return false;
        }
        self.used += 1;
        true
    }
}

/// Results of /proc scans by what was looked for, each valid for [`SCAN_TTL`].
pub(crate) struct ScanCache<K, V> {
    entries: HashMap<K, (Option<V>, Instant)>,
}

impl<K, V> Default for ScanCache<K, V> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq, V: Copy> ScanCache<K, V> {
    /// The cached result for `key`, or a new scan's if the budget allows (a refused scan finds
    /// nothing and is not cached: the next request may scan).
    pub(crate) fn get_or_scan(
        &mut self,
        budget: &mut ScanBudget,
        key: K,
        scan: impl FnOnce() -> Option<V>,
    ) -> Option<V> {
        if let Some((found, at)) = self.entries.get(&key)
            && at.elapsed() < SCAN_TTL
        {
            return *found;
        }
        if !budget.take(Instant::now()) {
            return None;
        }
        if self.entries.len() >= SCAN_CACHE_MAX {
            self.entries.retain(|_, (_, at)| at.elapsed() < SCAN_TTL);
            if self.entries.len() >= SCAN_CACHE_MAX {
                self.entries.clear();
            }
        }
        let found = scan();
        self.entries.insert(key, (found, Instant::now()));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_are_cached_and_rationed() {
        let mut budget = ScanBudget::default();
        let mut cache: ScanCache<u32, u32> = ScanCache::default();
        let mut scans = 0;
        for _ in 0..3 {
            let found = cache.get_or_scan(&mut budget, 1, || {
                scans += 1;
                Some(7)
            });
            assert_eq!(found, Some(7));
        }
        assert_eq!(scans, 1, "a cached result is not scanned again");
        // A stream of new keys: the budget runs out, then nothing more is scanned this second.
        for key in 2..100 {
            cache.get_or_scan(&mut budget, key, || {
                scans += 1;
                None
            });
        }
        assert_eq!(scans, SCANS_PER_SECOND);
        assert_eq!(budget.refused, 98 - u64::from(SCANS_PER_SECOND - 1));
        // A second later the ration is back.
        assert!(budget.take(budget.window_start + Duration::from_secs(1)));
    }
}
