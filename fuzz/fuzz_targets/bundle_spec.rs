//! `outpost_provision::BundleSpec::parse`, the release engineer's `bundle.toml`, on
//! arbitrary text: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_provision::BundleSpec;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = BundleSpec::parse(text, std::path::Path::new("fuzz/bundle.toml"));
    }
});
