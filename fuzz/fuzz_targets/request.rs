//! libFuzzer entry for the `request` target; the body is `lore_fuzz::request`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lore_fuzz::request(data));
