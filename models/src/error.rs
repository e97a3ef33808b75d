//! [`BundleError`]: every reason a bundle is rejected (or cannot be built).
//!
//! Each message says what was wrong and what was expected, so it can be shown to an
//! operator as is (status, audit log, `outpost-provision verify`).

use std::io;
use std::path::PathBuf;

use crate::keys::KeyId;

/// Why a bundle was rejected while reading/verifying it, or could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The first 8 bytes are not `OUTPOSTB`.
    #[error(
        "bundle rejected: bad magic 0x{} (expected \"OUTPOSTB\")",
        crate::format::to_hex(found)
    )]
    BadMagic {
        /// The 8 bytes found at offset 0.
        found: [u8; 8],
    },
    /// The header's `format_version` is not one this build reads.
    #[error(
        "bundle rejected: unsupported format version {found} (this build reads {min} to {max})"
    )]
    UnsupportedVersion {
        /// Version found in the header.
        found: u16,
        /// The oldest version this build reads ([`crate::format::MIN_FORMAT_VERSION`]).
        min: u16,
        /// The newest version this build reads ([`crate::format::FORMAT_VERSION`]).
        max: u16,
    },
    /// The header's `flags` field is not zero (no flags are defined in format v1).
    #[error("bundle rejected: unsupported header flags 0x{found:04x} (format v1 defines none; expected 0)")]
    UnsupportedFlags {
        /// Flags found in the header.
        found: u16,
    },
    /// The header's reserved field is not zero.
    #[error("bundle rejected: reserved header field is 0x{found:08x} (expected 0)")]
    ReservedNotZero {
        /// Value found in the reserved field.
        found: u32,
    },
    /// `manifest_len` in the header is above [`crate::format::MAX_MANIFEST_LEN`] (or zero).
    #[error("bundle rejected: manifest is {len} bytes (limit {max}, at least 1)")]
    ManifestLength {
        /// Manifest length in bytes, from the header.
        len: u32,
        /// Limit in bytes.
        max: u32,
    },
    /// The bundle ended inside the header, manifest or signature block.
    #[error("bundle rejected: truncated in the {section} at byte {at} of the bundle (the {section} ends at byte {end})")]
    Truncated {
        /// `header`, `manifest` or `signature block`.
        section: &'static str,
        /// Offset in bytes from the start of the bundle at which the input ended.
        at: u64,
        /// Offset in bytes at which the section should have ended.
        end: u64,
    },
    /// The signature block names a key id that is not in the trusted key set.
    #[error("bundle rejected: signed by unknown key id {key_id} (trusted: {trusted})")]
    UnknownKey {
        /// Key id from the signature block.
        key_id: KeyId,
        /// The trusted keys, as `id (name)` joined by `, `, or `none`.
        trusted: String,
    },
    /// The Ed25519 signature does not verify over the manifest bytes.
    #[error("bundle rejected: signature does not verify with key {key_id} ({key_name}); the manifest or signature was altered or signed by another key")]
    BadSignature {
        /// Key id from the signature block.
        key_id: KeyId,
        /// Name of the trusted key with that id.
        key_name: String,
    },
    /// The (correctly signed) manifest bytes are not a postcard-encoded manifest of the
    /// header's format version.
    #[error("bundle rejected: manifest does not decode as a format v{version} manifest: {source}")]
    ManifestDecode {
        /// The header's format version.
        version: u16,
        /// The postcard error.
        #[source]
        source: postcard::Error,
    },
    /// The manifest decoded but did not consume all `manifest_len` bytes.
    #[error(
        "bundle rejected: {extra} unexpected bytes after the encoded manifest (expected none)"
    )]
    ManifestTrailingBytes {
        /// Number of bytes left over, in bytes.
        extra: usize,
    },
    /// A payload file name is not a plain name (see [`crate::format::validate_file_name`]).
    #[error("bundle rejected: invalid file name '{name}': {reason}")]
    InvalidFileName {
        /// The name, escaped for display.
        name: String,
        /// What rule it breaks.
        reason: &'static str,
    },
    /// Two payload files have the same name.
    #[error("bundle rejected: duplicate file name '{name}' (file names must be unique)")]
    DuplicateFileName {
        /// The repeated name.
        name: String,
    },
    /// A list in the manifest has more entries than its cap.
    #[error("bundle rejected: {what} has {count} entries (limit {max})")]
    TooMany {
        /// Which list (`files`, `labels`, `self_tests`, ...).
        what: String,
        /// Entries found.
        count: usize,
        /// Cap.
        max: usize,
    },
    /// A payload file is larger than [`crate::format::MAX_FILE_LEN`].
    #[error("bundle rejected: file '{name}' is {len} bytes (limit {max})")]
    FileTooLarge {
        /// File name.
        name: String,
        /// Declared length in bytes.
        len: u64,
        /// Limit in bytes.
        max: u64,
    },
    /// The payload files add up to more than [`crate::format::MAX_PAYLOAD_LEN`].
    #[error("bundle rejected: payload is {total} bytes in all (limit {max})")]
    PayloadTooLarge {
        /// Sum of all declared file lengths, in bytes.
        total: u64,
        /// Limit in bytes.
        max: u64,
    },
    /// A string in the manifest is empty or longer than [`crate::format::MAX_STRING_LEN`].
    #[error("bundle rejected: {field} is {len} bytes (expected 1..={max})")]
    StringLength {
        /// Which field, e.g. `pipeline.labels[3]`.
        field: String,
        /// Length in bytes.
        len: usize,
        /// Limit in bytes.
        max: usize,
    },
    /// A stage or self test names a file that is not in `files`.
    #[error("bundle rejected: {referenced_by} names file '{name}', which is not in the bundle's file list")]
    MissingFile {
        /// The referring field, e.g. `pipeline.head.file`.
        referenced_by: String,
        /// The missing file name.
        name: String,
    },
    /// Any other manifest field out of its documented range.
    #[error("bundle rejected: {field}: {problem}")]
    InvalidManifest {
        /// The field, e.g. `pipeline.decision.threshold`.
        field: String,
        /// What is wrong and what was expected.
        problem: String,
    },
    /// A development key or development manifest, and development bundles are not allowed.
    #[error("development bundle refused: {reason} (only allowed on a development device)")]
    DevelopmentRefused {
        /// Why the bundle counts as development.
        reason: String,
    },
    /// The manifest's `development` flag disagrees with the signing key's.
    #[error("bundle rejected: manifest says development = {manifest}, but key {key_id} ({key_name}) is a {} key", if *key_development { "development" } else { "production" })]
    DevelopmentMismatch {
        /// The manifest's flag.
        manifest: bool,
        /// The key's id.
        key_id: KeyId,
        /// The key's name.
        key_name: String,
        /// Whether the key is a development key.
        key_development: bool,
    },
    /// The bundle is built for another device class.
    #[error("bundle rejected: built for '{bundle}', but this device is '{device}' (expected '{device}' or 'any')")]
    Incompatible {
        /// The manifest's `compatible` string.
        bundle: String,
        /// The expected device class.
        device: String,
    },
    /// The payload ended before a file's declared length.
    #[error("bundle rejected: file '{name}': truncated at byte {at} of {len}")]
    FileTruncated {
        /// File name.
        name: String,
        /// Bytes of this file read before the input ended.
        at: u64,
        /// Declared length in bytes.
        len: u64,
    },
    /// A file's SHA-256 differs from the manifest's.
    #[error("bundle rejected: file '{name}': SHA-256 mismatch (manifest {expected}, computed {computed})")]
    HashMismatch {
        /// File name.
        name: String,
        /// Hex SHA-256 from the manifest.
        expected: String,
        /// Hex SHA-256 of the bytes read.
        computed: String,
    },
    /// Bytes follow the last payload file.
    #[error("bundle rejected: {count}{} trailing bytes after the last file (expected end of file)", if *more { " or more" } else { "" })]
    TrailingBytes {
        /// Trailing bytes counted, in bytes.
        count: u64,
        /// `true` when counting stopped before the end of the input.
        more: bool,
    },
    /// The bundle file could not be opened.
    #[error("cannot open bundle {}: {source}", path.display())]
    Open {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading failed for a reason other than the input ending early.
    #[error("I/O error reading bundle ({context}): {source}")]
    Io {
        /// What was being read.
        context: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Building only: the manifest could not be encoded.
    #[error("cannot encode manifest: {source}")]
    Encode {
        /// The postcard error.
        #[source]
        source: postcard::Error,
    },
}
