//! OTLP out: everything received goes to the configured endpoint, losslessly, through a bounded
//! queue with retry and backoff. A down backend costs nothing until the queue is full; then the
//! oldest requests are dropped and counted.

pub mod config;
pub mod queue;
pub mod sender;

pub use config::{ExportConfig, Protocol};
pub use queue::{ExportQueue, ExportStats};
