//! /proc/self/mountinfo: the cgroup2 mount point.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = culprit::fuzzing::mountinfo(text);
    }
});
