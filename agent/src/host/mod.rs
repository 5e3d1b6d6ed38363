//! The host as the agent reads it: the one owner of /proc (`procfs`, its TCP tables `sockets`) and of cgroupfs (the tree of
//! cgroup ids, `cgroups`; which cgroups a process is in, `membership`; the agent's own memory
//! limit, `memory_limit`), Kubernetes identity from
//! cgroup paths (`k8s`), the agent's own capabilities and scheduling policy, and the clocks.

pub(crate) mod block_devices;
pub(crate) mod capabilities;
pub(crate) mod cgroup_layout;
pub(crate) mod cgroups;
pub mod clock;
pub(crate) mod k8s;
pub(crate) mod listeners;
pub(crate) mod membership;
pub(crate) mod memory_limit;
pub(crate) mod procfs;
pub(crate) mod sched_policy;
pub(crate) mod sockets;
pub(crate) mod thread_context;
