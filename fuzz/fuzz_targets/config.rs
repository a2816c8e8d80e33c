//! libFuzzer entry for the `config` target; the body is `lore_fuzz::config`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lore_fuzz::config(data));
