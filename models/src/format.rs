//! Bundle file formats v1 and v2: layout, constants, caps, and the low-level readers.
//!
//! ```text
//! offset        size           field
//! 0             8              magic b"OUTPOSTB"
//! 8             2              format_version, u16 LE = 1 or 2
//! 10            2              flags, u16 LE = 0
//! 12            4              manifest_len, u32 LE, 1..=65536
//! 16            4              reserved, u32 LE = 0
//! 20            4              reserved, u32 LE = 0
//! 24            manifest_len   manifest, postcard-encoded `Manifest`
//! 24+m          8              key id: SHA-256(raw Ed25519 public key)[..8]
//! 32+m          64             Ed25519 signature over SIGNING_TAG ‖ manifest bytes
//! 96+m          Σ files.len    payload: files concatenated in `manifest.files` order
//! ```
//!
//! Nothing may follow the last file. Format v2 differs from v1 only in the manifest (one
//! more field at its end, the stage-2 verifier) and the signing tag
//! (`outpost-bundle-v2\0`); a bundle without a verifier is still written as v1, so older
//! devices keep reading it. See the crate README for the full description.

use std::io::{self, Read};

use crate::error::BundleError;
use crate::keys::KeyId;
use crate::manifest::Manifest;

/// The 8 magic bytes at offset 0.
pub const MAGIC: [u8; 8] = *b"OUTPOSTB";
/// The newest format version this build reads and writes (v2: manifests with a stage-2
/// verifier). A manifest without a verifier is written as v1 ([`MIN_FORMAT_VERSION`]).
pub const FORMAT_VERSION: u16 = 2;
/// The oldest format version this build reads.
pub const MIN_FORMAT_VERSION: u16 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 24;
/// Signature block length in bytes: key id (8) + Ed25519 signature (64).
pub const SIGNATURE_BLOCK_LEN: usize = 72;
/// Key id length in bytes.
pub const KEY_ID_LEN: usize = 8;
/// Ed25519 signature length in bytes.
pub const SIGNATURE_LEN: usize = 64;
/// Domain-separation tag prepended to a v1 manifest's bytes to form the signed message.
pub const SIGNING_TAG: &[u8] = b"outpost-bundle-v1\0";
/// Domain-separation tag of format v2: a v2 manifest's signature never verifies under a
/// header that claims v1, or the other way round.
pub const SIGNING_TAG_V2: &[u8] = b"outpost-bundle-v2\0";

/// Largest manifest, in bytes (64 KiB).
pub const MAX_MANIFEST_LEN: u32 = 64 * 1024;
/// Most payload files in one bundle.
pub const MAX_FILES: usize = 32;
/// Largest single payload file, in bytes (64 MiB).
pub const MAX_FILE_LEN: u64 = 64 * 1024 * 1024;
/// Largest payload (sum of all files), in bytes (256 MiB).
pub const MAX_PAYLOAD_LEN: u64 = 256 * 1024 * 1024;
/// Longest file name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest string in the manifest (name, compatible, labels, tensor names, ...), in bytes.
pub const MAX_STRING_LEN: usize = 64;
/// Most head labels (and per-label thresholds): the wire limit of the handshake
/// ([`outpost_protocol::MAX_LABELS`], 32). One constant for the bundle, the runtime's
/// decision and the wire, so a bundle the device cannot announce is refused when it is
/// built, verified or installed, not at boot.
pub const MAX_LABELS: usize = outpost_protocol::MAX_LABELS;
/// Audio sample rate in Hz every v1 pipeline runs at: the protocol's
/// ([`outpost_protocol::SAMPLE_RATE_HZ`], 16 000).
pub const SAMPLE_RATE_HZ: u32 = outpost_protocol::SAMPLE_RATE_HZ;
/// Samples per streamed frame every v1 pipeline takes: the protocol's
/// ([`outpost_protocol::FRAME_SAMPLES`], 1280 = 80 ms at 16 kHz).
pub const FRAME_SAMPLES: u32 = outpost_protocol::FRAME_SAMPLES as u32;
/// Longest head window, in embeddings (the runtime keeps at most 64 per stream).
pub const MAX_HEAD_WINDOW: u32 = 64;
/// Longest score smoothing window, in frames (the runtime's decision keeps 16 per stream).
pub const MAX_SMOOTHING_FRAMES: u32 = 16;
/// Most self tests.
pub const MAX_SELF_TESTS: usize = 16;
/// Most input (or output) tensor names per model stage.
pub const MAX_TENSORS_PER_STAGE: usize = 16;
/// Largest valid bundle file, in bytes: header, largest manifest, signature block and
/// largest payload.
pub const MAX_BUNDLE_LEN: u64 =
    HEADER_LEN as u64 + MAX_MANIFEST_LEN as u64 + SIGNATURE_BLOCK_LEN as u64 + MAX_PAYLOAD_LEN;
