//! A/B slots under the state directory: the persistent state, boot selection, the
//! daemon's `mark_good` / `mark_bad`, the audit log and the TensorRT engine cache path.
//!
//! The public functions work on the real file system ([`FsStore`]); each has an `*_in`
//! twin generic over [`SlotStore`] that tests drive with the fault-injecting
//! [`MemStore`](crate::store::MemStore). See the crate README for the layout.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use outpost_models::format::{self, to_hex};
use outpost_models::{verify_bundle, TrustedKeys, VerifiedBundle, VerifyOptions};
use serde::{Deserialize, Serialize};

use crate::store::{FsStore, SlotStore};

/// The runtime version this build installs for (all workspace crates share one version).
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The state file (active slot, trial flag, anti-rollback floor, rejected bundles).
pub const STATE_FILE: &str = "state.json";
/// The append-only audit log (JSON lines).
pub const AUDIT_FILE: &str = "audit.log";
/// Largest state file read, in bytes (a larger one is [`StateError::Corrupt`]).
pub const MAX_STATE_LEN: usize = 256 * 1024;
/// Largest audit log read by [`read_audit`], in bytes (older records are skipped).
const MAX_AUDIT_READ: usize = 4 * 1024 * 1024;
/// Most rejected bundles remembered (oldest forgotten first).
pub const MAX_REJECTED: usize = 64;
/// Longest self-test failure reason kept in a [`Rejected`] entry, in bytes (longer ones
/// are cut at a character boundary and end in `…`). With [`MAX_REJECTED`] entries the
/// state file stays below the [`MAX_STATE_LEN`] bytes it is read with, whatever the
/// daemon reports.
pub const MAX_REJECTED_REASON_LEN: usize = 512;

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotName {
    /// Slot `a` (`slots/a/`).
    A,
    /// Slot `b` (`slots/b/`).
    B,
}

impl SlotName {
    /// The other slot.
    #[must_use]
    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    /// `"a"` or `"b"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
        }
    }

    /// The slot directory, relative to the state directory: `slots/a`.
    #[must_use]
    pub fn dir(self) -> PathBuf {
        Path::new("slots").join(self.as_str())
    }

    /// The slot's bundle file, relative to the state directory: `slots/a/bundle`.
    #[must_use]
    pub fn bundle(self) -> PathBuf {
        self.dir().join("bundle")
    }

    /// The slot's engine cache directory, relative to the state directory: `slots/a/cache`.
    #[must_use]
    pub fn cache(self) -> PathBuf {
        self.dir().join("cache")
    }

    /// The slot's `meta.json`, relative to the state directory.
    #[must_use]
    pub fn meta(self) -> PathBuf {
        self.dir().join("meta.json")
    }
}

impl fmt::Display for SlotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bundle refused for good after it failed its self-test on this device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// Hex SHA-256 of the signed manifest bytes.
    pub manifest_sha256: String,
    /// Bundle id (`name@version (hash prefix)`).
    pub bundle: String,
    /// Manifest version.
    pub version: u32,
    /// Why it was rejected (the daemon's self-test failure), at most
    /// [`MAX_REJECTED_REASON_LEN`] bytes.
    pub reason: String,
}

/// The contents of `state.json`, replaced as a whole (write temp, fsync, rename, fsync
/// directory), so every transition is one atomic rename.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// The slot boot tries first; `None` before the first install.
    pub active: Option<SlotName>,
    /// `true` while the active slot is installed but not yet proven by the self-test.
    pub trial: bool,
    /// Anti-rollback floor: a slot boots only with a version >= floor; an install needs a
    /// version > floor. Raised only by [`mark_good`], never lowered.
    pub floor: u32,
    /// Bundles refused after a failed trial, oldest first (at most [`MAX_REJECTED`]).
    pub rejected: Vec<Rejected>,
}

impl State {
    /// The rejection record for a manifest hash, if any.
    #[must_use]
    pub fn rejection(&self, manifest_sha256: &[u8; 32]) -> Option<&Rejected> {
        let hex = to_hex(manifest_sha256);
        self.rejected.iter().find(|r| r.manifest_sha256 == hex)
    }
}

