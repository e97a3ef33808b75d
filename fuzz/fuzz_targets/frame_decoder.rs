//! The frame decoder and message decoding of `outpost-protocol` on arbitrary bytes: the
//! byte stream a field device or a hostile socket client sends. Every frame that decodes
//! as a request or a response must encode again to a frame that decodes to the same
//! message; nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::{
    decode_payload, encode_frame, FrameDecoder, Request, Response, MAX_FRAME_BYTES,
    MAX_PAYLOAD_BYTES,
};

/// The payload of the first frame in `wire`.
fn first_payload(wire: &[u8]) -> Vec<u8> {
    let mut dec = FrameDecoder::<MAX_FRAME_BYTES>::new();
    for &b in wire {
        if let Some(r) = dec.push(b) {
            return r.expect("an encoded frame is valid").to_vec();
        }
    }
    panic!("an encoded frame ends with a delimiter");
}

fuzz_target!(|data: &[u8]| {
    let mut dec = FrameDecoder::<MAX_FRAME_BYTES>::new();
    let mut scratch = [0u8; MAX_PAYLOAD_BYTES];
    let mut out = [0u8; MAX_FRAME_BYTES];
    for &b in data {
        let Some(Ok(payload)) = dec.push(b) else {
            continue;
        };
        let payload = payload.to_vec();
        if let Ok(env) = decode_payload::<Request<'_>>(&payload) {
            let n = encode_frame(env.request_id, &env.body, &mut scratch, &mut out)
                .expect("a decoded request encodes");
            let back = first_payload(&out[..n]);
            let env2 = decode_payload::<Request<'_>>(&back).expect("re-decodes");
            assert_eq!(format!("{env2:?}"), format!("{env:?}"));
        }
        if let Ok(env) = decode_payload::<Response<'_>>(&payload) {
            let n = encode_frame(env.request_id, &env.body, &mut scratch, &mut out)
                .expect("a decoded response encodes");
            let back = first_payload(&out[..n]);
            let env2 = decode_payload::<Response<'_>>(&back).expect("re-decodes");
            // Compared as text: a NaN score must round-trip too, and NaN != NaN.
            assert_eq!(format!("{env2:?}"), format!("{env:?}"));
        };
    }
});
