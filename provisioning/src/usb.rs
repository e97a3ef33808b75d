//! USB ingestion: what the udev/systemd hook runs on a mounted stick. Finds `*.bundle`
//! files (bounded: depth, entries, bundles; no symlinks followed), learns each one's
//! version from its verified head, and installs the newest acceptable one with
//! [`install`](crate::install::install). Nothing on the stick is modified; every decision
//! is audited.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use outpost_models::format::CHUNK_LEN;
use outpost_models::{verify_head, TrustedKeys, VerifyOptions};
use serde::Serialize;

use crate::audit::{audit, now_unix, rfc3339, AuditRecord};
use crate::install::{install_locked, open_regular, InstallError, InstallLock, InstallReport};
use crate::state::read_state_in;
use crate::store::FsStore;

/// Deepest directory level searched on a USB stick (the mount point is level 0).
pub const USB_MAX_DEPTH: usize = 3;

/// Most directory entries looked at on a USB stick.
pub const USB_MAX_ENTRIES: usize = 4096;

/// Most `*.bundle` files considered on a USB stick.
pub const USB_MAX_BUNDLES: usize = 16;

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
/// are tried newest first with [`install`](crate::install::install) (copy once, verify the staged copy) until one is
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
