#![no_main]
// See portcullis::fuzzing::callback_query for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::callback_query(data));
