#![no_main]
// See portcullis::fuzzing::session_cookie for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::session_cookie(data));