/// Chunk size, in bytes, in which payload files are streamed through SHA-256.
pub const CHUNK_LEN: usize = 64 * 1024;

/// Tensor names the runtime feeds and reads per model stage, as `(inputs, outputs)`:
/// Silero VAD takes `input`, `state`, `sr` and gives `output`, `stateN`; the mel,
/// embedding and head models take one tensor and give one. Checked by
/// [`Manifest::check_runtime`](crate::manifest::Manifest::check_runtime).
pub const STAGE_TENSORS: [(&str, usize, usize); 4] = [
    ("pipeline.vad", 3, 2),
    ("pipeline.mel", 1, 1),
    ("pipeline.embedding", 1, 1),
    ("pipeline.head", 1, 1),
];

/// Tensor names the runtime feeds and reads per verifier stage, as `(inputs, outputs)`:
/// mel `audio` → `log_mel`; encoder `log_mel` → `encoder_states`; decoder
/// `encoder_states`, `tokens`, `targets`, `mask` → `score`.
pub const VERIFIER_TENSORS: [(&str, usize, usize); 3] = [
    ("verifier.mel", 1, 1),
    ("verifier.encoder", 1, 1),
    ("verifier.decoder", 4, 1),
];
/// Longest token sequence (prompt + candidate + end of text) a verifier may score;
/// Whisper's decoder has 448 positions, a command needs a handful.
pub const MAX_SEQUENCE_TOKENS: usize = 64;
/// Longest verifier window, in samples (30 s at 16 kHz: Whisper's input).
pub const MAX_VERIFIER_WINDOW: u32 = 480_000;
/// Longest verification deadline a bundle may set, in ms.
pub const MAX_VERIFY_DEADLINE_MS: u32 = 10_000;
/// Longest wait for the end of a trigger's utterance a bundle may set, in ms.
pub const MAX_VERIFY_WAIT_MS: u32 = 2_000;

// A detection names its label by a `u8` index on the wire.
const _: () = assert!(MAX_LABELS <= u8::MAX as usize + 1);

/// The fixed 24-byte header. Only `format_version` and `manifest_len` vary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version, [`MIN_FORMAT_VERSION`]..=[`FORMAT_VERSION`].
    pub format_version: u16,
    /// Flags; none are defined in v1, must be 0.
    pub flags: u16,
    /// Length of the encoded manifest, in bytes.
    pub manifest_len: u32,
}

impl Header {
    /// A header for a manifest of `manifest_len` bytes in format `format_version`.
    #[must_use]
    pub fn new(format_version: u16, manifest_len: u32) -> Self {
        Self {
            format_version,
            flags: 0,
            manifest_len,
        }
    }

