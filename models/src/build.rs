//! Building and signing bundles (used by `outpost-provision build` and by tests).

use crate::error::BundleError;
use crate::format::{self, Header, SignatureBlock};
use crate::keys::SigningKey;
use crate::manifest::{FileEntry, Manifest};

/// Builds a signed bundle: format v1, or v2 when the manifest has a verifier.
///
/// `manifest.files` is ignored and replaced by one [`FileEntry`] (length in bytes and
/// SHA-256) per element of `files`, in the given order, which is also the payload order.
/// The manifest is then [`Manifest::validate`]d, postcard-encoded, signed with `key` over
/// `SIGNING_TAG ‖ manifest bytes`, and header, manifest, signature block and payload are
/// concatenated.
///
/// Deterministic: the same inputs give identical bytes (Ed25519 signatures are
/// deterministic).
///
/// Note: this does not check that `manifest.development` matches the key's development
/// flag (a [`SigningKey`] does not know it); `outpost-provision build` does, and
/// [`crate::verify_bundle`] rejects a mismatch.
///
/// # Errors
/// Any validation error of [`Manifest::validate`] (names, caps, missing files),
/// [`BundleError::ManifestLength`] if the encoded manifest exceeds 64 KiB,
/// [`BundleError::Encode`].
pub fn build_bundle(
    manifest: &Manifest,
    files: &[(String, Vec<u8>)],
    key: &SigningKey,
) -> Result<Vec<u8>, BundleError> {
    let mut manifest = manifest.clone();
    manifest.files = files
        .iter()
        .map(|(name, data)| FileEntry {
            name: name.clone(),
            len: data.len() as u64,
            sha256: format::sha256(data),
        })
        .collect();
    manifest.validate()?;

    let (format_version, manifest_bytes) = format::encode_manifest(&manifest)?;
    let manifest_len = u32::try_from(manifest_bytes.len())
        .ok()
        .filter(|&len| len <= format::MAX_MANIFEST_LEN)
        .ok_or(BundleError::ManifestLength {
            len: u32::try_from(manifest_bytes.len()).unwrap_or(u32::MAX),
            max: format::MAX_MANIFEST_LEN,
        })?;

    let signature = SignatureBlock {
        key_id: key.key_id(),
        signature: key.sign(&format::signed_message(format_version, &manifest_bytes)),
    };

    let payload_len: usize = files.iter().map(|(_, d)| d.len()).sum();
    let mut out = Vec::with_capacity(
        format::HEADER_LEN + manifest_bytes.len() + format::SIGNATURE_BLOCK_LEN + payload_len,
    );
    out.extend_from_slice(&Header::new(format_version, manifest_len).encode());
    out.extend_from_slice(&manifest_bytes);
    out.extend_from_slice(&signature.encode());
    for (_, data) in files {
        out.extend_from_slice(data);
    }
    log::debug!(
        "built bundle {}@{} (format v{format_version}): manifest {} bytes, {} files, payload {} bytes, key {}",
        manifest.name,
        manifest.version,
        manifest_len,
        files.len(),
        payload_len,
        signature.key_id
    );
    Ok(out)
}
