//! Streaming verification: nothing in a bundle is trusted until this module says so.
//!
//! Order (each step only runs if the previous one passed):
//! 1. header checked (magic, version, flags, reserved, `manifest_len` cap);
//! 2. manifest bytes read (bounded by the header's `manifest_len`);
//! 3. signature block read; key id looked up in the trusted keys;
//! 4. Ed25519 signature verified over `SIGNING_TAG ‖ manifest bytes` — before the manifest
//!    is parsed at all;
//! 5. manifest parsed strictly (postcard, every byte consumed) and [`Manifest::validate`]d;
//! 6. development policy and device compatibility checked;
//! 7. each file streamed through SHA-256 in 64 KiB chunks, length and hash checked;
//! 8. end of input checked (no trailing bytes).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use ring::digest;

use crate::error::BundleError;
use crate::format::{self, to_hex, CHUNK_LEN};
use crate::keys::{PublicKey, TrustedKeys};
use crate::manifest::Manifest;

/// Policy for [`verify_bundle`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Accept bundles signed by a development key or marked `development` (development
    /// devices and tests only). Default `false`.
    pub allow_development: bool,
    /// This device's class; the bundle's `compatible` must be equal or `any`.
    /// `None` skips the check.
    pub expected_compatible: Option<String>,
}

/// A bundle whose signature, manifest and every file have been verified.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    /// The verified, validated manifest.
    pub manifest: Manifest,
    /// SHA-256 of the exact signed manifest bytes.
    pub manifest_sha256: [u8; 32],
    /// The trusted key that signed it.
    pub key: PublicKey,
    /// Every payload file's bytes, by name.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl VerifiedBundle {
    /// A payload file's verified bytes.
    #[must_use]
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// `"<name>@<version> (<first 12 hex chars of the manifest SHA-256>)"`, for logs and status.
    #[must_use]
    pub fn bundle_id(&self) -> String {
        bundle_id(&self.manifest, &self.manifest_sha256)
    }

    /// `true` if the manifest or the signing key is marked development.
    #[must_use]
    pub fn is_development(&self) -> bool {
        self.manifest.development || self.key.development
    }
}

/// `"<name>@<version> (<first 12 hex chars of manifest_sha256>)"`.
#[must_use]
pub fn bundle_id(manifest: &Manifest, manifest_sha256: &[u8; 32]) -> String {
    format!(
        "{}@{} ({})",
        manifest.name,
        manifest.version,
        &to_hex(manifest_sha256)[..12]
    )
}

/// Verifies a whole bundle read from `reader` (see the module docs for the order of checks)
/// and returns its manifest and file contents. Reads exactly to end of input.
///
/// # Errors
/// The first check that fails, as a [`BundleError`]: header errors, `Truncated` /
/// `FileTruncated` when the input ends early, `UnknownKey`, `BadSignature`, manifest decode
/// and validation errors, `DevelopmentRefused`, `DevelopmentMismatch`, `Incompatible`,
/// `HashMismatch`, `TrailingBytes`, `Io`.
pub fn verify_bundle<R: Read>(
    mut reader: R,
    trusted: &TrustedKeys,
    opts: &VerifyOptions,
) -> Result<VerifiedBundle, BundleError> {
    let VerifiedHead {
        manifest,
        manifest_sha256,
        key,
        payload_offset: _,
    } = verify_head(&mut reader, trusted, opts)?;

    let mut files = BTreeMap::new();
    let mut buf = vec![0u8; CHUNK_LEN];
    for entry in &manifest.files {
        // `validate` capped entry.len at 64 MiB; the signature vouches for it.
        let mut data = Vec::with_capacity(entry.len as usize);
        let mut ctx = digest::Context::new(&digest::SHA256);
        while (data.len() as u64) < entry.len {
            let want = usize::try_from(entry.len - data.len() as u64)
                .map_or(CHUNK_LEN, |r| r.min(CHUNK_LEN));
            let got = format::read_full(&mut reader, &mut buf[..want]).map_err(|source| {
                BundleError::Io {
                    context: format!("file '{}'", entry.name),
                    source,
                }
            })?;
            ctx.update(&buf[..got]);
            data.extend_from_slice(&buf[..got]);
            if got < want {
                return Err(BundleError::FileTruncated {
                    name: entry.name.clone(),
                    at: data.len() as u64,
                    len: entry.len,
                });
            }
        }
        let computed = ctx.finish();
        if computed.as_ref() != entry.sha256 {
            return Err(BundleError::HashMismatch {
                name: entry.name.clone(),
                expected: to_hex(&entry.sha256),
                computed: to_hex(computed.as_ref()),
            });
        }
        files.insert(entry.name.clone(), data);
    }

    check_eof(&mut reader, &mut buf)?;

    let bundle = VerifiedBundle {
        manifest,
        manifest_sha256,
        key,
        files,
    };
    log::info!(
        "verified bundle {} signed by {} ({}){}",
        bundle.bundle_id(),
        bundle.key.key_id,
        bundle.key.name,
        if bundle.is_development() {
            " [development]"
        } else {
            ""
        }
    );
    Ok(bundle)
}

