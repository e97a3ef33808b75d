#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod boot;
pub mod inspect;
pub mod install;
pub mod spec;
pub mod state;
pub mod status;
pub mod store;
pub mod usb;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use outpost_models::format::{to_hex, MAX_FILES, MAX_FILE_LEN, MAX_PAYLOAD_LEN};
use outpost_models::keys::write_private_key_file;
use outpost_models::{
    build_bundle, verify_path, BundleError, PublicKey, SigningKey, TrustedKeys, VerifiedBundle,
    VerifyOptions,
};

pub use audit::{read_audit, AuditRecord};
pub use boot::{boot_select, mark_bad, mark_good, trt_cache_dir, BootChoice, NoBootableSlot};
pub use inspect::{inspect, Inspection};
pub use install::{install, install_in, InstallError, InstallLock, InstallReport, SlotMeta};
pub use spec::BundleSpec;
pub use state::{SlotName, State, StateError};
pub use status::{status, Status};
pub use store::{FsStore, MemStore, SlotStore};
pub use usb::{usb_install, usb_scan, UsbReport};

/// What `keygen` wrote.
#[derive(Debug, Clone)]
pub struct KeygenReport {
    /// The private key file (`NAME.pk8`, mode 0600).
    pub private_key: PathBuf,
    /// The public key file (`NAME.pub`).
    pub public_key_file: PathBuf,
    /// The public key.
    pub public_key: PublicKey,
}

/// Generates an Ed25519 key pair and writes `DIR/NAME.pk8` (PKCS#8 v2 DER, mode 0600)
/// and `DIR/NAME.pub` (one line, see `outpost_models::keys`). Creates `out_dir` if needed.
///
/// # Errors
/// An invalid name, either file already existing (nothing is overwritten), I/O errors;
/// each names the file involved.
pub fn keygen(out_dir: &Path, name: &str, development: bool) -> Result<KeygenReport> {
    let private_key = out_dir.join(format!("{name}.pk8"));
    let public_key_file = out_dir.join(format!("{name}.pub"));
    // Validate the name before touching the file system.
    PublicKey::new([0; 32], name, development).with_context(|| format!("key name '{name}'"))?;
    for path in [&private_key, &public_key_file] {
        ensure!(
            !path.exists(),
            "{} already exists; refusing to overwrite a key",
            path.display()
        );
    }
    fs::create_dir_all(out_dir)
        .with_context(|| format!("creating key directory {}", out_dir.display()))?;

    let pkcs8 = SigningKey::generate()?;
    let key = SigningKey::from_pkcs8(&pkcs8)?;
    let public_key = key.public_key(name, development)?;
    write_private_key_file(&private_key, &pkcs8).context("writing the private key")?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&public_key_file)
        .with_context(|| format!("creating {}", public_key_file.display()))?;
    file.write_all(public_key.to_line().as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", public_key_file.display()))?;
    log::info!(
        "generated key {} ({}) in {}",
        public_key.key_id,
        name,
        out_dir.display()
    );
    Ok(KeygenReport {
        private_key,
        public_key_file,
        public_key,
    })
}

/// One payload file of a built bundle.
#[derive(Debug, Clone)]
pub struct BuiltFile {
    /// Name inside the bundle.
    pub name: String,
    /// Source path it was read from.
    pub source: PathBuf,
    /// Length in bytes.
    pub len: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// What `build` wrote.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The bundle file.
    pub out: PathBuf,
    /// Bundle size in bytes.
    pub size: u64,
    /// `name@version (manifest hash prefix)`.
    pub bundle_id: String,
    /// The signing key (from `KEY.pub`).
    pub key: PublicKey,
    /// Payload files in bundle order.
    pub files: Vec<BuiltFile>,
}

/// The public key file that belongs to a private key: `KEY.pub` next to `KEY.pk8`.
#[must_use]
pub fn public_key_path(private_key: &Path) -> PathBuf {
    private_key.with_extension("pub")
}

