//! COBS + postcard + CRC-32 framing, with caller-provided buffers only.

use serde::{Deserialize, Serialize};

use crate::{Envelope, WireError, MAX_FRAME_BYTES, MAX_PAYLOAD_BYTES, PROTOCOL_VERSION};

/// CRC-32/ISO-HDLC (the zlib/Ethernet CRC-32), appended little-endian to the payload.
pub const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Smallest valid payload in bytes: version (1) + request id (≥ 1) + body tag (≥ 1) + CRC (4).
const MIN_PAYLOAD_BYTES: usize = 7;

/// Why a frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The message does not fit in [`MAX_PAYLOAD_BYTES`] or in the caller's buffer.
    TooLarge {
        /// Bytes available.
        capacity: usize,
    },
    /// postcard refused the value (e.g. a string longer than the format allows).
    Serialize,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::TooLarge { capacity } => {
                write!(
                    f,
                    "message does not fit the frame buffer of {capacity} bytes"
                )
            }
            FrameError::Serialize => f.write_str("message could not be serialised"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FrameError {}

/// Encodes `body` as one wire frame (COBS-encoded, CRC-protected, `0x00`-terminated)
/// into `out`, using `scratch` for the intermediate postcard bytes.
///
/// `scratch` needs the postcard size + 4 bytes ([`MAX_PAYLOAD_BYTES`] always
/// suffices); `out` needs [`MAX_FRAME_BYTES`] for the largest message.
/// Returns the number of bytes of `out` to send.
///
/// # Errors
/// [`FrameError::TooLarge`] when the message exceeds [`MAX_PAYLOAD_BYTES`] or either
/// buffer; [`FrameError::Serialize`] when postcard refuses the value.
pub fn encode_frame<T: Serialize>(
    request_id: u32,
    body: &T,
    scratch: &mut [u8],
    out: &mut [u8],
) -> Result<usize, FrameError> {
    let envelope = Envelope {
        version: PROTOCOL_VERSION,
        request_id,
        body,
    };
    let cap = scratch.len().min(MAX_PAYLOAD_BYTES);
    if cap < 4 {
        return Err(FrameError::TooLarge { capacity: cap });
    }
    let used = match postcard::to_slice(&envelope, &mut scratch[..cap - 4]) {
        Ok(s) => s.len(),
        Err(postcard::Error::SerializeBufferFull) => {
            return Err(FrameError::TooLarge { capacity: cap })
        }
        Err(_) => return Err(FrameError::Serialize),
    };
    let crc = CRC32.checksum(&scratch[..used]);
    scratch[used..used + 4].copy_from_slice(&crc.to_le_bytes());
    let payload = &scratch[..used + 4];
    if out.len() < cobs::max_encoding_length(payload.len()) + 1 {
        return Err(FrameError::TooLarge {
            capacity: out.len(),
        });
    }
    let n = cobs::encode(payload, out);
    out[n] = 0;
    Ok(n + 1)
}

/// Reassembles frames from a byte stream, one byte at a time, with a fixed buffer of
/// `N` bytes (default [`MAX_FRAME_BYTES`]). Resynchronises at every `0x00`.
#[derive(Debug)]
pub struct FrameDecoder<const N: usize = MAX_FRAME_BYTES> {
    buf: [u8; N],
    len: usize,
    overflow: bool,
}

impl<const N: usize> Default for FrameDecoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameDecoder<N> {
    /// An empty decoder.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            overflow: false,
        }
    }

    /// Bytes buffered towards the next frame.
    pub fn pending(&self) -> usize {
        self.len
    }

    /// Feeds one byte. At each frame delimiter returns `Some`: the payload (postcard
    /// bytes, CRC checked and stripped) or the [`WireError`] that spoiled the frame.
    /// Empty frames are skipped. Other bytes return `None`, except the first byte past
    /// `N` without a delimiter: it returns [`WireError::FrameTooLong`] at once (so input
    /// that never sends a delimiter is an error the moment it is one, not never), and
    /// the rest up to the next delimiter is discarded without another answer.
    ///
    /// # Errors
    /// [`WireError::FrameTooLong`], [`WireError::BadCobs`], [`WireError::Truncated`] or
    /// [`WireError::BadCrc`]; the decoder is ready for the next frame either way.
    pub fn push(&mut self, byte: u8) -> Option<Result<&[u8], WireError>> {
        if byte != 0 {
            if self.len < N {
                self.buf[self.len] = byte;
                self.len += 1;
            } else if !core::mem::replace(&mut self.overflow, true) {
                return Some(Err(WireError::FrameTooLong {
                    max: N.min(u16::MAX as usize) as u16,
                }));
            }
            return None;
        }
        let len = core::mem::replace(&mut self.len, 0);
        if core::mem::replace(&mut self.overflow, false) {
            return None;
        }
        if len == 0 {
            return None;
        }
        Some(check_payload(&mut self.buf[..len]))
    }
}

fn check_payload(encoded: &mut [u8]) -> Result<&[u8], WireError> {
    let n = cobs::decode_in_place(encoded).map_err(|_| WireError::BadCobs)?;
    if n < MIN_PAYLOAD_BYTES {
        return Err(WireError::Truncated { len: n as u16 });
    }
    let (body, crc) = encoded[..n].split_at(n - 4);
    let received = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = CRC32.checksum(body);
    if received != computed {
        return Err(WireError::BadCrc { received, computed });
    }
    Ok(body)
}

/// A payload that passed the CRC but is not a message this side accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeFailure {
    /// The request id, when it could be read (else 0), so the error can be matched.
    pub request_id: u32,
    /// What was wrong.
    pub error: WireError,
}

/// Parses a payload returned by [`FrameDecoder::push`] into an [`Envelope`].
/// The body borrows from `payload` (audio is not copied).
///
/// # Errors
/// [`WireError::UnknownVersion`] when the first byte is not [`PROTOCOL_VERSION`];
/// [`WireError::Malformed`] when the bytes are not exactly one `T`.
pub fn decode_payload<'a, T: Deserialize<'a>>(
    payload: &'a [u8],
) -> Result<Envelope<T>, DecodeFailure> {
    let version = payload.first().copied().unwrap_or(0);
    if version != PROTOCOL_VERSION {
        let request_id = payload
            .get(1..)
            .and_then(|rest| postcard::take_from_bytes::<u32>(rest).ok())
            .map_or(0, |(id, _)| id);
        return Err(DecodeFailure {
            request_id,
            error: WireError::UnknownVersion {
                got: version,
                supported: PROTOCOL_VERSION,
            },
        });
    }
    match postcard::take_from_bytes::<Envelope<T>>(payload) {
        Ok((env, [])) => Ok(env),
        Ok((env, _trailing)) => Err(DecodeFailure {
            request_id: env.request_id,
            error: WireError::Malformed,
        }),
        Err(_) => Err(DecodeFailure {
            request_id: payload
                .get(1..)
                .and_then(|rest| postcard::take_from_bytes::<u32>(rest).ok())
                .map_or(0, |(id, _)| id),
            error: WireError::Malformed,
        }),
    }
}

/// Compile-time check that an audio frame fits a payload.
const _: () = assert!(crate::FRAME_AUDIO_BYTES + 32 <= MAX_PAYLOAD_BYTES);
const _: () = assert!(MAX_FRAME_BYTES <= u16::MAX as usize);