/// Header, signed manifest and key of a bundle whose payload has NOT been read yet.
///
/// Returned by [`verify_head`]: the signature and the manifest are verified, the payload
/// files are not. Use it to decide whether a bundle is worth reading in full (for example
/// to pick the newest bundle on a USB stick); never load payload data on the strength of it.
#[derive(Debug, Clone)]
pub struct VerifiedHead {
    /// The verified, validated manifest.
    pub manifest: Manifest,
    /// SHA-256 of the exact signed manifest bytes.
    pub manifest_sha256: [u8; 32],
    /// The trusted key that signed it.
    pub key: PublicKey,
    /// Offset of the first payload byte, in bytes from the start of the bundle.
    pub payload_offset: u64,
}

impl VerifiedHead {
    /// `"<name>@<version> (<first 12 hex chars of the manifest SHA-256>)"`.
    #[must_use]
    pub fn bundle_id(&self) -> String {
        bundle_id(&self.manifest, &self.manifest_sha256)
    }
}

/// Steps 1–6 of the module docs: header, manifest bytes, signature block, Ed25519
/// signature (before parsing), strict manifest decode and validation, development policy
/// and device compatibility. Leaves `reader` positioned at the first payload byte and does
/// not read or hash any payload file ([`verify_bundle`] does both, using this first).
///
/// # Errors
/// As [`verify_bundle`], minus the payload and end-of-input errors.
pub fn verify_head<R: Read>(
    reader: &mut R,
    trusted: &TrustedKeys,
    opts: &VerifyOptions,
) -> Result<VerifiedHead, BundleError> {
    let head = format::read_head(reader)?;

    let key_id = head.signature.key_id;
    let key = trusted
        .get(&key_id)
        .ok_or_else(|| BundleError::UnknownKey {
            key_id,
            trusted: trusted.describe(),
        })?;
    if !key.verify(
        &format::signed_message(head.header.format_version, &head.manifest_bytes),
        &head.signature.signature,
    ) {
        return Err(BundleError::BadSignature {
            key_id,
            key_name: key.name.clone(),
        });
    }

    let manifest = format::decode_manifest(head.header.format_version, &head.manifest_bytes)?;
    manifest.validate()?;
    let manifest_sha256 = format::sha256(&head.manifest_bytes);

    check_policy(&manifest, key, opts)?;
    Ok(VerifiedHead {
        manifest,
        manifest_sha256,
        key: key.clone(),
        payload_offset: head.payload_offset(),
    })
}

/// Opens `path` and runs [`verify_bundle`] on it.
///
/// # Errors
/// [`BundleError::Open`] naming the path, then as [`verify_bundle`].
pub fn verify_path(
    path: &Path,
    trusted: &TrustedKeys,
    opts: &VerifyOptions,
) -> Result<VerifiedBundle, BundleError> {
    let file = File::open(path).map_err(|source| BundleError::Open {
        path: path.to_owned(),
        source,
    })?;
    verify_bundle(BufReader::with_capacity(CHUNK_LEN, file), trusted, opts)
}

fn check_policy(
    manifest: &Manifest,
    key: &PublicKey,
    opts: &VerifyOptions,
) -> Result<(), BundleError> {
    if !opts.allow_development {
        if key.development {
            return Err(BundleError::DevelopmentRefused {
                reason: format!("signed by development key {} ({})", key.key_id, key.name),
            });
        }
        if manifest.development {
            return Err(BundleError::DevelopmentRefused {
                reason: format!(
                    "manifest of {}@{} is marked development",
                    manifest.name, manifest.version
                ),
            });
        }
    }
    if manifest.development != key.development {
        return Err(BundleError::DevelopmentMismatch {
            manifest: manifest.development,
            key_id: key.key_id,
            key_name: key.name.clone(),
            key_development: key.development,
        });
    }
    if let Some(device) = &opts.expected_compatible {
        if manifest.compatible != "any" && &manifest.compatible != device {
            return Err(BundleError::Incompatible {
                bundle: manifest.compatible.clone(),
                device: device.clone(),
            });
        }
    }
    Ok(())
}

/// Fails if any byte follows the last file; counts up to 1 MiB of them for the message.
fn check_eof<R: Read>(reader: &mut R, buf: &mut [u8]) -> Result<(), BundleError> {
    const COUNT_LIMIT: u64 = 1024 * 1024;
    let mut count: u64 = 0;
    loop {
        let got = format::read_full(reader, buf).map_err(|source| BundleError::Io {
            context: "after the last file".into(),
            source,
        })?;
        count += got as u64;
        if got < buf.len() {
            break;
        }
        if count >= COUNT_LIMIT {
            return Err(BundleError::TrailingBytes { count, more: true });
        }
    }
    if count > 0 {
        return Err(BundleError::TrailingBytes { count, more: false });
    }
    Ok(())
}
