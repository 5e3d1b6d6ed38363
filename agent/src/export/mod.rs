//! OTLP out: everything received goes to the configured endpoint, losslessly, through a bounded
//! queue with retry and backoff as the specification says (`retry`). A down backend costs nothing until the queue is full; then the
//! oldest requests are dropped and counted.

pub(crate) mod config;
pub(crate) mod queue;
pub(crate) mod retry;
pub(crate) mod sender;
pub(crate) mod stats;

pub(crate) use queue::ExportQueue;
