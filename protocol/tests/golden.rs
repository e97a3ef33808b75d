//! Golden-byte tests: pin the exact wire encoding of every message so that a change
//! to the format is a deliberate, visible act (as postcard-rpc does for its ICD).
//!
//! Each case: a message, the exact frame bytes (COBS(postcard ‖ CRC-32) ‖ 0x00) in
//! hex, and a decode of those bytes back to the same message.

use outpost_protocol::*;

fn frame<T: serde::Serialize>(request_id: u32, body: &T) -> Vec<u8> {
    let mut scratch = [0u8; MAX_PAYLOAD_BYTES];
    let mut out = [0u8; MAX_FRAME_BYTES];
    let n = encode_frame(request_id, body, &mut scratch, &mut out).expect("encodes");
    out[..n].to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds `wire` to a fresh decoder and returns the single payload it yields.
fn payload_of(wire: &[u8]) -> Vec<u8> {
    let mut dec = FrameDecoder::<MAX_FRAME_BYTES>::new();
    let mut got = Vec::new();
    for &b in wire {
        if let Some(r) = dec.push(b) {
            got.push(r.expect("valid frame").to_vec());
        }
    }
    assert_eq!(got.len(), 1, "exactly one frame");
    got.pop().unwrap()
}

fn check_request(name: &str, id: u32, msg: Request<'_>, golden: &str) {
    let wire = frame(id, &msg);
    assert_eq!(hex(&wire), golden, "{name}: encoding changed");
    let payload = payload_of(&wire);
    let env: Envelope<Request<'_>> = decode_payload(&payload).expect("decodes");
    assert_eq!(env.version, PROTOCOL_VERSION);
    assert_eq!(env.request_id, id);
    assert_eq!(env.body, msg, "{name}: round trip");
}

fn check_response(name: &str, id: u32, msg: Response<'_>, golden: &str) {
    let wire = frame(id, &msg);
    assert_eq!(hex(&wire), golden, "{name}: encoding changed");
    let payload = payload_of(&wire);
    let env: Envelope<Response<'_>> = decode_payload(&payload).expect("decodes");
    assert_eq!(env.request_id, id);
    assert_eq!(env.body, msg, "{name}: round trip");
}

include!("shared/golden_cases.rs");
