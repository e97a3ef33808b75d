//! Fault frames decode (with the protocol crate's own decoder) to exactly the error
//! the device must answer.

use outpost_hil::faults::{self, FaultKind};
use outpost_protocol::{
    decode_payload, Envelope, FrameDecoder, Request, WireError, FRAME_AUDIO_BYTES, MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
};

/// Feeds bytes; returns every frame outcome (payload bytes or error).
fn decode_all(bytes: &[u8]) -> Vec<Result<Vec<u8>, WireError>> {
    let mut d: FrameDecoder = FrameDecoder::new();
    bytes
        .iter()
        .filter_map(|b| d.push(*b).map(|r| r.map(<[u8]>::to_vec)))
        .collect()
}

fn single_error(bytes: &[u8]) -> WireError {
    let out = decode_all(bytes);
    assert_eq!(out.len(), 1, "one frame expected, got {out:?}");
    out[0].clone().expect_err("frame must be rejected")
}

#[test]
fn valid_frame_round_trips() {
    let f = faults::valid_frame(9, &Request::Ping { nonce: 77 });
    assert_eq!(f.last(), Some(&0));
    let out = decode_all(&f);
    let payload = out[0].as_ref().unwrap();
    let env: Envelope<Request<'_>> = decode_payload(payload).unwrap();
    assert_eq!(env.request_id, 9);
    assert_eq!(env.body, Request::Ping { nonce: 77 });
}

#[test]
fn corrupted_crc() {
    let e = single_error(&faults::bad_crc_frame(3, 1));
    assert!(matches!(e, WireError::BadCrc { received, computed } if received != computed));
    assert!(FaultKind::BadCrc.accepts(&e));
}

#[test]
fn truncated() {
    let e = single_error(&faults::truncated_frame(3, 1));
    assert_eq!(
        e,
        WireError::Truncated {
            len: faults::TRUNCATED_PAYLOAD_BYTES as u16
        }
    );
    assert!(FaultKind::Truncated.accepts(&e));
}

#[test]
fn oversized() {
    let f = faults::oversized_frame();
    assert_eq!(f.len(), 9001);
    assert!(f[..9000].iter().all(|b| *b == 0x55));
    let e = single_error(&f);
    assert_eq!(
        e,
        WireError::FrameTooLong {
            max: MAX_FRAME_BYTES as u16
        }
    );
    assert!(FaultKind::Oversized.accepts(&e));
}

#[test]
fn unknown_version() {
    let f = faults::version_frame(1, 0x1234, 5);
    let out = decode_all(&f);
    let payload = out[0].as_ref().expect("CRC is valid");
    assert_eq!(payload[0], 1);
    let err = decode_payload::<Request<'_>>(payload).unwrap_err();
    assert_eq!(err.request_id, 0x1234);
    assert_eq!(
        err.error,
        WireError::UnknownVersion {
            got: 1,
            supported: PROTOCOL_VERSION
        }
    );
    assert!(FaultKind::UnknownVersion.accepts(&err.error));
    assert!(
        !FaultKind::UnknownVersion.accepts(&WireError::UnknownVersion {
            got: 3,
            supported: 1
        })
    );
}

#[test]
fn wrong_audio_length_is_well_framed() {
    let f = faults::audio_frame(4, 7, 2, faults::SHORT_PCM_BYTES);
    let out = decode_all(&f);
    let env: Envelope<Request<'_>> = decode_payload(out[0].as_ref().unwrap()).unwrap();
    match env.body {
        Request::Audio(a) => {
            assert_eq!((a.stream_id, a.seq), (7, 2));
            assert_eq!(a.pcm.len(), faults::SHORT_PCM_BYTES);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        FaultKind::BadAudioLength.accepts(&WireError::BadAudioLength {
            got: 1000,
            expected: FRAME_AUDIO_BYTES as u16
        })
    );
    assert!(
        !FaultKind::BadAudioLength.accepts(&WireError::BadAudioLength {
            got: 999,
            expected: FRAME_AUDIO_BYTES as u16
        })
    );
}

#[test]
fn out_of_order_frame_is_a_full_valid_frame() {
    let f = faults::audio_frame(5, 7, 1, FRAME_AUDIO_BYTES);
    let out = decode_all(&f);
    let env: Envelope<Request<'_>> = decode_payload(out[0].as_ref().unwrap()).unwrap();
    assert!(
        matches!(env.body, Request::Audio(a) if a.seq == 1 && a.pcm.len() == FRAME_AUDIO_BYTES)
    );
    assert!(FaultKind::OutOfOrder.accepts(&WireError::OutOfOrder {
        stream_id: 7,
        expected: 3,
        got: 1
    }));
}

#[test]
fn decoder_recovers_after_every_fault() {
    // All faults back to back, then a good Ping: the decoder must deliver the Ping.
    let mut stream = Vec::new();
    stream.extend(faults::bad_crc_frame(1, 1));
    stream.extend(faults::truncated_frame(2, 1));
    stream.extend(faults::oversized_frame());
    stream.extend(faults::version_frame(1, 4, 1));
    stream.extend(faults::valid_frame(5, &Request::Ping { nonce: 42 }));
    let out = decode_all(&stream);
    assert_eq!(out.len(), 5);
    assert!(out[..3].iter().all(Result::is_err));
    let env: Envelope<Request<'_>> = decode_payload(out[4].as_ref().unwrap()).unwrap();
    assert_eq!(env.body, Request::Ping { nonce: 42 });
}

#[test]
fn every_fault_has_a_name_and_expectation() {
    for k in FaultKind::ALL {
        assert!(!k.name().is_empty());
        assert!(k.expected().starts_with("Error("));
    }
}
