#![no_main]
// See portcullis::fuzzing::claims for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::claims(data));
