//! Ed25519 keys: the signing key (PKCS#8 v2 DER), public key files (`*.pub`), key ids,
//! and the set of trusted keys a device verifies against.
//!
//! Public key file format: one line (blank lines and `#` comments are ignored)
//!
//! ```text
//! outpost-ed25519 <64 lowercase hex chars: raw public key> <name> [development]
//! ```
//!
//! `<name>` is 1..=64 bytes of `[A-Za-z0-9._-]`. The optional word `development` marks a
//! development key: bundles it signs are refused unless development is allowed.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::format::{from_hex, to_hex, KEY_ID_LEN, SIGNATURE_LEN};

/// First word of a public key line.
pub const PUBLIC_KEY_TAG: &str = "outpost-ed25519";
/// Marker word for development keys.
pub const DEVELOPMENT_MARKER: &str = "development";

/// Why a key could not be created, read or parsed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading or writing a key file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The key file (or directory).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A private key file is not an Ed25519 PKCS#8 v2 DER document.
    #[error("{}: not an Ed25519 PKCS#8 v2 private key ({reason})", path.display())]
    BadPrivateKey {
        /// The key file (`<memory>` when parsed from bytes).
        path: PathBuf,
        /// ring's reason.
        reason: String,
    },
    /// A public key file line does not parse.
    #[error("{}:{line}: {problem} (expected `outpost-ed25519 <64 hex chars> <name> [development]`)", path.display())]
    BadPublicKey {
        /// The key file (`<memory>` when parsed from a string).
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// Two trusted key files hold the same key id.
    #[error("{}: key id {key_id} is already trusted from {}", path.display(), first.display())]
    DuplicateKey {
        /// The second file.
        path: PathBuf,
        /// The first file.
        first: PathBuf,
        /// The repeated key id.
        key_id: KeyId,
    },
    /// The system random number generator failed.
    #[error("key generation failed: the system random number generator is unavailable")]
    Rng,
}

/// Key id: the first 8 bytes of SHA-256 of the 32-byte raw Ed25519 public key.
/// Displays as 16 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl KeyId {
    /// The id of a raw 32-byte Ed25519 public key.
    #[must_use]
    pub fn of_public_key(public_key: &[u8; 32]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
        Self(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        from_hex::<KEY_ID_LEN>(s)
            .map(Self)
            .ok_or_else(|| format!("'{s}' is not a key id (expected 16 hex characters)"))
    }
}

/// A trusted (or to-be-published) Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// [`KeyId::of_public_key`] of `bytes`.
    pub key_id: KeyId,
    /// Raw 32-byte Ed25519 public key.
    pub bytes: [u8; 32],
    /// Short name, 1..=64 bytes of `[A-Za-z0-9._-]`.
    pub name: String,
    /// `true` for development keys.
    pub development: bool,
}

impl PublicKey {
    /// A public key from raw bytes; computes the key id.
    ///
    /// # Errors
    /// [`KeyError::BadPublicKey`] if `name` is not 1..=64 bytes of `[A-Za-z0-9._-]`.
    pub fn new(bytes: [u8; 32], name: &str, development: bool) -> Result<Self, KeyError> {
        check_key_name(name).map_err(|problem| KeyError::BadPublicKey {
            path: PathBuf::from("<memory>"),
            line: 1,
            problem,
        })?;
        Ok(Self {
            key_id: KeyId::of_public_key(&bytes),
            bytes,
            name: name.to_owned(),
            development,
        })
    }

    /// The `.pub` file line (with trailing newline).
    #[must_use]
    pub fn to_line(&self) -> String {
        let dev = if self.development { " development" } else { "" };
        format!(
            "{PUBLIC_KEY_TAG} {} {}{dev}\n",
            to_hex(&self.bytes),
            self.name
        )
    }