    /// The 24 header bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&self.format_version.to_le_bytes());
        out[10..12].copy_from_slice(&self.flags.to_le_bytes());
        out[12..16].copy_from_slice(&self.manifest_len.to_le_bytes());
        // 16..24: reserved, zero.
        out
    }

    /// Parses and checks 24 header bytes: magic, version, flags, reserved fields, and
    /// `1 <= manifest_len <= MAX_MANIFEST_LEN`.
    ///
    /// # Errors
    /// [`BundleError::BadMagic`], [`BundleError::UnsupportedVersion`],
    /// [`BundleError::UnsupportedFlags`], [`BundleError::ReservedNotZero`],
    /// [`BundleError::ManifestLength`].
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, BundleError> {
        let le16 = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        let le32 =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&bytes[..8]);
        if magic != MAGIC {
            return Err(BundleError::BadMagic { found: magic });
        }
        let format_version = le16(8);
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&format_version) {
            return Err(BundleError::UnsupportedVersion {
                found: format_version,
                min: MIN_FORMAT_VERSION,
                max: FORMAT_VERSION,
            });
        }
        let flags = le16(10);
        if flags != 0 {
            return Err(BundleError::UnsupportedFlags { found: flags });
        }
        for reserved in [le32(16), le32(20)] {
            if reserved != 0 {
                return Err(BundleError::ReservedNotZero { found: reserved });
            }
        }
        let manifest_len = le32(12);
        if manifest_len == 0 || manifest_len > MAX_MANIFEST_LEN {
            return Err(BundleError::ManifestLength {
                len: manifest_len,
                max: MAX_MANIFEST_LEN,
            });
        }
        Ok(Self {
            format_version,
            flags,
            manifest_len,
        })
    }
}

/// The 72-byte signature block that follows the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureBlock {
    /// Id of the key that signed ([`KeyId::of_public_key`]).
    pub key_id: KeyId,
    /// Ed25519 signature over [`signed_message`].
    pub signature: [u8; SIGNATURE_LEN],
}

impl SignatureBlock {
    /// The 72 bytes: key id then signature.
    #[must_use]
    pub fn encode(&self) -> [u8; SIGNATURE_BLOCK_LEN] {
        let mut out = [0u8; SIGNATURE_BLOCK_LEN];
        out[..KEY_ID_LEN].copy_from_slice(&self.key_id.0);
        out[KEY_ID_LEN..].copy_from_slice(&self.signature);
        out
    }

    /// Splits 72 bytes into key id and signature (no checks: the signature is verified later).
    #[must_use]
    pub fn decode(bytes: &[u8; SIGNATURE_BLOCK_LEN]) -> Self {
        let mut key_id = [0u8; KEY_ID_LEN];
        key_id.copy_from_slice(&bytes[..KEY_ID_LEN]);
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(&bytes[KEY_ID_LEN..]);
        Self {
            key_id: KeyId(key_id),
            signature,
        }
    }
}

/// The message that is signed: the version's tag ([`SIGNING_TAG`] for v1,
/// [`SIGNING_TAG_V2`] for v2) followed by the exact manifest bytes.
#[must_use]
pub fn signed_message(format_version: u16, manifest_bytes: &[u8]) -> Vec<u8> {
    let tag = if format_version >= 2 {
        SIGNING_TAG_V2
    } else {
        SIGNING_TAG
    };
    let mut msg = Vec::with_capacity(tag.len() + manifest_bytes.len());
    msg.extend_from_slice(tag);
    msg.extend_from_slice(manifest_bytes);
    msg
}

/// Everything before the payload, read but NOT verified.
#[derive(Debug, Clone)]
pub struct BundleHead {
    /// The checked header.
    pub header: Header,
    /// The raw manifest bytes (`header.manifest_len` of them); untrusted until the signature verifies.
    pub manifest_bytes: Vec<u8>,
    /// The signature block.
    pub signature: SignatureBlock,
}

impl BundleHead {
    /// Offset of the first payload byte, in bytes from the start of the bundle.
    #[must_use]
    pub fn payload_offset(&self) -> u64 {
        (HEADER_LEN + SIGNATURE_BLOCK_LEN) as u64 + u64::from(self.header.manifest_len)
    }
}

