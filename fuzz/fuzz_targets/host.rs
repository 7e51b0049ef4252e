#![no_main]
// See portcullis::fuzzing::host for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::host(data));
