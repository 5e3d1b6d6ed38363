//! `culprit agent --config FILE`: the file's flags, parsed as the command line.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        culprit::fuzzing::config_file(text);
    }
});
