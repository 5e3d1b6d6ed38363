//! The kernel side as user space sees it: loading and attaching the eBPF programs hook by hook
//! (`probes`), the struct offsets they need from BTF and tracefs (`btf`, `tracefs_format`), the
//! rings they stream records into (`ring_reader`), the watch set registered in their maps
//! (`watch`), and their loss counters (`drops`). Decoding what the records mean is the signals'.

pub(crate) mod btf;
pub(crate) mod connections;
pub(crate) mod contexts;
pub(crate) mod drops;
mod hooks;
pub(crate) mod probes;
pub(crate) mod ring_reader;
pub(crate) mod tracefs_format;
pub(crate) mod watch;
