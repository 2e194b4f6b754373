#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tollbooth_fuzz::request_anthropic(data));