/// Why the state directory could not be read or updated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A storage operation failed (an fsync failure is fatal and never retried).
    #[error("state dir: {op} {path} failed: {source}")]
    Storage {
        /// The operation (`fsync`, `rename`, `write`, ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A state file does not parse.
    #[error(
        "state dir: {path} is corrupt: {problem} (expected the format of provisioning/README.md)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// `mark_good` / `mark_bad` named a slot that is not the active one.
    #[error("slot {slot} is not the active slot (active: {})", active.map_or("none", SlotName::as_str))]
    NotActive {
        /// The slot named.
        slot: SlotName,
        /// The active slot.
        active: Option<SlotName>,
    },
    /// `mark_bad` on a slot that is not on trial (a proven slot is never switched away from).
    #[error(
        "slot {slot} is not on trial (only a newly installed, unproven slot can be marked bad)"
    )]
    NotOnTrial {
        /// The slot named.
        slot: SlotName,
    },
}

pub(crate) fn storage(
    op: &'static str,
    store: &impl SlotStore,
    path: &Path,
) -> impl FnOnce(io::Error) -> StateError {
    let path = store.resolve(path);
    move |source| StateError::Storage { op, path, source }
}

/// Reads `state.json`; a missing file is the empty [`State`].
///
/// # Errors
/// [`StateError::Storage`], [`StateError::Corrupt`].
pub fn read_state_in<S: SlotStore>(store: &S) -> Result<State, StateError> {
    let path = Path::new(STATE_FILE);
    if !store.exists(path) {
        return Ok(State::default());
    }
    let bytes = store.read(path).map_err(storage("read", store, path))?;
    if bytes.len() > MAX_STATE_LEN {
        return Err(StateError::Corrupt {
            path: store.resolve(path),
            problem: format!("{} bytes (limit {MAX_STATE_LEN})", bytes.len()),
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
        path: store.resolve(path),
        problem: e.to_string(),
    })
}

/// Replaces a small file atomically and durably: `NAME.tmp` written and fsynced, renamed
/// over `NAME`, then the directory fsynced. Any error (an fsync error included) is returned
/// at once, never retried.
///
/// # Errors
/// [`StateError::Storage`] naming the operation and file.
pub fn replace_file_in<S: SlotStore>(
    store: &mut S,
    path: &Path,
    data: &[u8],
) -> Result<(), StateError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    store.create(&tmp).map_err(storage("create", store, &tmp))?;
    store
        .append(&tmp, data)
        .map_err(storage("write", store, &tmp))?;
    store
        .fsync_file(&tmp)
        .map_err(storage("fsync", store, &tmp))?;
    store
        .rename(&tmp, path)
        .map_err(storage("rename", store, path))?;
    let dir = path.parent().map(Path::to_owned).unwrap_or_default();
    store
        .fsync_dir(&dir)
        .map_err(storage("fsync directory", store, &dir))
}

/// Writes `state.json` (see [`replace_file_in`]); the commit point of every transition.
///
/// # Errors
/// [`StateError::Storage`].
pub fn write_state_in<S: SlotStore>(store: &mut S, state: &State) -> Result<(), StateError> {
    let mut json = serde_json::to_vec(state).expect("state serializes");
    json.push(b'\n');
    replace_file_in(store, Path::new(STATE_FILE), &json)
}

/// One line of the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// UTC time, RFC 3339 (`2026-05-01T12:00:00Z`).
    pub time: String,
    /// `install`, `usb-scan`, `usb-skip`, `boot-fallback`, `mark-good`, `mark-bad`.
    pub action: String,
    /// The bundle file or slot concerned.
    pub file: Option<String>,
    /// Bundle id (`name@version (hash prefix)`), when known.
    pub bundle: Option<String>,
    /// Signing key id, when known.
    pub key_id: Option<String>,
    /// Manifest version, when known.
    pub version: Option<u32>,
    /// `ok`, `refused`, `failed` or `skipped`.
    pub result: String,
    /// Why (the error message for `refused` / `failed`).
    pub reason: Option<String>,
}

/// Appends one record (one JSON line) to `audit.log` and fsyncs it (and the directory when
/// the log is created).
///
/// # Errors
/// [`StateError::Storage`].
pub fn append_audit_in<S: SlotStore>(
    store: &mut S,
    record: &AuditRecord,
) -> Result<(), StateError> {
    let path = Path::new(AUDIT_FILE);
    let created = !store.exists(path);
    let mut line = serde_json::to_vec(record).expect("record serializes");
    line.push(b'\n');
    store
        .append(path, &line)
        .map_err(storage("append", store, path))?;
    store
        .fsync_file(path)
        .map_err(storage("fsync", store, path))?;
    if created {
        store
            .fsync_dir(Path::new(""))
            .map_err(storage("fsync directory", store, Path::new("")))?;
    }
    Ok(())
}

