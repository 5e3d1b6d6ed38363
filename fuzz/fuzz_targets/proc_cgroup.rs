//! /proc/<pid>/cgroup, Kubernetes identities of cgroup paths, memory limit files.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        culprit::fuzzing::proc_cgroup(text);
    }
});
