//! The command-line tools that read the agent's local API: `culprit top` (state and keys in
//! `top_view`, drawn with ratatui, or as text by `top_plain`), `explain` and `status`, and the
//! decomposition bar they share.

pub(crate) mod bar;
pub mod charts;
pub(crate) mod check;
pub mod explain;
pub mod load_report;
pub(crate) mod status;
pub(crate) mod top;
pub(crate) mod top_plain;
pub mod top_view;
