//! The exporter's counters and its state right now (last success, failing since, last error):
//! the report carries them, and the health answer reads them live.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

use serde::{Deserialize, Serialize};

#[derive(Debug, Default)]
pub(crate) struct ExportStats {
    pub spans_exported: AtomicU64,
    /// Dropped because the queue was full (the oldest go first).
    pub spans_dropped_queue_full: AtomicU64,
    /// Refused by the backend as invalid: retrying would not help.
    pub spans_rejected_by_backend: AtomicU64,
    pub requests_exported: AtomicU64,
    pub requests_dropped: AtomicU64,
    pub export_retries: AtomicU64,
    pub queue_depth: AtomicU64,
    /// Dropped after being retried for the maximum elapsed time.
    pub spans_dropped_retries_exhausted: AtomicU64,
    state: Mutex<ExportState>,
}

/// How the last attempts went.
#[derive(Debug, Clone, Default)]
struct ExportState {
    last_success_unix_ms: Option<u64>,
    /// The first of the failures since the last success.
    failing_since_unix_ms: Option<u64>,
    last_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportCounts {
    pub spans_exported: u64,
    pub spans_dropped_queue_full: u64,
    pub spans_rejected_by_backend: u64,
    pub requests_exported: u64,
    pub requests_dropped: u64,
    pub export_retries: u64,
    pub queue_depth: u64,
    #[serde(default)]
    pub spans_dropped_retries_exhausted: u64,
    /// When the backend last accepted a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_unix_ms: Option<u64>,
    /// Set while exports fail: since when (the first failure after the last success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since_unix_ms: Option<u64>,
    /// The last failure's reason, kept after a success for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl ExportCounts {
    /// Exports fail right now.
    pub fn failing(&self) -> bool {
        self.failing_since_unix_ms.is_some()
    }
}

impl ExportStats {
    pub(crate) fn snapshot(&self) -> ExportCounts {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let state = self.state().clone();
        ExportCounts {
            spans_exported: g(&self.spans_exported),
            spans_dropped_queue_full: g(&self.spans_dropped_queue_full),
            spans_rejected_by_backend: g(&self.spans_rejected_by_backend),
            requests_exported: g(&self.requests_exported),
            requests_dropped: g(&self.requests_dropped),
            export_retries: g(&self.export_retries),
            queue_depth: g(&self.queue_depth),
            spans_dropped_retries_exhausted: g(&self.spans_dropped_retries_exhausted),
            last_success_unix_ms: state.last_success_unix_ms,
            failing_since_unix_ms: state.failing_since_unix_ms,
            last_error: state.last_error,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ExportState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The backend took a request (wholly or in part).
    pub(crate) fn on_success(&self, now_unix_ms: u64) {
        let mut s = self.state();
        s.last_success_unix_ms = Some(now_unix_ms);
        s.failing_since_unix_ms = None;
    }

    /// An attempt failed (to be retried or not).
    pub(crate) fn on_failure(&self, now_unix_ms: u64, why: &str) {
        let mut s = self.state();
        s.failing_since_unix_ms.get_or_insert(now_unix_ms);
        s.last_error = Some(why.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_until_the_next_success_and_the_error_is_kept() {
        let stats = ExportStats::default();
        assert!(!stats.snapshot().failing());
        stats.on_failure(1_000, "HTTP 401: credentials refused");
        stats.on_failure(2_000, "HTTP 401: credentials refused");
        let c = stats.snapshot();
        assert_eq!(c.failing_since_unix_ms, Some(1_000));
        assert!(c.failing());
        stats.on_success(3_000);
        let c = stats.snapshot();
        assert!(!c.failing());
        assert_eq!(c.last_success_unix_ms, Some(3_000));
        assert_eq!(
            c.last_error.as_deref(),
            Some("HTTP 401: credentials refused")
        );
    }
}
