//! What the lab does to the node to inject a cause, each undone on drop: cgroups (with a CPU
//! quota, for throttling), nftables packet loss, and the placement of processes on CPUs. CPU
//! contention itself is the `hog` workload ([`crate::workloads`]), run in its own process.

pub mod cgroup;
pub mod packet_loss;
pub mod placement;
