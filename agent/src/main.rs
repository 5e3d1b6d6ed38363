//! `culprit`: the node agent and its command-line tools (`culprit::main`).

/// Why mimalloc, and how it is set up: the crate's `allocator` module. Declared here, in the
/// binary, so that the lab and the tests linking the library keep the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    culprit::main()
}
