//! Tracepoint format files from tracefs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        culprit::fuzzing::tracefs_format(text);
    }
});
