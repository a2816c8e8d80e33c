//! libFuzzer entry for the `jsonl` target; the body is `lore_fuzz::jsonl`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lore_fuzz::jsonl(data));
