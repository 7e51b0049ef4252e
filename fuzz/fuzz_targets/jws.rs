#![no_main]
// See portcullis::fuzzing::jws for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::jws(data));
