//! Bad input on the byte stream: every damaged frame yields its explicit error and
//! the decoder recovers at the next delimiter.

use outpost_protocol::*;

fn frame<T: serde::Serialize>(request_id: u32, body: &T) -> Vec<u8> {
    let mut scratch = [0u8; MAX_PAYLOAD_BYTES];
    let mut out = [0u8; MAX_FRAME_BYTES];
    let n = encode_frame(request_id, body, &mut scratch, &mut out).expect("encodes");
    out[..n].to_vec()
}

/// Runs `wire` through a decoder; returns per-frame outcome: Ok(request id) or Err(error).
fn outcomes(wire: &[u8]) -> Vec<Result<u32, WireError>> {
    let mut dec = FrameDecoder::<MAX_FRAME_BYTES>::new();
    let mut out = Vec::new();
    for &b in wire {
        if let Some(r) = dec.push(b) {
            out.push(match r {
                Ok(payload) => match decode_payload::<Request<'_>>(payload) {
                    Ok(env) => Ok(env.request_id),
                    Err(f) => Err(f.error),
                },
                Err(e) => Err(e),
            });
        }
    }
    out
}

fn ping(id: u32) -> Vec<u8> {
    frame(id, &Request::Ping { nonce: id })
}

#[test]
fn corrupt_crc_is_reported_and_next_frame_decodes() {
    let mut bad = ping(1);
    // Flip the top bit of a data byte (byte 0 is the COBS code byte; a data byte of a
    // ping is never 0x80, so the flip cannot create a delimiter).
    bad[3] ^= 0x80;
    let mut wire = bad;
    wire.extend(ping(2));
    let got = outcomes(&wire);
    assert!(matches!(got[0], Err(WireError::BadCrc { .. })), "{got:?}");
    assert_eq!(got[1], Ok(2));
}

#[test]
fn truncated_frame_is_reported_and_next_frame_decodes() {
    let full = frame(
        1,
        &Request::OpenStream(OpenStream {
            stream_id: 1,
            sample_rate_hz: SAMPLE_RATE_HZ,
            frame_samples: FRAME_SAMPLES as u16,
            deadline_us: 0,
        }),
    );
    for cut in [1usize, 3, 5, full.len() - 3] {
        let mut wire = full[..cut].to_vec();
        wire.push(0);
        wire.extend(ping(2));
        let got = outcomes(&wire);
        assert_eq!(got.len(), 2, "cut {cut}: {got:?}");
        assert!(
            matches!(
                got[0],
                Err(WireError::Truncated { .. } | WireError::BadCrc { .. } | WireError::BadCobs)
            ),
            "cut {cut}: {got:?}"
        );
        assert_eq!(got[1], Ok(2), "cut {cut}");
    }
}

#[test]
fn oversized_frame_is_discarded_and_next_frame_decodes() {
    let mut wire = vec![0x55u8; MAX_FRAME_BYTES + 100];
    wire.push(0);
    wire.extend(ping(3));
    let got = outcomes(&wire);
    assert_eq!(
        got[0],
        Err(WireError::FrameTooLong {
            max: MAX_FRAME_BYTES as u16
        })
    );
    assert_eq!(got[1], Ok(3));
}

#[test]
fn input_without_a_delimiter_is_an_error_as_soon_as_it_is_too_long_and_only_once() {
    let mut dec = FrameDecoder::<MAX_FRAME_BYTES>::new();
    let mut errors = Vec::new();
    for i in 0..200_000usize {
        if let Some(r) = dec.push(0x55) {
            errors.push((i, r.map(<[u8]>::len)));
        }
    }
    assert_eq!(
        errors,
        vec![(
            MAX_FRAME_BYTES,
            Err(WireError::FrameTooLong {
                max: MAX_FRAME_BYTES as u16
            })
        )]
    );
    // The delimiter ends the discarded frame without a second answer; the next decodes.
    assert!(dec.push(0).is_none());
    let mut got = Vec::new();
    for b in ping(7) {
        if let Some(r) = dec.push(b) {
            got.push(r.is_ok());
        }
    }
    assert_eq!(got, [true]);
}

#[test]
fn a_v1_client_is_told_both_versions_and_keeps_request_id() {
    // Hand-build what a protocol-v1 client sends: a v1 envelope with a valid CRC.
    let mut payload = vec![1u8, 42, 1, 5]; // version 1, request id 42, Ping, nonce 5
    let crc = CRC32.checksum(&payload);
    payload.extend(crc.to_le_bytes());
    let mut wire = vec![0u8; payload.len() + 8];
    let n = cobs::encode(&payload, &mut wire);
    wire.truncate(n);
    wire.push(0);
    wire.extend(ping(4));
    let mut dec = FrameDecoder::<MAX_FRAME_BYTES>::new();
    let mut failures = Vec::new();
    for &b in &wire {
        if let Some(Ok(p)) = dec.push(b) {
            failures.push(decode_payload::<Request<'_>>(p).map(|e| e.request_id));
        }
    }
    assert_eq!(
        failures[0],
        Err(DecodeFailure {
            request_id: 42,
            error: WireError::UnknownVersion {
                got: 1,
                supported: PROTOCOL_VERSION
            }
        })
    );
    assert_eq!(failures[1], Ok(4));
}

#[test]
fn malformed_body_and_trailing_bytes_are_rejected() {
    let v = PROTOCOL_VERSION;
    for body in [vec![v, 7, 200], vec![v, 7, 1, 5, 99]] {
        // [200] is no Request variant; [..., 99] is a valid Ping followed by a stray byte.
        let mut payload = body.clone();
        payload.extend(CRC32.checksum(&body).to_le_bytes());
        let mut wire = vec![0u8; payload.len() + 8];
        let n = cobs::encode(&payload, &mut wire);
        wire.truncate(n);
        wire.push(0);
        assert_eq!(outcomes(&wire), vec![Err(WireError::Malformed)], "{body:?}");
    }
}

#[test]
fn empty_frames_and_leading_noise_resynchronise() {
    let mut wire = vec![0, 0, 0x13, 0x37, 0];
    wire.extend(ping(5));
    let got = outcomes(&wire);
    assert_eq!(got.len(), 2);
    assert!(got[0].is_err());
    assert_eq!(got[1], Ok(5));
}

#[test]
fn largest_audio_frame_fits_and_round_trips_byte_by_byte() {
    let pcm = vec![0u8; FRAME_AUDIO_BYTES]; // zeros: COBS worst-ish case
    let wire = frame(
        9,
        &Request::Audio(Audio {
            stream_id: 1,
            seq: u32::MAX,
            deadline_us: u32::MAX,
            pcm: &pcm,
        }),
    );
    assert!(wire.len() <= MAX_FRAME_BYTES);
    assert_eq!(outcomes(&wire), vec![Ok(9)]);
}

#[test]
fn encode_refuses_a_buffer_that_is_too_small() {
    let pcm = vec![1u8; FRAME_AUDIO_BYTES];
    let mut scratch = [0u8; 64];
    let mut out = [0u8; MAX_FRAME_BYTES];
    let r = encode_frame(
        1,
        &Request::Audio(Audio {
            stream_id: 1,
            seq: 0,
            deadline_us: 0,
            pcm: &pcm,
        }),
        &mut scratch,
        &mut out,
    );
    assert_eq!(r, Err(FrameError::TooLarge { capacity: 64 }));
}
