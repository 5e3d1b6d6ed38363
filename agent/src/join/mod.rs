//! Joining spans with kernel signals: who sent the span (`identity`, its /proc scans rationed in
//! `scan_cache`), which threads did its
//! work and where its wall time went (`joiner`, reading the signals' `WindowView`), which kernel
//! cause dominated (`attribution`, `parts`), and the span re-encoded with its `culprit.*`
//! attributes (`annotated`) and its sender's identity on the resource (`resource`).

pub(crate) mod annotated;
pub(crate) mod attribution;
pub(crate) mod identity;
pub(crate) mod joiner;
pub(crate) mod parts;
pub(crate) mod recent_calls;
pub(crate) mod resource;
pub(crate) mod retries;
pub(crate) mod scan_cache;
pub(crate) mod span_traces;

pub(crate) use self::joiner::Joiner;
pub use self::{
    attribution::Attribution,
    joiner::{JoinCounts, SpanLine},
    parts::Parts,
    retries::Attempt,
};
