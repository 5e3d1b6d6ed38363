//! The protobuf wire scanner that weighs a trace request before it is decoded.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    culprit::fuzzing::wire_scan(data);
});
