//! One thread's stored records, in arrival order, with the index a window query starts from.

use std::collections::VecDeque;

use culprit_common::thread::SchedRecord;

pub(super) struct Timeline {
    pub(super) tgid: u32,
    pub(super) records: VecDeque<SchedRecord>,
    /// For each record, the earliest start of it and every record stored after it: never
    /// decreasing, so a binary search finds where the records that all start at or after an
    /// instant begin. Records are stored as they end, so their starts are nearly but not quite
    /// in order (a bucket is stored when it closes, after episodes that began inside it): a
    /// search on the starts themselves could skip one.
    min_start_from: VecDeque<u64>,
}

impl Timeline {
    pub(super) fn new(tgid: u32) -> Self {
        Self {
            tgid,
            records: VecDeque::new(),
            min_start_from: VecDeque::new(),
        }
    }

    pub(super) fn push(&mut self, rec: SchedRecord) {
        self.records.push_back(rec);
        self.min_start_from.push_back(rec.start_ns);
        // Only the few entries after the last one already at or below this start change.
        for m in self.min_start_from.iter_mut().rev().skip(1) {
            if *m <= rec.start_ns {
                break;
            }
            *m = rec.start_ns;
        }
    }

    pub(super) fn pop_front(&mut self) {
        self.records.pop_front();
        self.min_start_from.pop_front();
    }

    /// The records stored before the first from which all start at or after `from_ns`: what a
    /// query of time before `from_ns` can need, in O(log n) rather than a walk from the newest.
    pub(super) fn starting_before(
        &self,
        from_ns: u64,
    ) -> std::collections::vec_deque::Iter<'_, SchedRecord> {
        let cut = self.min_start_from.partition_point(|&m| m < from_ns);
        self.records.range(..cut)
    }
}
