//! Hand-built bad frames for fault injection, each with the explicit error the
//! device must answer (docs/DESIGN.md §5: corrupt, oversized, unknown-version and
//! out-of-order input get an explicit error and the connection recovers).

use outpost_protocol::{
    encode_frame, Audio, Request, WireError, CRC32, FRAME_AUDIO_BYTES, MAX_FRAME_BYTES,
    MAX_PAYLOAD_BYTES,
};

/// Length of the oversized fault frame in bytes (before its `0x00` delimiter).
pub const OVERSIZED_LEN: usize = 9000;
/// PCM length of the wrong-length audio fault, in bytes.
pub const SHORT_PCM_BYTES: usize = 1000;
/// Bytes of payload kept by the truncated fault frame (below the 7-byte minimum).
pub const TRUNCATED_PAYLOAD_BYTES: usize = 5;

/// Which fault a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum FaultKind {
    /// A valid Ping whose CRC-32 has one bit flipped.
    BadCrc,
    /// A Ping payload cut to [`TRUNCATED_PAYLOAD_BYTES`], properly COBS-encoded.
    Truncated,
    /// [`OVERSIZED_LEN`] bytes of `0x55`, then `0x00`.
    Oversized,
    /// A Ping in a protocol-v1 envelope (an old client), valid CRC.
    UnknownVersion,
    /// An Audio request with [`SHORT_PCM_BYTES`] of PCM.
    BadAudioLength,
    /// An Audio request repeating an already answered sequence number.
    OutOfOrder,
}

impl FaultKind {
    /// All faults in the order the scenario sends them.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::BadCrc,
        FaultKind::Truncated,
        FaultKind::Oversized,
        FaultKind::UnknownVersion,
        FaultKind::BadAudioLength,
        FaultKind::OutOfOrder,
    ];

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::BadCrc => "corrupted CRC",
            FaultKind::Truncated => "truncated frame",
            FaultKind::Oversized => "oversized frame (9000 B)",
            FaultKind::UnknownVersion => "envelope version 1",
            FaultKind::BadAudioLength => "audio of wrong length",
            FaultKind::OutOfOrder => "out-of-order seq",
        }
    }

    /// What the device must answer, as text for reports.
    pub fn expected(self) -> &'static str {
        match self {
            FaultKind::BadCrc => "Error(BadCrc)",
            FaultKind::Truncated => "Error(Truncated) or Error(BadCrc)",
            FaultKind::Oversized => "Error(FrameTooLong)",
            FaultKind::UnknownVersion => "Error(UnknownVersion { got: 1 })",
            FaultKind::BadAudioLength => "Error(BadAudioLength { got: 1000, expected: 2560 })",
            FaultKind::OutOfOrder => "Error(OutOfOrder)",
        }
    }

    /// True when `e` is an acceptable answer to this fault.
    pub fn accepts(self, e: &WireError) -> bool {
        match self {
            FaultKind::BadCrc => matches!(e, WireError::BadCrc { .. }),
            FaultKind::Truncated => {
                matches!(e, WireError::Truncated { .. } | WireError::BadCrc { .. })
            }
            FaultKind::Oversized => matches!(e, WireError::FrameTooLong { .. }),
            FaultKind::UnknownVersion => matches!(e, WireError::UnknownVersion { got: 1, .. }),
            FaultKind::BadAudioLength => matches!(
                e,
                WireError::BadAudioLength { got, expected }
                    if usize::from(*got) == SHORT_PCM_BYTES
                        && usize::from(*expected) == FRAME_AUDIO_BYTES
            ),
            FaultKind::OutOfOrder => matches!(e, WireError::OutOfOrder { .. }),
        }
    }
}

/// Encodes a request as a valid wire frame (COBS, CRC, `0x00`).
///
/// # Panics
/// If the request does not fit a frame (every request built in this module fits).
pub fn valid_frame(request_id: u32, request: &Request<'_>) -> Vec<u8> {
    let mut scratch = vec![0u8; MAX_PAYLOAD_BYTES];
    let mut out = vec![0u8; MAX_FRAME_BYTES];
    let n =
        encode_frame(request_id, request, &mut scratch, &mut out).expect("request fits one frame");
    out.truncate(n);
    out
}

/// The payload (postcard bytes ‖ CRC-32 LE) inside a valid frame.
///
/// # Panics
/// If `frame` is not one COBS frame ending in `0x00`.
pub fn frame_payload(frame: &[u8]) -> Vec<u8> {
    let body = frame.strip_suffix(&[0]).expect("frame ends with 0x00");
    let mut buf = body.to_vec();
    let n = cobs::decode_in_place(&mut buf).expect("valid COBS");
    buf.truncate(n);
    buf
}

/// COBS-encodes `payload` and appends the `0x00` delimiter.
pub fn cobs_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; cobs::max_encoding_length(payload.len()) + 1];
    let n = cobs::encode(payload, &mut out);
    out[n] = 0;
    out.truncate(n + 1);
    out
}

/// A Ping with one bit of its CRC-32 flipped.
pub fn bad_crc_frame(request_id: u32, nonce: u32) -> Vec<u8> {
    let mut payload = frame_payload(&valid_frame(request_id, &Request::Ping { nonce }));
    let last = payload.len() - 1;
    payload[last] ^= 0x01;
    cobs_frame(&payload)
}

/// A Ping payload cut to [`TRUNCATED_PAYLOAD_BYTES`] bytes (a frame whose tail was lost).
pub fn truncated_frame(request_id: u32, nonce: u32) -> Vec<u8> {
    let payload = frame_payload(&valid_frame(request_id, &Request::Ping { nonce }));
    cobs_frame(&payload[..TRUNCATED_PAYLOAD_BYTES.min(payload.len())])
}

/// [`OVERSIZED_LEN`] bytes of `0x55` followed by `0x00`.
pub fn oversized_frame() -> Vec<u8> {
    let mut f = vec![0x55u8; OVERSIZED_LEN];
    f.push(0);
    f
}

/// A Ping in an envelope of version `version` with a correct CRC: payload =
/// `[version, request_id (postcard varint), Ping tag, nonce] ‖ CRC-32 LE`.
pub fn version_frame(version: u8, request_id: u32, nonce: u32) -> Vec<u8> {
    let mut payload = frame_payload(&valid_frame(request_id, &Request::Ping { nonce }));
    payload.truncate(payload.len() - 4);
    payload[0] = version;
    let crc = CRC32.checksum(&payload);
    payload.extend_from_slice(&crc.to_le_bytes());
    cobs_frame(&payload)
}

/// An Audio request on `stream_id` with `pcm_bytes` bytes of silence.
pub fn audio_frame(request_id: u32, stream_id: u16, seq: u32, pcm_bytes: usize) -> Vec<u8> {
    let pcm = vec![0u8; pcm_bytes];
    valid_frame(
        request_id,
        &Request::Audio(Audio {
            stream_id,
            seq,
            deadline_us: 0,
            pcm: &pcm,
        }),
    )
}
