#![no_main]
// See portcullis::fuzzing::login_state_cookie for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::login_state_cookie(data));
