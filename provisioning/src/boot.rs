//! Boot selection for the daemon: which slot to boot ([`boot_select`], fully verified,
//! falling back to the other slot), and the verdict of its self-test ([`mark_good`]
//! raises the anti-rollback floor, [`mark_bad`] refuses the bundle for good and switches
//! back). Also the TensorRT engine cache path of a slot ([`trt_cache_dir`]).
//!
//! The public functions work on the real file system ([`FsStore`]); each has an `*_in`
//! twin generic over [`SlotStore`] for tests.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use outpost_models::format::{self, to_hex};
use outpost_models::{verify_bundle, TrustedKeys, VerifiedBundle, VerifyOptions};

use crate::audit::{audit, now_unix, rfc3339, AuditRecord};
use crate::state::{
    bounded_reason, read_state_in, storage, write_state_in, Rejected, SlotName, State, StateError,
    MAX_REJECTED,
};
use crate::store::{FsStore, SlotStore};

/// The runtime version this build installs for (all workspace crates share one version).
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

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
    let manifest = format::decode_manifest(head.header.format_version, &head.manifest_bytes)
        .map_err(corrupt)?;
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