/// Appends a record; a failure is logged, not returned (the decision it records stands).
pub(crate) fn audit<S: SlotStore>(store: &mut S, record: &AuditRecord) {
    log::info!(
        "audit: {} {} {}{}",
        record.action,
        record.file.as_deref().unwrap_or("-"),
        record.result,
        record
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    if let Err(e) = append_audit_in(store, record) {
        log::error!("cannot write the audit log: {e}");
    }
}

/// The last `last_n` records of the audit log, oldest first. Unparsable lines are skipped
/// (a torn last line after a power cut); a missing log is empty.
///
/// # Errors
/// [`StateError::Storage`] if the log exists but cannot be read.
pub fn read_audit_in<S: SlotStore>(
    store: &S,
    last_n: usize,
) -> Result<Vec<AuditRecord>, StateError> {
    let path = Path::new(AUDIT_FILE);
    if !store.exists(path) {
        return Ok(Vec::new());
    }
    let bytes = store.read(path).map_err(storage("read", store, path))?;
    let tail = &bytes[bytes.len().saturating_sub(MAX_AUDIT_READ)..];
    let mut records: Vec<AuditRecord> = tail
        .split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect();
    let skip = records.len().saturating_sub(last_n);
    records.drain(..skip);
    Ok(records)
}

/// The last `last_n` records of `state_dir/audit.log`, oldest first (for status).
///
/// # Errors
/// [`StateError::Storage`] if the log exists but cannot be read.
pub fn read_audit(state_dir: &Path, last_n: usize) -> Result<Vec<AuditRecord>, StateError> {
    read_audit_in(&FsStore::new(state_dir), last_n)
}

/// UTC RFC 3339 for seconds since the Unix epoch.
#[must_use]
pub fn rfc3339(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Seconds since the Unix epoch now (0 if the clock is before 1970).
#[must_use]
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The slot the daemon boots, verified.
#[derive(Debug, Clone)]
pub struct BootChoice {
    /// The chosen slot.
    pub slot: SlotName,
    /// Its bundle, fully verified (signature, manifest, every file) just now.
    pub bundle: VerifiedBundle,
    /// `true` if the slot is newly installed and unproven: run the self-test, then call
    /// [`mark_good`] or [`mark_bad`].
    pub trial: bool,
    /// The slot's engine cache directory (see [`trt_cache_dir`]).
    pub cache_dir: PathBuf,
    /// Why the active slot was not chosen, when this is the other slot.
    pub fallback_reason: Option<String>,
}

/// No slot holds a bundle that verifies; the daemon stays in safe mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoBootableSlot {
    /// Why each slot was refused, in the order tried.
    pub reasons: Vec<(SlotName, String)>,
}

impl fmt::Display for NoBootableSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no bootable slot")?;
        for (slot, reason) in &self.reasons {
            write!(f, "; slot {slot}: {reason}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NoBootableSlot {}

/// Verifies one slot for booting: the bundle (as `verify_bundle`), the runtime range, the
/// anti-rollback floor (version >= floor), and that it was not rejected.
pub(crate) fn check_slot<S: SlotStore>(
    store: &S,
    slot: SlotName,
    state: &State,
    keys: &TrustedKeys,
    opts: &VerifyOptions,
) -> Result<VerifiedBundle, String> {
    let path = slot.bundle();
    if !store.exists(&path) {
        return Err("empty (no bundle installed)".into());
    }
    let reader = store
        .open_read(&path)
        .map_err(|e| format!("cannot open {}: {e}", store.resolve(&path).display()))?;
    let bundle = verify_bundle(reader, keys, opts).map_err(|e| e.to_string())?;
    let m = &bundle.manifest;
    match m.supports_runtime(RUNTIME_VERSION) {
        Ok(true) => {}
        Ok(false) => {
            return Err(format!(
                "{} needs runtime {}..={}, but this runtime is {RUNTIME_VERSION}",
                bundle.bundle_id(),
                m.runtime_min,
                m.runtime_max
            ))
        }
        Err(e) => return Err(e.to_string()),
    }
    if m.version < state.floor {
        return Err(format!(
            "{}: version {} is below the anti-rollback floor {}",
            bundle.bundle_id(),
            m.version,
            state.floor
        ));
    }
    if let Some(r) = state.rejection(&bundle.manifest_sha256) {
        return Err(format!(
            "{} was rejected after a failed self-test: {}",
            r.bundle, r.reason
        ));
    }
    Ok(bundle)
}

/// What [`select_in`] found, without side effects.
pub(crate) struct Selection {
    pub slot: SlotName,
    pub bundle: VerifiedBundle,
    pub trial: bool,
    pub fallback_reason: Option<String>,
}

/// Boot selection without side effects: the active slot if it verifies, else the other.
pub(crate) fn select_in<S: SlotStore>(
    store: &S,
    state: &State,
    keys: &TrustedKeys,
    opts: &VerifyOptions,
) -> Result<Selection, NoBootableSlot> {
    let first = state.active.unwrap_or(SlotName::A);
    let mut reasons = Vec::new();
    for slot in [first, first.other()] {
        match check_slot(store, slot, state, keys, opts) {
            Ok(bundle) => {
                let fallback_reason = reasons
                    .first()
                    .map(|(s, r): &(SlotName, String)| format!("active slot {s} refused: {r}"));
                let fallback_reason = if state.active.is_some() {
                    fallback_reason
                } else {
                    None
                };
                return Ok(Selection {
                    slot,
                    trial: state.trial && Some(slot) == state.active,
                    bundle,
                    fallback_reason,
                });
            }
            Err(reason) => reasons.push((slot, reason)),
        }
    }
    Err(NoBootableSlot { reasons })
}

/// [`boot_select`] on any store; `now` (Unix seconds) stamps the audit record of a fallback.
///
/// # Errors
/// [`NoBootableSlot`] with each slot's reason (a corrupt state file counts for both).
pub fn boot_select_in<S: SlotStore>(
    store: &mut S,
    keys: &TrustedKeys,
    opts: &VerifyOptions,
    now: u64,
) -> Result<BootChoice, NoBootableSlot> {
    let state = read_state_in(store).map_err(|e| NoBootableSlot {
        reasons: vec![(SlotName::A, e.to_string()), (SlotName::B, e.to_string())],
    })?;
    let sel = match select_in(store, &state, keys, opts) {
        Ok(sel) => sel,
        Err(e) => {
            audit(
                store,
                &AuditRecord {
                    time: rfc3339(now),
                    action: "boot".into(),
                    result: "failed".into(),
                    reason: Some(e.to_string()),
                    ..AuditRecord::default()
                },
            );
            return Err(e);
        }
    };
    if let Some(reason) = &sel.fallback_reason {
        log::warn!("booting slot {} instead: {reason}", sel.slot);
        audit(
            store,
            &AuditRecord {
                time: rfc3339(now),
                action: "boot-fallback".into(),
                file: Some(sel.slot.bundle().display().to_string()),
                bundle: Some(sel.bundle.bundle_id()),
                key_id: Some(sel.bundle.key.key_id.to_string()),
                version: Some(sel.bundle.manifest.version),
                result: "ok".into(),
                reason: Some(reason.clone()),
            },
        );
    }
    Ok(BootChoice {
        slot: sel.slot,
        cache_dir: store.resolve(&sel.slot.cache()),
        bundle: sel.bundle,
        trial: sel.trial,
        fallback_reason: sel.fallback_reason,
    })
}

/// Chooses the slot to boot: the active slot if its bundle verifies (full
/// `verify_bundle` with `keys` / `opts`, runtime range, version >= the anti-rollback floor,
/// not rejected), otherwise the other slot (the fallback is audited, with the reason).
///
/// # Errors
/// [`NoBootableSlot`] with the reason for each slot; the daemon then stays in safe mode.
pub fn boot_select(
    state_dir: &Path,
    keys: &TrustedKeys,
    opts: &VerifyOptions,
) -> Result<BootChoice, NoBootableSlot> {
    boot_select_in(&mut FsStore::new(state_dir), keys, opts, now_unix())
}

/// The signed manifest of an installed slot, from its bundle head (no signature check: the
/// slot was verified by [`boot_select`] before the daemon ran its self-test).
fn slot_manifest<S: SlotStore>(
    store: &S,
    slot: SlotName,
) -> Result<(outpost_models::Manifest, [u8; 32]), StateError> {
    let path = slot.bundle();
    let mut reader: Box<dyn Read + '_> = store
        .open_read(&path)
        .map_err(storage("open", store, &path))?;
    let corrupt = |e: outpost_models::BundleError| StateError::Corrupt {
        path: store.resolve(&path),
        problem: e.to_string(),
    };
    let head = format::read_head(&mut reader).map_err(corrupt)?;
    let manifest = format::decode_manifest(&head.manifest_bytes).map_err(corrupt)?;
    Ok((manifest, format::sha256(&head.manifest_bytes)))
}

/// [`mark_good`] on any store.
///
/// # Errors
/// As [`mark_good`].
pub fn mark_good_in<S: SlotStore>(
    store: &mut S,
    slot: SlotName,
    now: u64,
) -> Result<(), StateError> {
    let mut state = read_state_in(store)?;
    if state.active != Some(slot) {
        return Err(StateError::NotActive {
            slot,
            active: state.active,
        });
    }
    let (manifest, sha) = slot_manifest(store, slot)?;
    let was_trial = state.trial;
    let old_floor = state.floor;
    state.trial = false;
    state.floor = state.floor.max(manifest.version);
    let floor = state.floor;
    state.rejected.retain(|r| r.version >= floor);
    if state.trial == was_trial && state.floor == old_floor {
        return Ok(()); // Already good: nothing to write.
    }
    write_state_in(store, &state)?;
    audit(
        store,
        &AuditRecord {
            time: rfc3339(now),
            action: "mark-good".into(),
            file: Some(slot.bundle().display().to_string()),
            bundle: Some(outpost_models::verify::bundle_id(&manifest, &sha)),
            version: Some(manifest.version),
            result: "ok".into(),
            reason: Some(format!(
                "self-test passed; anti-rollback floor {old_floor} -> {}",
                state.floor
            )),
            ..AuditRecord::default()
        },
    );
    Ok(())
}

/// After the daemon's self-test passed on `slot`: clears the trial flag and raises the
/// anti-rollback floor to the slot's version (never lowers it), in one atomic state update,
/// and audits. Idempotent: call it after every successful self-test (that also completes a
/// `mark_good` cut short by a power loss).
///
/// # Errors
/// [`StateError::NotActive`] if `slot` is not the active slot, [`StateError::Storage`] /
/// [`StateError::Corrupt`] naming the file.
pub fn mark_good(state_dir: &Path, slot: SlotName) -> Result<(), StateError> {
    mark_good_in(&mut FsStore::new(state_dir), slot, now_unix())
}

/// [`mark_bad`] on any store.
///
/// # Errors
/// As [`mark_bad`].
pub fn mark_bad_in<S: SlotStore>(
    store: &mut S,
    slot: SlotName,
    reason: &str,
    now: u64,
) -> Result<(), StateError> {
    let mut state = read_state_in(store)?;
    if state.active != Some(slot) {
        return Err(StateError::NotActive {
            slot,
            active: state.active,
        });
    }
    if !state.trial {
        return Err(StateError::NotOnTrial { slot });
    }
    let (manifest, sha) = slot_manifest(store, slot)?;
    let bundle = outpost_models::verify::bundle_id(&manifest, &sha);
    if state.rejection(&sha).is_none() {
        state.rejected.push(Rejected {
            manifest_sha256: to_hex(&sha),
            bundle: bundle.clone(),
            version: manifest.version,
            reason: bounded_reason(reason),
        });
    }
    let excess = state.rejected.len().saturating_sub(MAX_REJECTED);
    state.rejected.drain(..excess);
    state.active = Some(slot.other());
    state.trial = false;
    write_state_in(store, &state)?;
    audit(
        store,
        &AuditRecord {
            time: rfc3339(now),
            action: "mark-bad".into(),
            file: Some(slot.bundle().display().to_string()),
            bundle: Some(bundle),
            version: Some(manifest.version),
            result: "ok".into(),
            reason: Some(format!(
                "self-test failed: {reason}; switched back to slot {}",
                slot.other()
            )),
            ..AuditRecord::default()
        },
    );
    Ok(())
}

/// `reason` cut to at most [`MAX_REJECTED_REASON_LEN`] bytes at a character boundary.
fn bounded_reason(reason: &str) -> String {
    if reason.len() <= MAX_REJECTED_REASON_LEN {
        return reason.to_owned();
    }
    const ELLIPSIS: &str = "…";
    let mut end = MAX_REJECTED_REASON_LEN - ELLIPSIS.len();
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &reason[..end])
}

/// After the daemon's self-test failed on the trial slot `slot`: records its manifest hash
/// as rejected (that bundle is refused on the next attempt), switches the active slot back
/// to the other one, in one atomic state update, and audits. The caller restarts (or
/// re-runs [`boot_select`]).
///
/// # Errors
/// [`StateError::NotActive`], [`StateError::NotOnTrial`] (a proven slot is never switched
/// away from), [`StateError::Storage`] / [`StateError::Corrupt`] naming the file.
pub fn mark_bad(state_dir: &Path, slot: SlotName, reason: &str) -> Result<(), StateError> {
    mark_bad_in(&mut FsStore::new(state_dir), slot, reason, now_unix())
}

/// The TensorRT engine cache directory for one model in a slot:
/// `SLOT_DIR/cache/trt-<32 hex chars>`, where the hex is the first 16 bytes of
/// SHA-256(`outpost-trt-cache-v1\0` ‖ model SHA-256 ‖ ort version ‖ `\0` ‖ TensorRT version
/// ‖ `\0` ‖ precision). A different model, ONNX Runtime, TensorRT or precision gives a
/// different directory, so a stale engine is never reused; the install clears the slot's
/// whole `cache/` when it rewrites the slot.
#[must_use]
pub fn trt_cache_dir(
    slot_dir: &Path,
    model_sha256: &[u8; 32],
    ort_version: &str,
    trt_version: &str,
    precision: &str,
) -> PathBuf {
    slot_dir.join("cache").join(format::trt_cache_key(
        model_sha256,
        ort_version,
        trt_version,
        precision,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_777_636_861), "2026-05-01T12:01:01Z");
    }

    /// The largest state `mark_bad` can write is read back: [`MAX_REJECTED`] entries with
    /// the longest name and reason, in characters JSON escapes the most.
    #[test]
    fn the_largest_state_is_readable() {
        let reason = bounded_reason(&"\u{1}".repeat(10_000));
        assert!(reason.len() <= MAX_REJECTED_REASON_LEN, "{}", reason.len());
        assert_eq!(
            bounded_reason("é".repeat(300).as_str()).len(),
            508 + "…".len()
        );
        let state = State {
            active: Some(SlotName::B),
            trial: true,
            floor: u32::MAX,
            rejected: vec![
                Rejected {
                    manifest_sha256: "f".repeat(64),
                    bundle: format!("{}@{} (ffffffffffff)", "\"".repeat(64), u32::MAX),
                    version: u32::MAX,
                    reason,
                };
                MAX_REJECTED
            ],
        };
        let mut store = crate::store::MemStore::new();
        write_state_in(&mut store, &state).unwrap();
        let len = store.read(Path::new(STATE_FILE)).unwrap().len();
        assert!(len <= MAX_STATE_LEN, "{len} bytes");
        assert_eq!(read_state_in(&store).unwrap(), state);
    }

    #[test]
    fn trt_cache_dir_changes_with_every_input() {
        let slot = Path::new("/var/lib/outpost/slots/a");
        let base = trt_cache_dir(slot, &[1; 32], "1.22.0", "10.3", "fp16");
        assert!(base.starts_with("/var/lib/outpost/slots/a/cache"));
        assert_eq!(
            base,
            trt_cache_dir(slot, &[1; 32], "1.22.0", "10.3", "fp16")
        );
        for other in [
            trt_cache_dir(slot, &[2; 32], "1.22.0", "10.3", "fp16"),
            trt_cache_dir(slot, &[1; 32], "1.22.1", "10.3", "fp16"),
            trt_cache_dir(slot, &[1; 32], "1.22.0", "10.4", "fp16"),
            trt_cache_dir(slot, &[1; 32], "1.22.0", "10.3", "fp32"),
            // Field boundaries are unambiguous.
            trt_cache_dir(slot, &[1; 32], "1.22.01", "0.3", "fp16"),
        ] {
            assert_ne!(base, other);
        }
    }
}
