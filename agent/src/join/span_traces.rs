//! The trace of each recently received span, by span id: which context tags are a span's own
//! (OTEP 4947). A child span the SDK made current tags its thread's intervals with its own id;
//! those intervals are the parent's time too, and the child is known by sharing its trace.
//! Children end, and are sent, before or with their parent, so recent spans suffice. Bounded:
//! the oldest are forgotten first.

use std::collections::{HashMap, VecDeque};

pub(crate) struct SpanTraces {
    trace_of: HashMap<u64, [u8; 16]>,
    order: VecDeque<u64>,
    max_spans: usize,
}

impl SpanTraces {
    pub(crate) fn new(max_spans: usize) -> Self {
        Self {
            trace_of: HashMap::new(),
            order: VecDeque::new(),
            max_spans: max_spans.max(1),
        }
    }

    /// Remembers span `span_key` (see `culprit_common::context::span_key`) of trace `trace_id`.
    pub(crate) fn note(&mut self, span_key: u64, trace_id: &[u8]) {
        let Ok(trace) = <[u8; 16]>::try_from(trace_id) else {
            return;
        };
        if span_key == 0 || self.trace_of.insert(span_key, trace).is_some() {
            return;
        }
        self.order.push_back(span_key);
        while self.order.len() > self.max_spans {
            if let Some(old) = self.order.pop_front() {
                self.trace_of.remove(&old);
            }
        }
    }

    /// Whether span `span_key` is known to belong to trace `trace_id`.
    pub(crate) fn in_trace(&self, span_key: u64, trace_id: &[u8]) -> bool {
        self.trace_of
            .get(&span_key)
            .is_some_and(|t| t.as_slice() == trace_id)
    }

    /// Whether span `span_key` was received lately.
    pub(crate) fn knows(&self, span_key: u64) -> bool {
        self.trace_of.contains_key(&span_key)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.trace_of.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_known_by_trace_until_forgotten() {
        let mut t = SpanTraces::new(2);
        t.note(1, &[7; 16]);
        t.note(2, &[8; 16]);
        assert!(t.in_trace(1, &[7; 16]));
        assert!(!t.in_trace(1, &[8; 16]));
        t.note(3, &[7; 16]);
        assert!(!t.in_trace(1, &[7; 16]), "the oldest went first");
        assert!(t.in_trace(3, &[7; 16]) && t.in_trace(2, &[8; 16]));
        assert!(t.knows(3) && !t.knows(1));
        assert_eq!(t.len(), 2);
        // No id, or a malformed trace id: nothing to remember.
        t.note(0, &[7; 16]);
        t.note(4, &[7; 3]);
        assert!(!t.in_trace(0, &[7; 16]) && !t.in_trace(4, &[7; 3]));
    }
}
