//! Outpost wire protocol v2: the contract between the appliance (`outpostd`), its
//! clients (`outpost` CLI, the HIL rig) and field-device firmware.
//!
//! `#![no_std]` and allocation-free: an MCU can encode requests and decode responses
//! with fixed buffers. docs/DESIGN.md §5 is the specification; this crate is its code.
//!
//! # Framing
//! `frame = COBS(postcard(Envelope) ‖ CRC-32/ISO-HDLC(le)) ‖ 0x00`
//!
//! * [`Envelope`] = `{ version: u8, request_id: u32, body }`, version first so an
//!   unknown version can be named in the error before the body is parsed.
//! * CRC-32 is the ISO-HDLC polynomial (zlib's `crc32`), over the postcard bytes,
//!   appended little-endian.
//! * A frame is at most [`MAX_FRAME_BYTES`] on the wire; the decoder discards longer
//!   input up to the next delimiter and reports [`WireError::FrameTooLong`].
//! * An empty frame (two delimiters in a row) is ignored: a sender may emit `0x00`
//!   to resynchronise.
#![no_std]
#![deny(missing_docs)]

#[cfg(feature = "std")]
#[macro_use]
extern crate std;

#[cfg(feature = "std")]
pub mod client;
mod frame;
mod message;

pub use frame::{decode_payload, encode_frame, DecodeFailure, FrameDecoder, FrameError, CRC32};
pub use message::*;

/// Protocol version spoken by this crate. Sent first in every [`Envelope`]; a peer
/// speaking another version is answered `Error(WireError::UnknownVersion)`.
///
/// v2 added the error-throttling counters at the end of [`StatusReport`]. v3 (this
/// version) adds stage 2, the verifier: [`Response::Verification`], the stages
/// [`Stage::VerifyTotal`], `verify_deadline_us` at the end of [`HelloAck`] and the
/// verification counters at the end of [`StatusReport`]; everything else is encoded as
/// in v1.
pub const PROTOCOL_VERSION: u8 = 3;
/// Audio sample rate in Hz; the only rate the protocol accepts.
pub const SAMPLE_RATE_HZ: u32 = 16_000;
/// Samples per audio frame: 80 ms at 16 kHz (openWakeWord's chunk size).
pub const FRAME_SAMPLES: usize = 1280;
/// Bytes of s16le PCM in one audio frame (`FRAME_SAMPLES * 2`).
pub const FRAME_AUDIO_BYTES: usize = FRAME_SAMPLES * 2;
/// Largest decoded payload (postcard bytes + 4-byte CRC). One audio frame
/// (2 560 bytes of PCM + ~20 bytes of header) fits with room to spare.
pub const MAX_PAYLOAD_BYTES: usize = 3072;
/// Largest frame on the wire in bytes: COBS worst case of [`MAX_PAYLOAD_BYTES`]
/// plus the `0x00` delimiter.
pub const MAX_FRAME_BYTES: usize = cobs::max_encoding_length(MAX_PAYLOAD_BYTES) + 1;
/// Default per-request deadline in µs (docs/DESIGN.md §4).
pub const DEFAULT_DEADLINE_US: u32 = 30_000;
/// Longest free-text `detail` the device puts in a `Status` or `Reloaded` answer, in
/// bytes: with the rest of a status report it stays well inside [`MAX_PAYLOAD_BYTES`].
/// Longer reasons (a safe-mode error chain) are cut at a character boundary.
pub const MAX_DETAIL_BYTES: usize = 1024;
/// Most labels a bundle may announce in the handshake.
pub const MAX_LABELS: usize = 32;
/// Most pipeline stages reported in status (every [`Stage`] fits: 10 of them).
pub const MAX_STAGES: usize = 12;
