#![no_main]
// See portcullis::fuzzing::config for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::config(data));
