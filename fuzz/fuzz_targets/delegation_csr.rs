//! Fuzz target `delegation_csr`: see `ftsd::fuzzing::delegation_csr`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ftsd::fuzzing::delegation_csr(data));
