//! `outpost_models::verify_bundle` on arbitrary bytes, with the development key trusted
//! and development bundles allowed, so the fuzzer can reach every check after the
//! signature when it mutates a real bundle (the dev bundle seeds the corpus at run time).
//! A bad bundle must be an error, never a panic, a hang or an allocation the caps forbid.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use outpost_models::{verify_bundle, TrustedKeys, VerifyOptions};

fn keys() -> &'static TrustedKeys {
    static KEYS: OnceLock<TrustedKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/reference/dev-keys");
        TrustedKeys::load_dir(&dir).expect("the dev keys load")
    })
}

fuzz_target!(|data: &[u8]| {
    let opts = VerifyOptions {
        allow_development: true,
        expected_compatible: None,
    };
    let _ = verify_bundle(data, keys(), &opts);
});
