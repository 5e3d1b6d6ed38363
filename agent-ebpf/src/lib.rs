#![no_std]
// The library target only exists so that `cargo` can resolve the crate as a build dependency.
