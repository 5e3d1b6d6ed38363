//! Which thread served each request, without help from the SDK: services with a thread per
//! connection or a worker pool on one CPU, computing and waiting requests in parallel, no thread
//! attribute on any span. Each service records the true serving thread; the agent must name it
//! from the kernel's timeline, or say it cannot, never name another.

use culprit_lab::run::concurrency::Case;
use culprit_tests::{require_root, serving::assert_case};

/// A threaded Python service (a thread per connection, the batch span processor): three clients
/// computing (in C code that releases the interpreter lock, as hashlib does) and three sleeping,
/// in parallel, on one CPU. A computing request must have its 20 ms of CPU time (measured by the
/// app) on its thread, waiting for the CPU the other two hold. (Pure-Python computing threads
/// instead take turns on the interpreter lock, which the kernel sees as blocked: a lock wait,
/// for the off-CPU explanation to name.)
#[test]
fn concurrent_requests_are_joined_with_their_own_threads() -> anyhow::Result<()> {
    require_root()?;
    assert_case(Case::Python, 6, 92).map(drop)
}

/// The lab's Rust service (two worker threads sharing one CPU, the `opentelemetry-otlp` SDK's
/// batch processor, no thread attribute): computing and downstream-calling requests in parallel.
#[test]
fn the_rust_services_requests_are_joined_with_their_workers() -> anyhow::Result<()> {
    require_root()?;
    assert_case(Case::WorkerPool, 6, 92).map(drop)
}
