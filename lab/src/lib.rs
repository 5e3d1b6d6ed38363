//! The lab: workloads that inject a known cause, and the harness that runs them next to a live
//! agent. Shared by `cargo xtask demo` and the end-to-end tests, so that what the demo shows is
//! what the tests prove.

pub mod agent_run;
pub mod bench_hooks;
pub mod bench_pipeline;
pub mod binaries;
pub mod cgroup;
pub mod demo;
pub mod nft;
pub mod otel;
pub mod placement;
pub mod process;
pub mod rust_otel_app;
pub mod workloads;
