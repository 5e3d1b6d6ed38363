//! The names of the lab service's server spans, one per route, whichever server serves it, and
//! the size of its exchanges with the downstream.

/// Bytes of one downstream request and of its answer (the lab's `tcp-server` echoes them).
pub(crate) const DOWNSTREAM_MESSAGE_BYTES: usize = 512;

pub(crate) const CPU_ROUTE: &str = "GET /cpu";
pub(crate) const DOWNSTREAM_ROUTE: &str = "GET /downstream";
pub(crate) const DISK_ROUTE: &str = "GET /disk";
pub(crate) const LOCK_ROUTE: &str = "GET /lock";
pub(crate) const ALLOC_ROUTE: &str = "GET /alloc";
pub(crate) const MAPPED_ROUTE: &str = "GET /mapped";
/// The downstream exchange over a connection of its own, opened for the request and closed
/// after: a client without a pool, whose every call waits for a TCP handshake.
pub(crate) const CONNECT_ROUTE: &str = "GET /connect";
/// A downstream call retried on failure (`retry_call`).
pub(crate) const RETRY_ROUTE: &str = "GET /retry";
