//! Fuzz target `gfal2_output`: see `ftsd::fuzzing::gfal2_output`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ftsd::fuzzing::gfal2_output(data));
