//! Installing a bundle into the inactive slot.
//!
//! Install, in order (see the crate README, "Install"):
//! 1. refuse if a trial is pending (the daemon has not yet proven the last install);
//! 2. copy the source once to `staging/bundle`, hashing it, bounded by
//!    [`MAX_BUNDLE_LEN`] bytes; fsync;
//! 3. verify the staged copy with [`verify_bundle`] (signature first, then the strict
//!    manifest, then every file), then what the runtime serves
//!    ([`Manifest::check_runtime`](outpost_models::Manifest::check_runtime)), the
//!    runtime range, the anti-rollback floor
//!    (version > floor) and the rejected list; a refusal removes `staging/` and leaves the
//!    rest of the state directory as it was (apart from the audit log);
//! 4. rewrite the inactive slot: clear it (engine cache included), write `meta.json`,
//!    rename the staged bundle in, fsync files and directories;
//! 5. commit: `state.json` with the new slot active and on trial (write temp, fsync,
//!    rename, fsync directory);
//! 6. audit.
//!
//! Any storage error (an fsync error included) stops the install at once; nothing is
//! retried. A power cut at any point leaves either the previous slot or the new one
//! (on trial) selected by [`boot_select`](crate::boot::boot_select).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use outpost_models::format::{to_hex, CHUNK_LEN, MAX_BUNDLE_LEN};
use outpost_models::{verify_bundle, BundleError, TrustedKeys, VerifiedBundle, VerifyOptions};
use ring::digest;
use serde::{Deserialize, Serialize};

use crate::audit::{audit, now_unix, rfc3339, AuditRecord};
use crate::boot::{select_in, RUNTIME_VERSION};
use crate::state::{read_state_in, storage, write_state_in, SlotName, State, StateError};
use crate::store::{FsStore, SlotStore};

/// The advisory lock file held during an install.
pub const LOCK_FILE: &str = "install.lock";

/// Staging directory for the copy being verified.
pub const STAGING_DIR: &str = "staging";

/// Why an install did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// Another install holds `install.lock`.
    #[error("another install is in progress ({} is locked); wait for it to finish", path.display())]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// The last install is still on trial: its slot has not passed the daemon's self-test.
    #[error("install refused: slot {slot} holds {bundle} on trial (installed, not yet proven by the daemon's self-test); let outpostd boot and self-test it first")]
    TrialPending {
        /// The trial slot.
        slot: SlotName,
        /// Its bundle id.
        bundle: String,
    },
    /// The bundle file could not be opened.
    #[error("cannot open bundle {}: {source}", path.display())]
    Open {
        /// The bundle file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The bundle path is not a regular file (a symlink, directory, device, ...).
    #[error("bundle {} is not a regular file (symlinks and special files are refused)", path.display())]
    NotRegularFile {
        /// The path.
        path: PathBuf,
    },
    /// Reading the source failed part-way (for example the stick was removed).
    #[error(
        "reading the bundle source failed after {at} bytes: {source} (was the stick removed?)"
    )]
    Source {
        /// Bytes copied before the error.
        at: u64,
        /// The read error.
        #[source]
        source: io::Error,
    },
    /// The source is longer than any valid bundle.
    #[error("bundle rejected: more than {max} bytes (the largest valid bundle)")]
    TooLarge {
        /// Limit in bytes ([`MAX_BUNDLE_LEN`]).
        max: u64,
    },
    /// The staged copy failed verification.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The bundle does not support this runtime version.
    #[error(
        "bundle rejected: {bundle} needs runtime {min}..={max}, but this runtime is {runtime}"
    )]
    RuntimeUnsupported {
        /// Bundle id.
        bundle: String,
        /// `runtime_min` of the manifest.
        min: String,
        /// `runtime_max` of the manifest.
        max: String,
        /// This runtime ([`RUNTIME_VERSION`]).
        runtime: String,
    },
    /// The version is not above the anti-rollback floor.
    #[error("bundle rejected: {bundle}: version {version} is {} the anti-rollback floor {floor} (expected a version above {floor})", if version < floor { "below" } else { "equal to" })]
    Rollback {
        /// Bundle id.
        bundle: String,
        /// The bundle's version.
        version: u32,
        /// The floor.
        floor: u32,
    },
    /// This exact bundle failed its self-test on this device before.
    #[error("bundle rejected: {bundle} failed its self-test on this device before ({reason}); it will not be installed again")]
    PreviouslyRejected {
        /// Bundle id.
        bundle: String,
        /// The recorded self-test failure.
        reason: String,
    },
    /// The state directory could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
}

