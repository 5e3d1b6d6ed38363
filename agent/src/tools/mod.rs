//! The command-line tools that read the agent's local API.

pub mod bar;
pub mod explain;
pub mod status;
pub mod top;
pub mod top_view;
