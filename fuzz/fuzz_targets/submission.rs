//! Fuzz target `submission`: see `ftsd::fuzzing::submission`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ftsd::fuzzing::submission(data));