impl InstallError {
    /// `refused` when the bundle or the install was refused by policy, `failed` when
    /// reading or storage failed (audit `result`).
    #[must_use]
    pub fn result(&self) -> &'static str {
        match self {
            Self::Busy { .. }
            | Self::TrialPending { .. }
            | Self::TooLarge { .. }
            | Self::Bundle(_)
            | Self::RuntimeUnsupported { .. }
            | Self::Rollback { .. }
            | Self::PreviouslyRejected { .. }
            | Self::NotRegularFile { .. } => "refused",
            _ => "failed",
        }
    }
}

/// `slots/X/meta.json`: what was installed, for status (informational; boot re-verifies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotMeta {
    /// The slot.
    pub slot: SlotName,
    /// Bundle id.
    pub bundle: String,
    /// Manifest name.
    pub name: String,
    /// Manifest version.
    pub version: u32,
    /// Hex SHA-256 of the signed manifest bytes.
    pub manifest_sha256: String,
    /// Hex SHA-256 of the whole bundle file.
    pub bundle_sha256: String,
    /// Bundle size in bytes.
    pub size: u64,
    /// Signing key id.
    pub key_id: String,
    /// Signing key name.
    pub key_name: String,
    /// Development bundle or key.
    pub development: bool,
    /// Install time, RFC 3339 UTC.
    pub installed_at: String,
    /// Where it came from (path given to install).
    pub source: String,
}

/// What an install did.
#[derive(Debug, Clone)]
pub struct InstallReport {
    /// The slot written (now active, on trial).
    pub slot: SlotName,
    /// The slot that was booted before (the fallback), if any.
    pub previous: Option<SlotName>,
    /// The slot's metadata as written.
    pub meta: SlotMeta,
}

/// The advisory lock on `state_dir/install.lock`, held while it lives.
#[derive(Debug)]
pub struct InstallLock {
    _file: File,
}

impl InstallLock {
    /// Creates `state_dir` if needed and takes the lock without waiting.
    ///
    /// # Errors
    /// [`InstallError::Busy`] if another process (or another lock in this process) holds it;
    /// [`InstallError::State`] if the file cannot be created.
    pub fn acquire(state_dir: &Path) -> Result<Self, InstallError> {
        let path = state_dir.join(LOCK_FILE);
        let io_err = |op| {
            let path = path.clone();
            move |source| StateError::Storage { op, path, source }
        };
        fs::create_dir_all(state_dir).map_err(io_err("create directory"))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open"))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(InstallError::Busy { path }),
            Err(TryLockError::Error(e)) => Err(io_err("lock")(e).into()),
        }
    }
}

/// Installs the bundle read from `source` into the inactive slot of `store` (the steps in
/// the module docs). `source_name` names it in `meta.json` and the audit log; `now` is Unix
/// seconds. The caller holds the [`InstallLock`]. Every outcome is audited.
///
/// # Errors
/// [`InstallError`]: `TrialPending`, `Source`, `TooLarge`, `Bundle`, `RuntimeUnsupported`,
/// `Rollback`, `PreviouslyRejected`, `State`.
pub fn install_in<S: SlotStore, R: Read>(
    store: &mut S,
    source: R,
    source_name: &str,
    keys: &TrustedKeys,
    opts: &VerifyOptions,
    now: u64,
) -> Result<InstallReport, InstallError> {
    let result = install_steps(store, source, source_name, keys, opts, now);
    let mut record = AuditRecord {
        time: rfc3339(now),
        action: "install".into(),
        file: Some(source_name.to_owned()),
        ..AuditRecord::default()
    };
    match &result {
        Ok(r) => {
            record.bundle = Some(r.meta.bundle.clone());
            record.key_id = Some(r.meta.key_id.clone());
            record.version = Some(r.meta.version);
            record.result = "ok".into();
            record.reason = Some(format!("installed into slot {} (on trial)", r.slot));
        }
        Err((e, verified)) => {
            if let Some(v) = verified {
                record.bundle = Some(v.bundle_id());
                record.key_id = Some(v.key.key_id.to_string());
                record.version = Some(v.manifest.version);
            }
            record.result = e.result().into();
            record.reason = Some(e.to_string());
        }
    }
    audit(store, &record);
    result.map_err(|(e, _)| e)
}

