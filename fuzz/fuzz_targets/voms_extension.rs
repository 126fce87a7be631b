//! Fuzz target `voms_extension`: see `ftsd::fuzzing::voms_extension`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ftsd::fuzzing::voms_extension(data));
