//! Fuzz target `perf_markers`: see `ftsd::fuzzing::perf_markers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ftsd::fuzzing::perf_markers(data));