type StepError = (InstallError, Option<Box<VerifiedBundle>>);

fn install_steps<S: SlotStore, R: Read>(
    store: &mut S,
    source: R,
    source_name: &str,
    keys: &TrustedKeys,
    opts: &VerifyOptions,
    now: u64,
) -> Result<InstallReport, StepError> {
    let state = read_state_in(store).map_err(|e| (e.into(), None))?;
    let current = select_in(store, &state, keys, opts).ok();
    if let Some(cur) = current.as_ref().filter(|c| c.trial) {
        return Err((
            InstallError::TrialPending {
                slot: cur.slot,
                bundle: cur.bundle.bundle_id(),
            },
            None,
        ));
    }
    let previous = current.as_ref().map(|c| c.slot);
    let target = match (previous, state.active) {
        (Some(cur), _) => cur.other(),
        (None, Some(active)) => active.other(),
        (None, None) => SlotName::A,
    };
    drop(current);

    let staging = Path::new(STAGING_DIR);
    let staged = staging.join("bundle");
    let (size, bundle_sha256) = stage(store, source, &staged).map_err(|e| {
        discard_staging(store);
        (e, None)
    })?;

    let verified =
        check_staged(store, &staged, &state, keys, opts).inspect_err(|_| discard_staging(store))?;

    let meta = SlotMeta {
        slot: target,
        bundle: verified.bundle_id(),
        name: verified.manifest.name.clone(),
        version: verified.manifest.version,
        manifest_sha256: to_hex(&verified.manifest_sha256),
        bundle_sha256,
        size,
        key_id: verified.key.key_id.to_string(),
        key_name: verified.key.name.clone(),
        development: verified.is_development(),
        installed_at: rfc3339(now),
        source: source_name.to_owned(),
    };
    let with = |e: StateError| (InstallError::from(e), Some(Box::new(verified.clone())));
    write_slot(store, target, &meta, &staged).map_err(with)?;
    let new_state = State {
        active: Some(target),
        trial: true,
        ..state
    };
    write_state_in(store, &new_state).map_err(with)?;
    log::info!(
        "installed {} into slot {target} (on trial until the daemon's self-test passes)",
        meta.bundle
    );
    Ok(InstallReport {
        slot: target,
        previous,
        meta,
    })
}

/// Copies the source once into `staged`, hashing it; fsyncs. Returns (bytes, hex SHA-256).
fn stage<S: SlotStore, R: Read>(
    store: &mut S,
    mut source: R,
    staged: &Path,
) -> Result<(u64, String), InstallError> {
    let staging = Path::new(STAGING_DIR);
    store
        .remove_dir_all(staging)
        .map_err(storage("remove", store, staging))?;
    store
        .create_dir_all(staging)
        .map_err(storage("create directory", store, staging))?;
    store
        .create(staged)
        .map_err(storage("create", store, staged))?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; CHUNK_LEN];
    let mut total: u64 = 0;
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(InstallError::Source { at: total, source }),
        };
        total += n as u64;
        if total > MAX_BUNDLE_LEN {
            return Err(InstallError::TooLarge {
                max: MAX_BUNDLE_LEN,
            });
        }
        ctx.update(&buf[..n]);
        store
            .append(staged, &buf[..n])
            .map_err(storage("write", store, staged))?;
    }
    store
        .fsync_file(staged)
        .map_err(storage("fsync", store, staged))?;
    Ok((total, to_hex(ctx.finish().as_ref())))
}

