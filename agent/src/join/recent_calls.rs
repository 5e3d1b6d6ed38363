//! Calls whose attempts arrived in earlier batches: an SDK exports a retry when it ends, often
//! in a later batch than the attempt it retries, and without `http.request.resend_count` only
//! the earlier attempts' count places it. Bounded whatever senders do: the oldest calls are
//! forgotten first, and a call not seen for [`FORGET_AFTER_NS`] is over.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, Hash, Hasher},
};

/// Calls remembered at most: a node's calls of the last minute at thousands per second.
pub(crate) const MAX_RECENT_CALLS: usize = 65_536;
/// A call whose last attempt started this long before a new span's start is not its call: the
/// new span is a call of its own.
pub(crate) const FORGET_AFTER_NS: u64 = 60_000_000_000;

/// A call's key: a hash of its parent span id and its client spans' name (a collision costs a
/// miscounted attempt, not memory).
pub(crate) type CallId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    attempts: u32,
    last_start_ns: u64,
}

/// The attempts seen so far of recent calls.
pub(crate) struct RecentCalls {
    seen: HashMap<CallId, Seen>,
    /// Calls in the order they were first seen, for eviction.
    order: VecDeque<CallId>,
    capacity: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl RecentCalls {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            seen: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            hasher: Default::default(),
        }
    }

    /// The call of client spans named `name` under the span `parent`.
    pub(crate) fn id(&self, parent: &[u8], name: &str) -> CallId {
        let mut h = self.hasher.build_hasher();
        parent.hash(&mut h);
        name.hash(&mut h);
        h.finish()
    }

    /// The attempts of `call` seen before, if its last began at most [`FORGET_AFTER_NS`]
    /// before `start_ns`.
    pub(crate) fn earlier_attempts(&self, call: CallId, start_ns: u64) -> u32 {
        self.seen
            .get(&call)
            .filter(|s| start_ns.saturating_sub(s.last_start_ns) <= FORGET_AFTER_NS)
            .map_or(0, |s| s.attempts)
    }

    /// `call` has had `attempts` in all, the last beginning at `last_start_ns`.
    pub(crate) fn record(&mut self, call: CallId, attempts: u32, last_start_ns: u64) {
        let seen = Seen {
            attempts,
            last_start_ns,
        };
        if self.seen.insert(call, seen).is_none() {
            self.order.push_back(call);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_known_by_its_parent_and_name() {
        let calls = RecentCalls::new(4);
        let a = calls.id(&[1; 8], "GET /pay");
        assert_eq!(a, calls.id(&[1; 8], "GET /pay"));
        assert_ne!(a, calls.id(&[2; 8], "GET /pay"));
        assert_ne!(a, calls.id(&[1; 8], "GET /cart"));
    }

    #[test]
    fn earlier_attempts_are_counted_until_the_call_is_old() {
        let mut calls = RecentCalls::new(4);
        let a = calls.id(&[1; 8], "GET");
        assert_eq!(calls.earlier_attempts(a, 100), 0);
        calls.record(a, 2, 100);
        assert_eq!(calls.earlier_attempts(a, 200), 2);
        assert_eq!(calls.earlier_attempts(a, 100 + FORGET_AFTER_NS), 2);
        assert_eq!(calls.earlier_attempts(a, 101 + FORGET_AFTER_NS), 0);
        // A span that started before the last attempt (clocks, reordering) still counts them.
        assert_eq!(calls.earlier_attempts(a, 50), 2);
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_calls_go_first() {
        let mut calls = RecentCalls::new(3);
        let ids: Vec<CallId> = (0u8..5).map(|i| calls.id(&[i; 8], "GET")).collect();
        for (i, id) in ids.iter().enumerate() {
            calls.record(*id, 1, i as u64);
            // Updating a known call does not grow the order.
            calls.record(*id, 2, i as u64);
        }
        assert_eq!(calls.len(), 3);
        assert_eq!(calls.order.len(), 3);
        assert_eq!(calls.earlier_attempts(ids[0], 10), 0);
        assert_eq!(calls.earlier_attempts(ids[1], 10), 0);
        assert_eq!(calls.earlier_attempts(ids[4], 10), 2);
    }
}
