//! `outpost_client::wav::read_audio_from`, what `outpost send -` reads from stdin (a WAV
//! with its header, or raw s16le), on arbitrary bytes: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = outpost_client::wav::read_audio_from(data, "-");
});
