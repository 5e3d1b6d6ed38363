//! The lab: workloads that inject a known cause, and the harness that runs them next to a live
//! agent. Shared by `cargo xtask demo` and the end-to-end tests, so that what the demo shows is
//! what the tests prove.
//!
//! One folder per role; imports only flow down this list, never back up:
//! - [`bench`]: the benches behind the published numbers;
//! - [`run`]: experiments next to a live agent, and the demo;
//! - [`report`]: what a run shows its reader (text, tables, the HTML report);
//! - [`service`]: the application side the agent watches (the lab service, its load, real
//!   OpenTelemetry peers);
//! - [`scenario`]: what a scenario injects, what a run recorded, and its accuracy (pure data);
//! - [`faults`], [`workloads`], [`process`]: the building blocks, importing nothing of the lab.
//!
//! What `main.rs` and the end-to-end tests use is `pub`; the rest is `pub(crate)`.

#![warn(unreachable_pub)]

pub mod bench;
pub mod faults;
pub mod process;
pub mod report;
pub mod run;
pub mod scenario;
pub mod service;
pub mod workloads;
