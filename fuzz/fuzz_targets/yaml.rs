//! libFuzzer entry for the `yaml` target; the body is `lore_fuzz::yaml`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lore_fuzz::yaml(data));
