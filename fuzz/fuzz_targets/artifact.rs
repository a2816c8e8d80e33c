//! libFuzzer entry for the `artifact` target; the body is `lore_fuzz::artifact`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lore_fuzz::artifact(data));
