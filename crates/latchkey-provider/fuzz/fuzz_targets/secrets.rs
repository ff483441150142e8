#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkey_provider_fuzz::secrets(data));
