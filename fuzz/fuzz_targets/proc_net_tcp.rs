//! /proc/net/tcp and tcp6.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = culprit::fuzzing::proc_net_tcp(text);
    }
});
