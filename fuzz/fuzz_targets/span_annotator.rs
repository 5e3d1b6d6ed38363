//! A trace request annotated with arbitrary measurements and sender identities.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    culprit::fuzzing::annotate(data);
});
