//! The Culprit agent as a library: the `culprit` binary is a thin shell over these modules, and
//! the lab and the end-to-end tests reuse the pieces that are not tied to a running agent.

pub mod agent;
pub mod allocator;
pub mod capabilities;
pub mod cgroup_paths;
pub mod cli;
pub mod clock;
pub mod collector;
pub mod config_file;
pub mod cpu_stat;
pub mod drops;
pub mod export;
pub mod histogram;
pub mod intervals;
pub mod join;
pub mod k8s_identity;
pub mod kernel_btf;
pub mod live;
pub mod metrics;
pub mod otlp;
pub mod probes;
pub mod procfs;
pub mod report;
pub mod retransmits;
pub mod ring_reader;
pub mod runqueue;
pub mod sched_policy;
pub mod shutdown;
pub mod thread_store;
pub mod tools;
pub mod tracefs_format;
pub mod watch;
