//! The single-cause generators behind `culprit-lab`'s workload subcommands (a CPU hog, wakeups,
//! sleeps, TCP request/response, a context-switch storm, a many-threaded span sender, a disk writer, a held lock, a page-cache dirtier, a page-cache evictor, threads that sleep for one reason each), and a Rust app instrumented with
//! opentelemetry-otlp. Each runs in a process of its own, placed by whoever started it.

mod cpu;
pub(crate) mod disk;
pub mod lock;
pub(crate) mod mapped;
pub(crate) mod memory;
mod pingpong;
pub mod rust_otel_app;
mod span_sender;
mod tcp;
pub mod waits;

pub(crate) use cpu::busy;
pub use cpu::{hog, sleeper, thread_cpu_ns, wakeups};
pub use disk::{block_device_name, disk_writer};
pub use mapped::evictor;
pub use memory::{dirtier, memory_hog};
pub use pingpong::pingpong;
pub use span_sender::span_sender;
pub(crate) use span_sender::string_attribute;
pub use tcp::{tcp_client, tcp_pingpong, tcp_server};
pub use waits::waits;
