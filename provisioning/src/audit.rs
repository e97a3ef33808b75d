//! The append-only audit log (`audit.log`, one JSON line per decision): every install,
//! USB decision, boot fallback and `mark_good` / `mark_bad`. Times are UTC RFC 3339.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::state::{storage, StateError};
use crate::store::{FsStore, SlotStore};

/// The append-only audit log (JSON lines).
pub const AUDIT_FILE: &str = "audit.log";

/// Largest audit log read by [`read_audit`], in bytes (older records are skipped).
pub const MAX_AUDIT_READ: usize = 4 * 1024 * 1024;

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
    let tail = store
        .read_tail(path, MAX_AUDIT_READ)
        .map_err(storage("read", store, path))?;
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

/// UTC RFC 3339 for seconds since the Unix epoch, e.g. `2026-05-01T12:01:01Z` (formatted
/// by `jiff`). Times after `jiff`'s last one (`9999-12-30T22:00:00Z`) print as that.
#[must_use]
pub fn rfc3339(unix_secs: u64) -> String {
    let last = jiff::Timestamp::MAX.as_second();
    let secs = i64::try_from(unix_secs).map_or(last, |s| s.min(last));
    jiff::Timestamp::from_second(secs)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// Seconds since the Unix epoch now (0 if the clock is before 1970).
#[must_use]
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the last [`MAX_AUDIT_READ`] bytes of a long log are read; a line cut at that
    /// boundary is skipped like a torn one.
    #[test]
    fn a_long_log_is_read_from_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FsStore::new(dir.path());
        let old = AuditRecord {
            action: "old".into(),
            reason: Some("x".repeat(MAX_AUDIT_READ)),
            ..AuditRecord::default()
        };
        append_audit_in(&mut store, &old).unwrap();
        let new = AuditRecord {
            action: "new".into(),
            ..AuditRecord::default()
        };
        append_audit_in(&mut store, &new).unwrap();
        assert_eq!(read_audit(dir.path(), 10).unwrap(), [new]);
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_777_636_861), "2026-05-01T12:01:01Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-30T22:00:00Z");
    }
}
