//! What the lab does to the node to inject a cause, each undone on drop: cgroups (with a CPU
//! quota, for throttling), nftables packet loss, the placement of processes on CPUs, pod
//! networks (a namespace behind a veth pair, a hostPort's DNAT), and a SYN flood from spoofed
//! peers. CPU contention itself is the `hog` workload ([`crate::workloads`]), run in its own
//! process.

pub mod cgroup;
pub mod netns;
pub mod oom;
pub mod packet_loss;
pub mod placement;
pub mod port_forward;
pub mod syn_flood;
