//! Installing a bundle into the inactive slot, USB ingestion, and status.
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
//! (on trial) selected by [`boot_select`](crate::slots::boot_select).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use outpost_models::format::{to_hex, CHUNK_LEN, MAX_BUNDLE_LEN};
use outpost_models::{
    verify_bundle, verify_head, BundleError, TrustedKeys, VerifiedBundle, VerifyOptions,
};
use ring::digest;
use serde::{Deserialize, Serialize};

use crate::slots::{
    audit, now_unix, read_audit_in, read_state_in, rfc3339, select_in, storage, write_state_in,
    AuditRecord, SlotName, State, StateError, RUNTIME_VERSION,
};
use crate::store::{FsStore, SlotStore};

/// The advisory lock file held during an install.
pub const LOCK_FILE: &str = "install.lock";
/// Staging directory for the copy being verified.
pub const STAGING_DIR: &str = "staging";
/// Deepest directory level searched on a USB stick (the mount point is level 0).
pub const USB_MAX_DEPTH: usize = 3;
/// Most directory entries looked at on a USB stick.
pub const USB_MAX_ENTRIES: usize = 4096;
/// Most `*.bundle` files considered on a USB stick.
pub const USB_MAX_BUNDLES: usize = 16;

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

fn install_locked(
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

fn open_regular(path: &Path) -> Result<File, InstallError> {
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

/// `*.bundle` files found under a mount point.
#[derive(Debug, Clone, Default)]
pub struct UsbScan {
    /// Regular `*.bundle` files, sorted by path (at most [`USB_MAX_BUNDLES`]).
    pub bundles: Vec<PathBuf>,
    /// Entries named `*.bundle` that were not considered, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Finds `*.bundle` files under `mount`: regular files only, symlinks never followed,
/// at most [`USB_MAX_DEPTH`] directory levels, [`USB_MAX_ENTRIES`] entries and
/// [`USB_MAX_BUNDLES`] bundles (extra ones are listed in `skipped`). Hidden entries are
/// ignored.
///
/// # Errors
/// The OS error if `mount` itself cannot be read.
pub fn usb_scan(mount: &Path) -> io::Result<UsbScan> {
    let mut scan = UsbScan::default();
    let mut seen = 0usize;
    let mut dirs = vec![(mount.to_owned(), 0usize)];
    let mut first = true;
    while let Some((dir, depth)) = dirs.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if !first => {
                log::warn!("skipping {}: {e}", dir.display());
                continue;
            }
            Err(e) => return Err(e),
        };
        first = false;
        for entry in entries {
            seen += 1;
            if seen > USB_MAX_ENTRIES {
                scan.skipped.push((
                    dir.clone(),
                    format!("search stopped after {USB_MAX_ENTRIES} entries"),
                ));
                dirs.clear();
                break;
            }
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue }; // lstat: no symlink following
            if ft.is_dir() {
                if depth < USB_MAX_DEPTH {
                    dirs.push((path, depth + 1));
                }
            } else if name.ends_with(".bundle") {
                if !ft.is_file() {
                    scan.skipped.push((
                        path,
                        "not a regular file (symlinks are not followed)".into(),
                    ));
                } else if scan.bundles.len() >= USB_MAX_BUNDLES {
                    scan.skipped
                        .push((path, format!("more than {USB_MAX_BUNDLES} bundle files")));
                } else {
                    scan.bundles.push(path);
                }
            }
        }
    }
    scan.bundles.sort();
    Ok(scan)
}

/// One decision of a USB run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsbDecision {
    /// The bundle file.
    pub file: PathBuf,
    /// `installed`, `refused`, `failed` or `skipped`.
    pub result: String,
    /// Bundle id, when the signed head verified.
    pub bundle: Option<String>,
    /// Why.
    pub reason: String,
}

/// What a USB run did.
#[derive(Debug, Clone, Default)]
pub struct UsbReport {
    /// The install that happened, if any.
    pub installed: Option<InstallReport>,
    /// Every bundle file looked at, with the decision.
    pub decisions: Vec<UsbDecision>,
}

