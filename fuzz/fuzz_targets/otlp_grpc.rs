//! An OTLP/gRPC request: the first byte picks the service and the framing.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((selector, body)) = data.split_first() {
        culprit::fuzzing::otlp_grpc(*selector, body);
    }
});
