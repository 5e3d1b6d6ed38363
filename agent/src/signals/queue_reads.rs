//! Requests that waited before their server read them: each read the kernel reported (a watched
//! thread consuming bytes an accepted connection had left waiting), kept per thread until the
//! span that read began is joined. A span starts after its thread read the request: the wait
//! of the read just before it is the span's.

use std::collections::{HashMap, VecDeque};

use culprit_common::tcp::QueueRecord;

/// A span starts this soon after its thread read its request, at most: the server parses the
/// request and starts the span (and may be preempted in between). A read further back was an
/// earlier request's.
pub(crate) const READ_BEFORE_SPAN_NS: u64 = 20_000_000;
/// A span's clock may read a little before the kernel's instant of the read that began it.
const READ_AFTER_SPAN_NS: u64 = 1_000_000;
/// Reads kept per thread: a thread reads a request at a time, and spans are joined within
/// seconds.
const READS_PER_THREAD: usize = 256;
/// Threads with reads kept; past it the oldest-read thread's reads are dropped (and counted).
const MAX_THREADS: usize = 16_384;
/// Reads older than this are dropped: no span still held started that long ago.
const RETENTION_NS: u64 = 60_000_000_000;
/// A wait this long is no request's: the arrival was mis-dated (a connection idle since it was
/// accepted and read without a segment seen, e.g. its first bytes came with the handshake's
/// last ACK long ago).
const MAX_WAIT_NS: u64 = 60_000_000_000;

/// One read of waiting bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueRead {
    pub(crate) arrived_ns: u64,
    pub(crate) read_ns: u64,
    pub(crate) local_port: u16,
}

impl QueueRead {
    pub(crate) fn wait_ns(&self) -> u64 {
        self.read_ns.saturating_sub(self.arrived_ns)
    }
}

#[derive(Debug, Default)]
pub(crate) struct QueueReads {
    by_thread: HashMap<u32, VecDeque<QueueRead>>,
    /// Reads dropped for the bounds (a thread's own, or a whole thread's) since start.
    pub(crate) dropped: u64,
    /// Reads with an impossible wait (arrival after the read, or too long ago), ignored.
    pub(crate) rejected: u64,
}

impl QueueReads {
    pub(crate) fn insert(&mut self, rec: &QueueRecord) {
        if rec.arrived_ns > rec.read_ns || rec.read_ns - rec.arrived_ns > MAX_WAIT_NS {
            self.rejected += 1;
            return;
        }
        if !self.by_thread.contains_key(&rec.tid) && self.by_thread.len() >= MAX_THREADS {
            let oldest = self
                .by_thread
                .iter()
                .min_by_key(|(_, reads)| reads.back().map_or(0, |r| r.read_ns))
                .map(|(tid, _)| *tid);
            if let Some(tid) = oldest
                && let Some(reads) = self.by_thread.remove(&tid)
            {
                self.dropped += reads.len() as u64;
            }
        }
        let reads = self.by_thread.entry(rec.tid).or_default();
        if reads.len() >= READS_PER_THREAD {
            reads.pop_front();
            self.dropped += 1;
        }
        reads.push_back(QueueRead {
            arrived_ns: rec.arrived_ns,
            read_ns: rec.read_ns,
            local_port: rec.local_port,
        });
    }

    /// The read that began a span of thread `tid` starting at `start_ns`: the last one before
    /// it, if close enough.
    pub(crate) fn before_span(&self, tid: u32, start_ns: u64) -> Option<QueueRead> {
        let reads = self.by_thread.get(&tid)?;
        reads
            .iter()
            .rev()
            .find(|r| r.read_ns <= start_ns.saturating_add(READ_AFTER_SPAN_NS))
            .filter(|r| r.read_ns.saturating_add(READ_BEFORE_SPAN_NS) >= start_ns)
            .copied()
    }

    /// Drops reads no held span can start after.
    pub(crate) fn expire(&mut self, now_ns: u64) {
        let horizon = now_ns.saturating_sub(RETENTION_NS);
        self.by_thread.retain(|_, reads| {
            while reads.front().is_some_and(|r| r.read_ns < horizon) {
                reads.pop_front();
            }
            !reads.is_empty()
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_thread.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn rec(tid: u32, arrived_ms: u64, read_ms: u64) -> QueueRecord {
        QueueRecord {
            tgid: 1,
            tid,
            arrived_ns: arrived_ms * MS,
            read_ns: read_ms * MS,
            local_port: 8080,
            _pad: [0; 3],
        }
    }

    #[test]
    fn a_span_gets_the_read_just_before_it() {
        let mut q = QueueReads::default();
        q.insert(&rec(7, 100, 130));
        q.insert(&rec(7, 120, 140));
        q.insert(&rec(8, 100, 150));
        let r = q.before_span(7, 141 * MS).unwrap();
        assert_eq!(r.wait_ns(), 20 * MS);
        // Its thread's, not another's.
        assert_eq!(q.before_span(8, 141 * MS), None);
        assert_eq!(q.before_span(9, 141 * MS), None);
        // The earlier request's read, for a span that began right after it.
        assert_eq!(q.before_span(7, 131 * MS).unwrap().wait_ns(), 30 * MS);
        // A span starting a hair before the kernel's instant of its read.
        assert_eq!(q.before_span(7, 139_500_000).unwrap().read_ns, 140 * MS);
    }

    #[test]
    fn a_read_long_before_the_span_began_another_request() {
        let mut q = QueueReads::default();
        q.insert(&rec(7, 100, 130));
        assert_eq!(q.before_span(7, 130 * MS + READ_BEFORE_SPAN_NS + 1), None);
        assert!(q.before_span(7, 130 * MS + READ_BEFORE_SPAN_NS).is_some());
        // A span before any read.
        assert_eq!(q.before_span(7, 120 * MS), None);
    }

    #[test]
    fn impossible_waits_are_rejected_and_counted() {
        let mut q = QueueReads::default();
        q.insert(&rec(7, 130, 100));
        q.insert(&QueueRecord {
            arrived_ns: 1,
            read_ns: MAX_WAIT_NS + 2,
            ..rec(7, 0, 0)
        });
        assert_eq!(q.rejected, 2);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn memory_is_bounded_per_thread_and_in_threads() {
        let mut q = QueueReads::default();
        for i in 0..(READS_PER_THREAD as u64 + 10) {
            q.insert(&rec(1, i, i + 1));
        }
        assert_eq!(q.len(), READS_PER_THREAD);
        assert_eq!(q.dropped, 10);
        for tid in 2..(MAX_THREADS as u32 + 5) {
            q.insert(&rec(tid, 1000 + u64::from(tid), 1001 + u64::from(tid)));
        }
        assert_eq!(q.by_thread.len(), MAX_THREADS);
        // Thread 1's reads were the oldest: gone first, counted.
        assert!(!q.by_thread.contains_key(&1));
        assert!(q.dropped >= 10 + READS_PER_THREAD as u64);
    }

    #[test]
    fn old_reads_expire() {
        let mut q = QueueReads::default();
        q.insert(&rec(1, 1, 2));
        q.insert(&rec(2, 69_990, 70_000));
        q.expire(70_001 * MS);
        assert_eq!(q.before_span(1, 2 * MS), None);
        assert_eq!(q.len(), 1);
    }
}
