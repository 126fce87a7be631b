//! Fuzz target `delegation_put`: see `ftsd::fuzzing::delegation_put`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ftsd::fuzzing::delegation_put(data));
