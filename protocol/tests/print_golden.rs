//! Prints the golden table (run with `--ignored --nocapture`) when the format changes
//! on purpose; paste the output into `golden_cases.rs`.
use outpost_protocol::*;
include!("shared/cases_src.rs");

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
fn frame<T: serde::Serialize>(request_id: u32, body: &T) -> Vec<u8> {
    let mut scratch = [0u8; MAX_PAYLOAD_BYTES];
    let mut out = [0u8; MAX_FRAME_BYTES];
    let n = encode_frame(request_id, body, &mut scratch, &mut out).unwrap();
    out[..n].to_vec()
}

#[test]
#[ignore = "generator for golden_cases.rs, not a test"]
fn print_golden_table() {
    let pcm = audio_pcm();
    for (name, id, m) in requests(&pcm) {
        println!("(\"{name}\", \"{}\"),", hex(&frame(id, &m)));
    }
    for (name, id, m) in responses() {
        println!("(\"{name}\", \"{}\"),", hex(&frame(id, &m)));
    }
}