/// Reads header, manifest bytes (bounded by [`MAX_MANIFEST_LEN`]) and signature block.
/// Verifies nothing cryptographically: use [`crate::verify::verify_bundle`] for that.
///
/// # Errors
/// Header errors (see [`Header::decode`]), [`BundleError::Truncated`] when the input
/// ends early, [`BundleError::Io`] on other read errors.
pub fn read_head<R: Read>(reader: &mut R) -> Result<BundleHead, BundleError> {
    let mut header_bytes = [0u8; HEADER_LEN];
    read_section(reader, &mut header_bytes, "header", 0)?;
    let header = Header::decode(&header_bytes)?;

    let mut manifest_bytes = vec![0u8; header.manifest_len as usize];
    read_section(reader, &mut manifest_bytes, "manifest", HEADER_LEN as u64)?;

    let mut sig_bytes = [0u8; SIGNATURE_BLOCK_LEN];
    let sig_start = HEADER_LEN as u64 + u64::from(header.manifest_len);
    read_section(reader, &mut sig_bytes, "signature block", sig_start)?;

    Ok(BundleHead {
        header,
        manifest_bytes,
        signature: SignatureBlock::decode(&sig_bytes),
    })
}

/// Fills `buf` from `reader`; `start` is the section's offset in the bundle (for errors).
fn read_section<R: Read>(
    reader: &mut R,
    buf: &mut [u8],
    section: &'static str,
    start: u64,
) -> Result<(), BundleError> {
    let got = read_full(reader, buf).map_err(|source| BundleError::Io {
        context: format!("the {section}"),
        source,
    })?;
    if got < buf.len() {
        return Err(BundleError::Truncated {
            section,
            at: start + got as u64,
            end: start + buf.len() as u64,
        });
    }
    Ok(())
}

/// Reads until `buf` is full or the input ends; returns the number of bytes read.
/// Retries on `Interrupted`; any other error is returned.
pub(crate) fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Decodes the manifest bytes of a format `format_version` bundle strictly: postcard,
/// and every byte must be consumed. A v1 manifest is the v2 encoding without its last
/// field (`verifier`), so it decodes with `verifier: None`; a v2 manifest must carry a
/// verifier (one without is written as v1). Does not check caps (see
/// [`Manifest::validate`]).
///
/// # Errors
/// [`BundleError::ManifestDecode`], [`BundleError::ManifestTrailingBytes`].
pub fn decode_manifest(format_version: u16, bytes: &[u8]) -> Result<Manifest, BundleError> {
    let v1;
    let bytes = if format_version == 1 {
        // postcard writes `Option::None` as the single byte 0 (its frozen 1.0 wire
        // format), so "v1 bytes followed by 0" is the same manifest with no verifier.
        v1 = [bytes, &[0]].concat();
        &v1[..]
    } else {
        bytes
    };
    let (manifest, rest) = postcard::take_from_bytes::<Manifest>(bytes).map_err(|source| {
        BundleError::ManifestDecode {
            version: format_version,
            source,
        }
    })?;
    if !rest.is_empty() {
        return Err(BundleError::ManifestTrailingBytes { extra: rest.len() });
    }
    if format_version >= 2 && manifest.verifier.is_none() {
        return Err(BundleError::InvalidManifest {
            field: "verifier".into(),
            problem: "is absent in a format v2 manifest (a bundle without a verifier is format v1)"
                .into(),
        });
    }
    Ok(manifest)
}

/// Encodes a manifest with postcard (the bytes that get signed), in the oldest format
/// that holds it: v1 without a verifier, v2 with one. Returns `(format_version, bytes)`.
///
/// # Errors
/// [`BundleError::Encode`] if postcard fails (it does not for valid manifests).
pub fn encode_manifest(manifest: &Manifest) -> Result<(u16, Vec<u8>), BundleError> {
    let mut bytes =
        postcard::to_allocvec(manifest).map_err(|source| BundleError::Encode { source })?;
    if manifest.verifier.is_some() {
        return Ok((2, bytes));
    }
    // v1: the same encoding without the trailing `None` byte (see `decode_manifest`).
    debug_assert_eq!(bytes.last(), Some(&0));
    bytes.pop();
    Ok((1, bytes))
}