/// Builds and signs a bundle from a spec and writes it to `out` (atomically: a temporary
/// file in the same directory, fsynced, then renamed).
///
/// The key's `.pub` must sit next to it and match it; the spec's `development` must equal
/// the key's development flag. The written bundle is verified with that public key, and
/// checked against what the runtime serves ([`Manifest::check_runtime`]), before it is
/// renamed into place: a bundle the device would refuse at boot is never written.
/// `verifier_dir`, when given, adds the stage-2 verifier exported there
/// ([`BundleSpec::add_verifier_dir`]); the bundle is then format v2.
///
/// [`Manifest::check_runtime`]: outpost_models::Manifest::check_runtime
///
/// # Errors
/// Spec, key, payload and output errors, each naming the file involved; any
/// [`outpost_models::BundleError`] from building or the check.
pub fn build(
    spec_path: &Path,
    key_path: &Path,
    out: &Path,
    verifier_dir: Option<&Path>,
) -> Result<BuildReport> {
    let mut spec = BundleSpec::load(spec_path)?;
    if let Some(dir) = verifier_dir {
        spec.add_verifier_dir(dir)?;
    }
    let spec_dir = spec_path.parent().unwrap_or_else(|| Path::new("."));

    let key = SigningKey::load(key_path).context("loading the signing key")?;
    let pub_path = public_key_path(key_path);
    let public_key = PublicKey::load(&pub_path).with_context(|| {
        format!(
            "loading the public key that must sit next to {}",
            key_path.display()
        )
    })?;
    ensure!(
        public_key.bytes == key.public_key_bytes(),
        "{} (key id {}) does not belong to {} (key id {})",
        pub_path.display(),
        public_key.key_id,
        key_path.display(),
        key.key_id()
    );
    if spec.development != public_key.development {
        let kind = |dev: bool| if dev { "development" } else { "production" };
        bail!(
            "{}: development = {}, but key {} ({}) from {} is a {} key (expected development = {} for this key)",
            spec_path.display(),
            spec.development,
            public_key.key_id,
            public_key.name,
            pub_path.display(),
            kind(public_key.development),
            public_key.development
        );
    }

    // Caps first, from the files' sizes, so an oversized payload is never read in.
    let context = || format!("building a bundle from {}", spec_path.display());
    if spec.payload.len() > MAX_FILES {
        return Err(BundleError::TooMany {
            what: "files".into(),
            count: spec.payload.len(),
            max: MAX_FILES,
        })
        .with_context(context);
    }
    let mut sources = Vec::with_capacity(spec.payload.len());
    let mut total: u64 = 0;
    for entry in &spec.payload {
        let source = spec::resolve_path(&entry.path, spec_dir)
            .with_context(|| format!("{}: payload '{}'", spec_path.display(), entry.name))?;
        let len = fs::metadata(&source)
            .with_context(|| format!("payload '{}': reading {}", entry.name, source.display()))?
            .len();
        ensure!(
            len <= MAX_FILE_LEN,
            "payload '{}': {} is {len} bytes (limit {MAX_FILE_LEN})",
            entry.name,
            source.display()
        );
        total += len; // <= 32 * 64 MiB: no overflow.
        sources.push(source);
    }
    if total > MAX_PAYLOAD_LEN {
        return Err(BundleError::PayloadTooLarge {
            total,
            max: MAX_PAYLOAD_LEN,
        })
        .with_context(context);
    }
    let mut files = Vec::with_capacity(spec.payload.len());
    for (entry, source) in spec.payload.iter().zip(&sources) {
        let data = fs::read(source)
            .with_context(|| format!("payload '{}': reading {}", entry.name, source.display()))?;
        files.push((entry.name.clone(), data));
    }

    let bytes = build_bundle(&spec.manifest(), &files, &key).with_context(context)?;

    let tmp = temp_path(out);
    let result = write_and_check(&tmp, &bytes, &public_key).and_then(|verified| {
        fs::rename(&tmp, out)
            .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
        Ok(verified)
    });
    let verified = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };

    let built = verified
        .manifest
        .files
        .iter()
        .zip(sources)
        .map(|(f, source)| BuiltFile {
            name: f.name.clone(),
            source,
            len: f.len,
            sha256: to_hex(&f.sha256),
        })
        .collect();
    Ok(BuildReport {
        out: out.to_owned(),
        size: bytes.len() as u64,
        bundle_id: verified.bundle_id(),
        key: public_key,
        files: built,
    })
}

fn temp_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    out.with_file_name(name)
}

fn write_and_check(tmp: &Path, bytes: &[u8], key: &PublicKey) -> Result<VerifiedBundle> {
    let mut file = fs::File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(file);
    let trusted = TrustedKeys::from_keys(vec![key.clone()]);
    let opts = VerifyOptions {
        allow_development: true,
        expected_compatible: None,
    };
    let verified = verify_path(tmp, &trusted, &opts)
        .with_context(|| format!("checking the written bundle {}", tmp.display()))?;
    verified
        .manifest
        .check_runtime()
        .context("the runtime could not serve this bundle")?;
    Ok(verified)
}

/// Verifies `bundle` against every `*.pub` in `keys_dir`, then checks that the runtime can
/// serve it ([`outpost_models::Manifest::check_runtime`]): `verify` passes only bundles a
/// device would boot.
///
/// # Errors
/// Key directory errors naming the file, or the [`outpost_models::BundleError`] that
/// rejected the bundle, with the bundle path as context.
pub fn verify(
    bundle: &Path,
    keys_dir: &Path,
    allow_development: bool,
    compatible: Option<&str>,
) -> Result<VerifiedBundle> {
    let trusted = TrustedKeys::load_dir(keys_dir)
        .with_context(|| format!("loading trusted keys from {}", keys_dir.display()))?;
    if trusted.is_empty() {
        log::warn!(
            "no *.pub keys in {}: every bundle will be rejected",
            keys_dir.display()
        );
    }
    let opts = VerifyOptions {
        allow_development,
        expected_compatible: compatible.map(str::to_owned),
    };
    let verified = verify_path(bundle, &trusted, &opts).map_err(|e| {
        let hint = if matches!(e, outpost_models::BundleError::DevelopmentRefused { .. }) {
            " (pass --allow-development to accept it on a development device)"
        } else {
            ""
        };
        anyhow::Error::new(e).context(format!("{}{hint}", bundle.display()))
    })?;
    verified
        .manifest
        .check_runtime()
        .with_context(|| format!("{}", bundle.display()))?;
    Ok(verified)
}

/// The line `verify` prints on success: `OK <bundle id> signed by <key id> (<name>)`.
#[must_use]
pub fn verify_ok_line(v: &VerifiedBundle) -> String {
    format!(
        "OK {} signed by {} ({})",
        v.bundle_id(),
        v.key.key_id,
        v.key.name
    )
}