    /// Parses a `.pub` file's text; `path` is only used in errors.
    ///
    /// # Errors
    /// [`KeyError::BadPublicKey`] naming the file and line.
    pub fn parse(text: &str, path: &Path) -> Result<Self, KeyError> {
        let bad = |line: usize, problem: String| KeyError::BadPublicKey {
            path: path.to_owned(),
            line,
            problem,
        };
        let mut found: Option<Self> = None;
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if found.is_some() {
                return Err(bad(line_no, "a second key line (one key per file)".into()));
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() < 3 || words.len() > 4 {
                return Err(bad(line_no, format!("{} words", words.len())));
            }
            if words[0] != PUBLIC_KEY_TAG {
                return Err(bad(line_no, format!("unknown key type '{}'", words[0])));
            }
            let bytes = from_hex::<32>(words[1])
                .ok_or_else(|| bad(line_no, "the key is not 64 hex characters".into()))?;
            check_key_name(words[2]).map_err(|p| bad(line_no, p))?;
            let development = match words.get(3) {
                None => false,
                Some(&DEVELOPMENT_MARKER) => true,
                Some(other) => return Err(bad(line_no, format!("unknown marker '{other}'"))),
            };
            found = Some(Self {
                key_id: KeyId::of_public_key(&bytes),
                bytes,
                name: words[2].to_owned(),
                development,
            });
        }
        found.ok_or_else(|| bad(1, "no key line".into()))
    }

    /// Reads and parses a `.pub` file.
    ///
    /// # Errors
    /// [`KeyError::Io`] or [`KeyError::BadPublicKey`], naming the file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Verifies an Ed25519 signature over `message` with this key.
    #[must_use]
    pub fn verify(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &self.bytes)
            .verify(message, signature)
            .is_ok()
    }
}

/// Checks a key name: 1..=64 bytes of `[A-Za-z0-9._-]`.
fn check_key_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!(
            "key name is {} bytes (expected 1..=64)",
            name.len()
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "key name '{}' has a character outside [A-Za-z0-9._-]",
            name.escape_default()
        ));
    }
    Ok(())
}

/// An Ed25519 signing key (ring `Ed25519KeyPair`), stored as a PKCS#8 v2 DER file.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a new key from the system RNG; returns its PKCS#8 v2 DER bytes
    /// (store them with [`write_private_key_file`], load with [`SigningKey::from_pkcs8`]).
    ///
    /// # Errors
    /// [`KeyError::Rng`] if the system RNG fails.
    pub fn generate() -> Result<Vec<u8>, KeyError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Rng)?;
        Ok(doc.as_ref().to_vec())
    }

    /// Parses PKCS#8 v2 DER bytes (as written by [`SigningKey::generate`]).
    ///
    /// # Errors
    /// [`KeyError::BadPrivateKey`].
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        Self::from_pkcs8_at(der, Path::new("<memory>"))
    }

    fn from_pkcs8_at(der: &[u8], path: &Path) -> Result<Self, KeyError> {
        Ed25519KeyPair::from_pkcs8(der)
            .map(|pair| Self { pair })
            .map_err(|e| KeyError::BadPrivateKey {
                path: path.to_owned(),
                reason: e.to_string(),
            })
    }

    /// Reads a PKCS#8 v2 DER private key file.
    ///
    /// # Errors
    /// [`KeyError::Io`] or [`KeyError::BadPrivateKey`], naming the file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let der = fs::read(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pkcs8_at(&der, path)
    }

    /// The raw 32-byte public key.
    #[must_use]
    pub fn public_key_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    /// This key's id.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        KeyId::of_public_key(&self.public_key_bytes())
    }

    /// The public half with a name and development flag, ready for a `.pub` file.
    ///
    /// # Errors
    /// [`KeyError::BadPublicKey`] if the name is invalid.
    pub fn public_key(&self, name: &str, development: bool) -> Result<PublicKey, KeyError> {
        PublicKey::new(self.public_key_bytes(), name, development)
    }

    /// Ed25519 signature (deterministic) over `message`.
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

/// Creates `path` (refusing to overwrite an existing file) with mode 0600 on Unix and
/// writes the PKCS#8 bytes to it, then fsyncs.
///
/// # Errors
/// [`KeyError::Io`] naming the file (`AlreadyExists` if it exists).
pub fn write_private_key_file(path: &Path, pkcs8: &[u8]) -> Result<(), KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_err)?;
    file.write_all(pkcs8).map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