/// Verifies the staged copy and the device policy.
fn check_staged<S: SlotStore>(
    store: &S,
    staged: &Path,
    state: &State,
    keys: &TrustedKeys,
    opts: &VerifyOptions,
) -> Result<VerifiedBundle, StepError> {
    let reader = store
        .open_read(staged)
        .map_err(|e| (storage("open", store, staged)(e).into(), None))?;
    let v = verify_bundle(reader, keys, opts).map_err(|e| (e.into(), None))?;
    let m = &v.manifest;
    let refuse = |e: InstallError| (e, Some(Box::new(v.clone())));
    m.check_runtime().map_err(|e| refuse(e.into()))?;
    if !m
        .supports_runtime(RUNTIME_VERSION)
        .map_err(|e| refuse(e.into()))?
    {
        return Err(refuse(InstallError::RuntimeUnsupported {
            bundle: v.bundle_id(),
            min: m.runtime_min.clone(),
            max: m.runtime_max.clone(),
            runtime: RUNTIME_VERSION.into(),
        }));
    }
    if m.version <= state.floor {
        return Err(refuse(InstallError::Rollback {
            bundle: v.bundle_id(),
            version: m.version,
            floor: state.floor,
        }));
    }
    if let Some(r) = state.rejection(&v.manifest_sha256) {
        return Err(refuse(InstallError::PreviouslyRejected {
            bundle: r.bundle.clone(),
            reason: r.reason.clone(),
        }));
    }
    Ok(v)
}

/// Rewrites `target`: clears it (engine cache included), writes `meta.json`, moves the
/// staged bundle in, and makes all of it durable.
fn write_slot<S: SlotStore>(
    store: &mut S,
    target: SlotName,
    meta: &SlotMeta,
    staged: &Path,
) -> Result<(), StateError> {
    let dir = target.dir();
    store
        .remove_dir_all(&dir)
        .map_err(storage("remove", store, &dir))?;
    let cache = target.cache();
    store
        .create_dir_all(&cache)
        .map_err(storage("create directory", store, &cache))?;
    let meta_path = target.meta();
    let mut json = serde_json::to_vec_pretty(meta).expect("meta serializes");
    json.push(b'\n');
    store
        .create(&meta_path)
        .map_err(storage("create", store, &meta_path))?;
    store
        .append(&meta_path, &json)
        .map_err(storage("write", store, &meta_path))?;
    store
        .fsync_file(&meta_path)
        .map_err(storage("fsync", store, &meta_path))?;
    let bundle = target.bundle();
    store
        .rename(staged, &bundle)
        .map_err(storage("rename", store, &bundle))?;
    for d in [dir.as_path(), Path::new("slots")] {
        store
            .fsync_dir(d)
            .map_err(storage("fsync directory", store, d))?;
    }
    let staging = Path::new(STAGING_DIR);
    store
        .remove_dir_all(staging)
        .map_err(storage("remove", store, staging))
}

/// Best-effort removal of `staging/` after a refusal or failure (not a retry of anything).
fn discard_staging<S: SlotStore>(store: &mut S) {
    if let Err(e) = store.remove_dir_all(Path::new(STAGING_DIR)) {
        log::warn!("cannot remove the staging directory: {e}");
    }
}

/// Installs the bundle file `bundle` into the state directory `state_dir` (created if
/// missing): takes the install lock, opens the file once (regular files only, following no
/// final symlink) and runs [`install_in`] on the real file system.
///
/// # Errors
/// [`InstallError::Busy`], [`InstallError::Open`], [`InstallError::NotRegularFile`], then
/// as [`install_in`].
pub fn install(
    bundle: &Path,
    state_dir: &Path,
    keys: &TrustedKeys,
    opts: &VerifyOptions,
) -> Result<InstallReport, InstallError> {
    let _lock = InstallLock::acquire(state_dir)?;
    install_locked(bundle, state_dir, keys, opts)
}

pub(crate) fn install_locked(
    bundle: &Path,
    state_dir: &Path,
    keys: &TrustedKeys,
    opts: &VerifyOptions,
) -> Result<InstallReport, InstallError> {
    let file = open_regular(bundle)?;
    install_in(
        &mut FsStore::new(state_dir),
        file,
        &bundle.display().to_string(),
        keys,
        opts,
        now_unix(),
    )
}

pub(crate) fn open_regular(path: &Path) -> Result<File, InstallError> {
    let open_err = |source| InstallError::Open {
        path: path.to_owned(),
        source,
    };
    let meta = fs::symlink_metadata(path).map_err(open_err)?;
    if !meta.file_type().is_file() {
        return Err(InstallError::NotRegularFile {
            path: path.to_owned(),
        });
    }
    let file = File::open(path).map_err(open_err)?;
    if !file.metadata().map_err(open_err)?.is_file() {
        return Err(InstallError::NotRegularFile {
            path: path.to_owned(),
        });
    }
    Ok(file)
}
