//! Tunables the agent hands to the programs as a read-only global.

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Per-thread intervals at least this long are streamed as episodes with their own start
    /// and end; shorter ones are summed into buckets.
    pub episode_threshold_ns: u64,
    /// Width of a per-thread bucket of short intervals.
    pub bucket_ns: u64,
    /// Non-zero: keep per-cgroup run-queue histograms for every thread on the node.
    pub node_summary: u32,
    pub _reserved: u32,
    /// Ports the agent receives OTLP on (0: unused slot): connections dialled to them have their
    /// opener recorded in `CONNECTION_OWNER`.
    pub otlp_ports: [u16; OTLP_PORT_SLOTS],
}

/// How many OTLP ports the programs watch connections to.
pub const OTLP_PORT_SLOTS: usize = 4;

const _: () = assert!(core::mem::size_of::<ProbeConfig>() == 32);

impl ProbeConfig {
    pub const DEFAULT: ProbeConfig = ProbeConfig {
        episode_threshold_ns: 20_000,
        bucket_ns: 10_000_000,
        node_summary: 1,
        _reserved: 0,
        otlp_ports: [0; OTLP_PORT_SLOTS],
    };
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for ProbeConfig {}
