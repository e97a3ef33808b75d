//! The persistent state of the A/B slots: `state.json` (active slot, trial flag,
//! anti-rollback floor, rejected bundles), the slot names and paths, and the atomic,
//! durable file replacement every transition commits with.
//!
//! Every function has an `*_in` form generic over [`SlotStore`], so tests drive it with
//! the fault-injecting [`MemStore`](crate::store::MemStore). See the crate README for the
//! layout of the state directory.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use outpost_models::format::to_hex;
use serde::{Deserialize, Serialize};

use crate::store::SlotStore;

/// The state file (active slot, trial flag, anti-rollback floor, rejected bundles).
pub const STATE_FILE: &str = "state.json";

/// Largest state file read, in bytes (a larger one is [`StateError::Corrupt`]).
pub const MAX_STATE_LEN: usize = 256 * 1024;

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
    /// version > floor. Raised only by [`mark_good`](crate::boot::mark_good), never lowered.
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
    let mut bytes = Vec::new();
    store
        .open_read(path)
        .and_then(|r| r.take(MAX_STATE_LEN as u64 + 1).read_to_end(&mut bytes))
        .map_err(storage("read", store, path))?;
    if bytes.len() > MAX_STATE_LEN {
        return Err(StateError::Corrupt {
            path: store.resolve(path),
            problem: format!("more than {MAX_STATE_LEN} bytes (limit {MAX_STATE_LEN})"),
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

/// `reason` cut to at most [`MAX_REJECTED_REASON_LEN`] bytes at a character boundary.
pub(crate) fn bounded_reason(reason: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
