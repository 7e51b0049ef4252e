#![no_main]
// See portcullis::fuzzing::canonical_path for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::canonical_path(data));
