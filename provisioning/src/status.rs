//! `outpost-provision status`: the state file, both slots' `meta.json` and the last audit
//! records, read without verifying anything (the daemon's boot verifies).

use std::path::Path;

use serde::Serialize;

use crate::audit::{read_audit_in, AuditRecord};
use crate::install::SlotMeta;
use crate::state::{read_state_in, SlotName, State, StateError};
use crate::store::{FsStore, SlotStore};

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
