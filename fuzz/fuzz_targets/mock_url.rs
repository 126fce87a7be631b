//! Fuzz target `mock_url`: see `ftsd::fuzzing::mock_url`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ftsd::fuzzing::mock_url(data));
