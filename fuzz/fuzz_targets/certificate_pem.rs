//! Fuzz target `certificate_pem`: see `ftsd::fuzzing::certificate_pem`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ftsd::fuzzing::certificate_pem(data));
