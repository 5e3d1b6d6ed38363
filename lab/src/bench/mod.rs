//! The benches behind the project's published numbers: the kernel cost per hook next to
//! bpftrace, the agent's cost to the application and to the node, and span throughput next to
//! rotel. Each starts the agent and its peers itself and prints a Markdown table.

pub mod hooks;
pub mod overhead;
mod peers;
pub mod pipeline;
pub mod scale;
mod usage;
