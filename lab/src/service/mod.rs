//! The application side the agent watches: the lab's instrumented HTTP service and how it is
//! started, the open-loop load generator that drives it, and real OpenTelemetry peers (the Python SDK app, the rotel
//! collector, a sink that records what arrives).

pub mod async_server;
pub mod generator;
pub(crate) mod k6;
pub(crate) mod launch;
pub(crate) mod load;
pub(crate) mod locust;
pub mod nginx;
pub mod otel;
pub(crate) mod pool_server;
pub mod retry_call;
pub(crate) mod routes;
pub mod server;
pub mod server_args;
pub mod thread_context;
