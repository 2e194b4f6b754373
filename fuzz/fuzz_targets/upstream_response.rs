#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollbooth_fuzz::upstream_response(data));
