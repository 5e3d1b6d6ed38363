//! Joining spans with kernel signals: who sent the span, which threads did its work, where its
//! wall time went, and which kernel cause dominated.

pub mod annotated;
pub mod attribution;
pub mod identity;
pub mod joiner;
pub mod parts;

pub use joiner::Joiner;
