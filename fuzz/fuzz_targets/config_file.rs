//! Fuzz target `config_file`: see `ftsd::fuzzing::config_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ftsd::fuzzing::config_file(data));
