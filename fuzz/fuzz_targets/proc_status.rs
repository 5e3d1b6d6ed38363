//! /proc/<pid>/status and /proc/<tid>/stat.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        culprit::fuzzing::proc_status(text);
    }
});
