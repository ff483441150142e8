#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkey_device_fuzz::dsmr(data));