/// The keys a verifier trusts, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<KeyId, PublicKey>,
}

impl TrustedKeys {
    /// A set from keys in memory (later duplicates replace earlier ones).
    #[must_use]
    pub fn from_keys(keys: Vec<PublicKey>) -> Self {
        Self {
            keys: keys.into_iter().map(|k| (k.key_id, k)).collect(),
        }
    }

    /// Loads every `*.pub` file in `dir` (not recursive, in name order). Other files are ignored.
    ///
    /// # Errors
    /// [`KeyError::Io`] if the directory or a file cannot be read, [`KeyError::BadPublicKey`]
    /// naming the file and line, [`KeyError::DuplicateKey`] if two files hold the same key.
    pub fn load_dir(dir: &Path) -> Result<Self, KeyError> {
        let io_err = |source| KeyError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut paths = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err)? {
            let path = entry.map_err(io_err)?.path();
            if path.extension().is_some_and(|e| e == "pub") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut keys = BTreeMap::new();
        let mut origin: BTreeMap<KeyId, PathBuf> = BTreeMap::new();
        for path in paths {
            let key = PublicKey::load(&path)?;
            if let Some(first) = origin.get(&key.key_id) {
                return Err(KeyError::DuplicateKey {
                    path,
                    first: first.clone(),
                    key_id: key.key_id,
                });
            }
            origin.insert(key.key_id, path);
            log::debug!("trusting key {} ({})", key.key_id, key.name);
            keys.insert(key.key_id, key);
        }
        Ok(Self { keys })
    }

    /// The key with this id, if trusted.
    #[must_use]
    pub fn get(&self, key_id: &KeyId) -> Option<&PublicKey> {
        self.keys.get(key_id)
    }

    /// All trusted keys, in key id order.
    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.values()
    }

    /// Number of trusted keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// `true` when no key is trusted (every bundle will be rejected).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// `id (name), …` or `none`, for error messages.
    #[must_use]
    pub fn describe(&self) -> String {
        if self.keys.is_empty() {
            return "none".to_owned();
        }
        self.keys
            .values()
            .map(|k| format!("{} ({})", k.key_id, k.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_line_round_trip() {
        let sk = SigningKey::from_pkcs8(&SigningKey::generate().unwrap()).unwrap();
        for dev in [false, true] {
            let pk = sk.public_key("lab-key_1", dev).unwrap();
            let parsed = PublicKey::parse(
                &format!("# comment\n\n{}", pk.to_line()),
                Path::new("k.pub"),
            )
            .unwrap();
            assert_eq!(parsed, pk);
            assert_eq!(parsed.key_id, sk.key_id());
            assert_eq!(parsed.key_id.to_string().len(), 16);
        }
    }

    #[test]
    fn public_key_errors_name_file_and_line() {
        let err =
            PublicKey::parse("\noutpost-ed25519 abcd name\n", Path::new("x.pub")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("x.pub:2: the key is not 64 hex"),
            "{err}"
        );
        let hex = "00".repeat(32);
        let err = PublicKey::parse(
            &format!("outpost-ed25519 {hex} name prod"),
            Path::new("y.pub"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("y.pub:1: unknown marker 'prod'"),
            "{err}"
        );
        let err =
            PublicKey::parse(&format!("ssh-ed25519 {hex} name"), Path::new("z.pub")).unwrap_err();
        assert!(err.to_string().contains("unknown key type"), "{err}");
    }

    #[test]
    fn key_id_is_sha256_prefix() {
        // SHA-256 of 32 zero bytes starts with 66687aadf862bd77.
        assert_eq!(
            KeyId::of_public_key(&[0u8; 32]).to_string(),
            "66687aadf862bd77"
        );
        assert_eq!(
            "66687aadf862bd77".parse::<KeyId>().unwrap(),
            KeyId::of_public_key(&[0u8; 32])
        );
    }
}
