//! An OTLP/HTTP protobuf request: the first byte picks path, gzip and Content-Length.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((selector, body)) = data.split_first() {
        culprit::fuzzing::otlp_http(*selector, false, body);
    }
});