/// Checks a payload file name: 1..=64 bytes of `[A-Za-z0-9._-]`, not starting with `.`.
/// This rules out paths (`/`, `\`), `..`, hidden files and anything that needs quoting.
///
/// # Errors
/// [`BundleError::InvalidFileName`] naming the rule broken.
pub fn validate_file_name(name: &str) -> Result<(), BundleError> {
    let reason = if name.is_empty() {
        Some("empty (expected 1 to 64 bytes)")
    } else if name.len() > MAX_NAME_LEN {
        Some("longer than 64 bytes")
    } else if name.starts_with('.') {
        Some("starts with '.' (no hidden files, no '..')")
    } else if name.contains(['/', '\\']) {
        Some("contains a path separator (expected a plain name)")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("contains a character outside [A-Za-z0-9._-]")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(BundleError::InvalidFileName {
            name: name.escape_default().to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// SHA-256 of `bytes`.
#[must_use]
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// Lowercase hex of `bytes`.
#[must_use]
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

/// Parses hex (either case) into exactly `N` bytes; `None` if the length or a digit is wrong.
#[must_use]
pub fn from_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

/// Name of a TensorRT engine-cache directory for one model: `trt-` + 32 hex characters
/// of SHA-256 over a domain tag, the model's SHA-256, the ONNX Runtime build, the
/// TensorRT version and the precision (e.g. `fp16`). A new model, runtime or precision
/// therefore never reuses a stale engine.
pub fn trt_cache_key(
    model_sha256: &[u8; 32],
    ort_build: &str,
    trt_version: &str,
    precision: &str,
) -> String {
    let mut input = b"outpost-trt-cache-v1\0".to_vec();
    input.extend_from_slice(model_sha256);
    for part in [ort_build, trt_version, precision] {
        input.extend_from_slice(part.as_bytes());
        input.push(0);
    }
    format!("trt-{}", to_hex(&sha256(&input)[..16]))
}

#[cfg(test)]
mod tests {

    #[test]
    fn trt_cache_key_changes_with_every_input() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let base = trt_cache_key(&a, "ort 1.24.1", "10.3", "fp16");
        assert!(base.starts_with("trt-") && base.len() == 4 + 32, "{base}");
        assert_eq!(
            base,
            trt_cache_key(&a, "ort 1.24.1", "10.3", "fp16"),
            "deterministic"
        );
        for other in [
            trt_cache_key(&b, "ort 1.24.1", "10.3", "fp16"),
            trt_cache_key(&a, "ort 1.21.0", "10.3", "fp16"),
            trt_cache_key(&a, "ort 1.24.1", "8.6", "fp16"),
            trt_cache_key(&a, "ort 1.24.1", "10.3", "fp32"),
        ] {
            assert_ne!(base, other);
        }
    }

    use super::*;

    /// Golden bytes: the header layout is part of the format.
    #[test]
    fn header_golden_bytes() {
        let h = Header::new(1, 0x0102_0304 & 0xffff);
        assert_eq!(
            h.encode(),
            [
                b'O', b'U', b'T', b'P', b'O', b'S', b'T', b'B', 1, 0, 0, 0, 0x04, 0x03, 0, 0, 0, 0,
                0, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        let v2 = Header::new(2, 7).encode();
        assert_eq!(v2[8..10], [2, 0]);
        assert_eq!(Header::decode(&v2).unwrap().format_version, 2);
        for bad in [0u16, 3] {
            let mut b = v2;
            b[8..10].copy_from_slice(&bad.to_le_bytes());
            assert!(matches!(
                Header::decode(&b),
                Err(BundleError::UnsupportedVersion { found, min: 1, max: 2 }) if found == bad
            ));
        }
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(to_hex(&[0x00, 0xab, 0x1f]), "00ab1f");
        assert_eq!(from_hex::<3>("00AB1f"), Some([0x00, 0xab, 0x1f]));
        assert_eq!(from_hex::<3>("00ab1"), None);
        assert_eq!(from_hex::<1>("zz"), None);
    }

    #[test]
    fn file_names() {
        for ok in [
            "a",
            "silero_vad.onnx",
            "head-v2.onnx",
            "A.b_c-9",
            &"x".repeat(64),
        ] {
            validate_file_name(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "../a",
            "/etc/passwd",
            "a/b",
            "a\\b",
            ".hidden",
            "a b",
            "é",
            "a\0",
            &"x".repeat(65),
        ] {
            assert!(validate_file_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
