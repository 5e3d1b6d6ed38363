//! The signal families, each owning the decoding of its kernel records and its window query:
//! run-queue delay per cgroup (`runqueue`), per-thread states (`thread_store`), CFS throttling
//! (`throttling`) and TCP retransmits (`retransmits`). [`Signals`] keeps them between reports;
//! the join reads them through the narrow, read-only [`WindowView`].

pub(crate) mod bucket_gaps;
pub(crate) mod interval;
pub(crate) mod intervals;
pub(crate) mod listen_queues;
pub(crate) mod oom_kills;
pub(crate) mod queue_reads;
pub(crate) mod retransmit_wait;
pub(crate) mod retransmits;
pub(crate) mod runq_quantile;
mod runq_slots;
pub(crate) mod runqueue;
pub(crate) mod serving_thread;
pub(crate) mod span_context;
mod state;
pub(crate) mod thread_store;
pub(crate) mod throttling;
mod time_by_key;
pub(crate) mod window;

pub(crate) use self::{
    interval::Interval,
    state::{Signals, Sources},
    window::{Measured, ProcessView, SpanOwnership, WindowView},
};
pub use self::{
    interval::{ConnectionRow, NeighbourRow, ThreadRow, ThrottleRow},
    listen_queues::ListenerRow,
    oom_kills::OomKill,
    retransmits::RetransmitRow,
    runqueue::CgroupRunq,
    throttling::ThrottleEpisode,
};
