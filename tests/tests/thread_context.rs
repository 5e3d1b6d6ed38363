//! The OpenTelemetry thread context (OTEP 4947): services that publish each request's trace and
//! span id in the TLS variable `otel_thread_ctx_v1` have every interval of their threads tagged
//! with the span it was for, read by the kernel as the thread leaves a CPU or is sampled on one.
//! Each access model the spec requires is exercised: the lab's Rust service defines the variable
//! in its executable (local-exec), the Python app loads it from a shared library built with TLS
//! descriptors or the legacy general-dynamic dialect (`dlopen`: dynamic TLS). The async service
//! interleaves requests on one thread, where no other join can tell whose time is whose.

use culprit_lab::{run::concurrency::Case, service::thread_context::Dialect};
use culprit_tests::{require_root, serving::assert_case};

/// TLS descriptors (`-mtls-dialect=gnu2`), the spec's recommended model.
#[test]
fn a_thread_pools_requests_are_joined_by_their_published_context() -> anyhow::Result<()> {
    require_root()?;
    assert_case(Case::PythonContext(Dialect::Tlsdesc), 6, 97).map(drop)
}

/// Legacy general dynamic (`__tls_get_addr`), which readers must support too.
#[test]
fn contexts_published_by_a_general_dynamic_library_are_read() -> anyhow::Result<()> {
    require_root()?;
    assert_case(Case::PythonContext(Dialect::GeneralDynamic), 4, 97).map(drop)
}

/// The lab's Rust worker pool, the variable in its executable (local-exec): computing and
/// downstream-calling requests in parallel, no thread attribute.
#[test]
fn contexts_published_by_an_executable_are_read() -> anyhow::Result<()> {
    require_root()?;
    assert_case(Case::WorkerPoolContext, 5, 97).map(drop)
}

/// One thread interleaves a computing request with sleeping ones: each sleeping request's
/// window is full of the computing one's time on its very thread, and only the context says
/// whose it is. Each must get its own CPU time (the service measures what its polls took) to
/// within two sampling periods, and nothing of the others'; the computing requests are joined
/// by span id.
#[test]
fn an_async_runtimes_requests_each_get_only_their_own_time() -> anyhow::Result<()> {
    require_root()?;
    let run = assert_case(Case::Async, 6, 97)?;
    let computing: Vec<_> = run
        .served
        .iter()
        .filter(|s| s.route.ends_with("/cpu"))
        .filter_map(|s| run.lines.get(&s.span_id).map(|l| (s, l)))
        .collect();
    let by_span_id = computing
        .iter()
        .filter(|(s, l)| l.attribution.join == "context" && l.tid == Some(s.tid))
        .count();
    eprintln!(
        "{by_span_id} of {} computing requests joined by span id",
        computing.len()
    );
    // The first requests came before the agent watched the service.
    assert!(by_span_id * 100 >= computing.len().saturating_sub(3) * 97);
    Ok(())
}
