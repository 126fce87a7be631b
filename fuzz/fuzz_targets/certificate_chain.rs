//! Fuzz target `certificate_chain`: see `ftsd::fuzzing::certificate_chain`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ftsd::fuzzing::certificate_chain(data));
