//! Experiments next to a live agent: the agent as a child process with its reports read back,
//! the lab that runs scenarios against the lab service, the run-queue contention experiment, the concurrency scenario (joins scored),
//! and the demo that runs every scenario and writes the report.

pub mod agent;
pub mod concurrency;
pub mod demo;
mod fault_guard;
pub mod lab;
mod lab_load;
mod lab_service;
pub mod runq_contention;
mod tallies;
