//! libFuzzer entry for the `resume_json` target; the body is `lore_fuzz::resume_json`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lore_fuzz::resume_json(data));
