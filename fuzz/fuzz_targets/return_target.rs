#![no_main]
// See portcullis::fuzzing::return_target for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::return_target(data));
