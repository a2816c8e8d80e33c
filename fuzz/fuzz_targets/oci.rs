//! libFuzzer entry for the `oci` target; the body is `lore_fuzz::oci_manifest`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lore_fuzz::oci_manifest(data));
