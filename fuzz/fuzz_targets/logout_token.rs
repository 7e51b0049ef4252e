#![no_main]
// See portcullis::fuzzing::logout_token for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::logout_token(data));
