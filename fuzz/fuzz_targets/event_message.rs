#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkey_fuzz::event_message(data));
