//! libFuzzer entry for the `markdown` target; the body is `lore_fuzz::markdown`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lore_fuzz::markdown(data));
