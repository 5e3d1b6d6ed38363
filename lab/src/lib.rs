//! The lab: workloads that inject a known cause, and the harness that runs them next to a live
//! agent. Shared by `cargo xtask demo` and the end-to-end tests, so that what the demo shows is
//! what the tests prove.

pub mod accuracy;
pub mod agent_run;
pub mod bench_hooks;
pub mod bench_overhead;
pub mod bench_pipeline;
pub mod binaries;
pub mod browser;
pub mod cgroup;
pub mod demo;
pub mod html_report;
pub mod lab_run;
pub mod load;
pub mod nft;
pub mod otel;
pub mod placement;
pub mod present;
pub mod process;
pub mod runq_contention;
pub mod rust_otel_app;
pub mod scenario;
pub mod service;
pub mod workloads;