/// What the udev/systemd hook runs on a mounted stick: [`usb_scan`], then for each bundle
/// its signed head is verified (cheap: no payload read) to learn its version; candidates
/// are tried newest first with [`install`] (copy once, verify the staged copy) until one is
/// installed. Nothing on the stick is modified. Every decision is audited.
///
/// # Errors
/// [`InstallError::Busy`], [`InstallError::TrialPending`], state directory errors, or
/// [`InstallError::Open`] if the mount point cannot be read. Refused bundles are not errors:
/// see [`UsbReport::decisions`].
pub fn usb_install(
    mount: &Path,
    state_dir: &Path,
    keys: &TrustedKeys,
    opts: &VerifyOptions,
) -> Result<UsbReport, InstallError> {
    let _lock = InstallLock::acquire(state_dir)?;
    let mut store = FsStore::new(state_dir);
    let scan = usb_scan(mount).map_err(|source| InstallError::Open {
        path: mount.to_owned(),
        source,
    })?;
    let state = read_state_in(&store)?;
    let mut report = UsbReport::default();
    for (path, reason) in scan.skipped {
        let d = UsbDecision {
            file: path,
            result: "skipped".into(),
            bundle: None,
            reason,
        };
        decide(&mut store, &mut report.decisions, d, None);
    }

    // Learn each bundle's version from its verified head.
    let mut candidates = Vec::new();
    for path in scan.bundles {
        let head = open_regular(&path).and_then(|f| {
            let h = verify_head(&mut io::BufReader::with_capacity(CHUNK_LEN, f), keys, opts)?;
            h.manifest.check_runtime()?;
            Ok(h)
        });
        match head {
            Ok(h) => candidates.push((path, h)),
            Err(e) => {
                let d = UsbDecision {
                    file: path,
                    result: e.result().into(),
                    bundle: None,
                    reason: e.to_string(),
                };
                decide(&mut store, &mut report.decisions, d, None);
            }
        }
    }
    candidates.sort_by(|a, b| {
        b.1.manifest
            .version
            .cmp(&a.1.manifest.version)
            .then_with(|| a.0.cmp(&b.0))
    });

    for (path, head) in candidates {
        let id = head.bundle_id();
        let v = Some((head.key.key_id.to_string(), head.manifest.version));
        let skip = |reason: String| UsbDecision {
            file: path.clone(),
            result: "skipped".into(),
            bundle: Some(id.clone()),
            reason,
        };
        if let Some(done) = &report.installed {
            let d = skip(format!(
                "{} was installed from this stick instead",
                done.meta.bundle
            ));
            decide(&mut store, &mut report.decisions, d, v);
            continue;
        }
        if head.manifest.version <= state.floor {
            let e = InstallError::Rollback {
                bundle: id.clone(),
                version: head.manifest.version,
                floor: state.floor,
            };
            decide(&mut store, &mut report.decisions, skip(e.to_string()), v);
            continue;
        }
        if let Some(r) = state.rejection(&head.manifest_sha256) {
            let d = skip(format!(
                "{} failed its self-test before: {}",
                r.bundle, r.reason
            ));
            decide(&mut store, &mut report.decisions, d, v);
            continue;
        }
        match install_locked(&path, state_dir, keys, opts) {
            Ok(r) => {
                report.decisions.push(UsbDecision {
                    file: path.clone(),
                    result: "installed".into(),
                    bundle: Some(r.meta.bundle.clone()),
                    reason: format!("installed into slot {} (on trial)", r.slot),
                });
                report.installed = Some(r);
            }
            Err(e @ (InstallError::TrialPending { .. } | InstallError::State(_))) => {
                return Err(e);
            }
            Err(e) => report.decisions.push(UsbDecision {
                file: path.clone(),
                result: e.result().into(),
                bundle: Some(id.clone()),
                reason: e.to_string(),
            }),
        }
    }
    Ok(report)
}

/// Audits a USB decision that `install_in` did not audit itself, and records it.
fn decide(
    store: &mut FsStore,
    decisions: &mut Vec<UsbDecision>,
    d: UsbDecision,
    v: Option<(String, u32)>,
) {
    audit(
        store,
        &AuditRecord {
            time: rfc3339(now_unix()),
            action: "usb".into(),
            file: Some(d.file.display().to_string()),
            bundle: d.bundle.clone(),
            key_id: v.as_ref().map(|(k, _)| k.clone()),
            version: v.map(|(_, ver)| ver),
            result: d.result.clone(),
            reason: Some(d.reason.clone()),
        },
    );
    decisions.push(d);
}

/// One slot in [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    /// The slot.
    pub slot: SlotName,
    /// `meta.json` of the slot, if present (not re-verified by status).
    pub meta: Option<SlotMeta>,
}

/// What `outpost-provision status` shows (and the daemon may include in its status).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The state file (active slot, trial, floor, rejected bundles).
    pub state: State,
    /// Both slots.
    pub slots: Vec<SlotStatus>,
    /// The last audit records, oldest first.
    pub audit: Vec<AuditRecord>,
}

/// Reads the state, both slots' `meta.json` and the last `last_n` audit records. Verifies
/// nothing (the daemon's boot does).
///
/// # Errors
/// [`StateError`] if the state file is unreadable or corrupt.
pub fn status(state_dir: &Path, last_n: usize) -> Result<Status, StateError> {
    let store = FsStore::new(state_dir);
    let state = read_state_in(&store)?;
    let slots = [SlotName::A, SlotName::B]
        .into_iter()
        .map(|slot| SlotStatus {
            slot,
            meta: store
                .read(&slot.meta())
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok()),
        })
        .collect();
    Ok(Status {
        state,
        slots,
        audit: read_audit_in(&store, last_n)?,
    })
}
