//! Install, boot selection, mark good/bad and USB ingestion: every refusal leaves the state
//! directory unchanged, and a crash, EIO or ENOSPC at every step of an install leaves a
//! verified slot to boot.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use outpost_models::format::{self, HEADER_LEN, SIGNATURE_BLOCK_LEN};
use outpost_models::manifest::{
    DecisionSpec, FileEntry, ModelStage, PipelineSpec, SelfTest, StageBudgets,
};
use outpost_models::{build_bundle, BundleError, Manifest, SigningKey, TrustedKeys, VerifyOptions};
use outpost_provision::audit::read_audit_in;
use outpost_provision::boot::{boot_select_in, mark_bad_in, mark_good_in};
use outpost_provision::install::{install_in, InstallLock};
use outpost_provision::state::{read_state_in, SlotName};
use outpost_provision::store::{Fault, MemStore, SlotStore};
use outpost_provision::usb::usb_install;
use outpost_provision::{
    boot_select, install, mark_bad, mark_good, read_audit, InstallError, InstallReport,
};

const NOW: u64 = 1_777_636_861;

fn stage(file: &str) -> ModelStage {
    ModelStage {
        file: file.into(),
        inputs: vec!["input".into()],
        outputs: vec!["output".into()],
    }
}

/// Silero VAD's tensors, as the runtime feeds them.
fn vad_stage() -> ModelStage {
    ModelStage {
        file: "vad.onnx".into(),
        inputs: vec!["input".into(), "state".into(), "sr".into()],
        outputs: vec!["output".into(), "stateN".into()],
    }
}

fn manifest(version: u32, development: bool) -> Manifest {
    Manifest {
        name: "install-test".into(),
        version,
        compatible: "jetson-orin".into(),
        runtime_min: "0.1.0".into(),
        runtime_max: "0.1.99".into(),
        development,
        pipeline: PipelineSpec {
            sample_rate_hz: 16_000,
            frame_samples: 1280,
            vad: vad_stage(),
            mel: stage("mel.onnx"),
            embedding: stage("emb.onnx"),
            head: stage("head.onnx"),
            head_window: 16,
            labels: vec!["none".into(), "lights_on".into()],
            decision: DecisionSpec {
                threshold: 0.5,
                label_thresholds: vec![],
                smoothing_frames: 3,
                refractory_ms: 1000,
                vad_threshold: 0.5,
                vad_hangover_ms: 500,
            },
            budgets_us: StageBudgets {
                vad_us: 2000,
                mel_us: 1000,
                embedding_us: 8000,
                head_us: 1000,
            },
        },
        self_tests: vec![SelfTest {
            audio_file: "selftest.raw".into(),
            expect_label: "lights_on".into(),
            max_frame_us: 40_000,
        }],
        files: Vec::new(),
        verifier: None,
    }
}

const NAMES: [&str; 5] = [
    "vad.onnx",
    "mel.onnx",
    "emb.onnx",
    "head.onnx",
    "selftest.raw",
];

/// Payload of about 140 KiB, so the copy takes several 64 KiB chunks (several write steps).
fn payload(version: u32) -> Vec<(String, Vec<u8>)> {
    NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let len = if i == 2 { 120_000 } else { 5_000 + 101 * i };
            let data = (0..len)
                .map(|j| (j * 31 + i * 7 + version as usize) as u8)
                .collect();
            ((*name).to_owned(), data)
        })
        .collect()
}

struct Keys {
    prod: SigningKey,
    dev: SigningKey,
    trusted: TrustedKeys,
}

fn keys() -> Keys {
    let gen = || SigningKey::from_pkcs8(&SigningKey::generate().unwrap()).unwrap();
    let (prod, dev) = (gen(), gen());
    let trusted = TrustedKeys::from_keys(vec![
        prod.public_key("prod", false).unwrap(),
        dev.public_key("lab-dev", true).unwrap(),
    ]);
    Keys { prod, dev, trusted }
}

fn opts() -> VerifyOptions {
    VerifyOptions {
        allow_development: false,
        expected_compatible: Some("jetson-orin".into()),
    }
}

impl Keys {
    fn bundle(&self, version: u32) -> Vec<u8> {
        build_bundle(&manifest(version, false), &payload(version), &self.prod).unwrap()
    }

    fn bundle_with(&self, m: &Manifest) -> Vec<u8> {
        build_bundle(m, &payload(m.version), &self.prod).unwrap()
    }
}

/// Signs a manifest `build_bundle` would refuse (bad names, caps), with a zero payload.
fn sign_raw(key: &SigningKey, m: &Manifest) -> Vec<u8> {
    let (fv, mb) = format::encode_manifest(m).unwrap();
    let mut out = format::Header::new(fv, mb.len() as u32).encode().to_vec();
    out.extend_from_slice(&mb);
    let sig = format::SignatureBlock {
        key_id: key.key_id(),
        signature: key.sign(&format::signed_message(fv, &mb)),
    };
    out.extend_from_slice(&sig.encode());
    out
}

/// Manifest entries for `names`, each with a zero length and hash (for `sign_raw`).
fn zero_entries<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Vec<FileEntry> {
    names
        .into_iter()
        .map(|name| FileEntry {
            name: name.into(),
            len: 0,
            sha256: [0; 32],
        })
        .collect()
}

fn manifest_len(bundle: &[u8]) -> usize {
    u32::from_le_bytes(bundle[12..16].try_into().unwrap()) as usize
}

fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 0x01;
    b
}

// ---------------------------------------------------------------------------------------
// Real file system: a device with v5 installed and proven; every refusal leaves it as is.

struct Device {
    _tmp: tempfile::TempDir,
    state: PathBuf,
    incoming: PathBuf,
    keys: Keys,
}

impl Device {
    /// v5 installed into slot a, self-tested, marked good (floor 5).
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let incoming = tmp.path().join("incoming");
        fs::create_dir_all(&incoming).unwrap();
        let dev = Self {
            state,
            incoming,
            keys: keys(),
            _tmp: tmp,
        };
        let r = dev.install(&dev.keys.bundle(5), &opts()).unwrap();
        assert_eq!(r.slot, SlotName::A);
        mark_good(&dev.state, SlotName::A).unwrap();
        dev
    }

    fn install(&self, bytes: &[u8], opts: &VerifyOptions) -> Result<InstallReport, InstallError> {
        let path = self.incoming.join("x.bundle");
        fs::write(&path, bytes).unwrap();
        install(&path, &self.state, &self.keys.trusted, opts)
    }

    /// Every file under the state directory except the audit log and the lock file.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(root).unwrap().to_owned();
                if p.is_dir() {
                    out.insert(rel.join(""), Vec::new());
                    walk(root, &p, out);
                } else if rel != Path::new("audit.log") && rel != Path::new("install.lock") {
                    out.insert(rel, fs::read(&p).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.state, &self.state, &mut out);
        out
    }

    /// Installs `bytes` with `opts()`, expects a refusal matching `check`, and proves that
    /// the state directory is unchanged, the refusal is audited, and v5 still boots.
    #[track_caller]
    fn refused(&self, bytes: &[u8], check: impl Fn(&InstallError) -> bool) {
        let before = self.snapshot();
        let audit_before = read_audit(&self.state, 1000).unwrap().len();
        let err = self
            .install(bytes, &opts())
            .expect_err("install must be refused");
        assert!(check(&err), "unexpected error: {err}");
        assert_eq!(self.snapshot(), before, "state dir changed after: {err}");
        let audit = read_audit(&self.state, 1000).unwrap();
        assert_eq!(audit.len(), audit_before + 1);
        let last = audit.last().unwrap();
        assert_eq!(last.action, "install");
        assert_eq!(last.reason.as_deref(), Some(err.to_string().as_str()));
        assert_ne!(last.result, "ok");
        let choice = boot_select(&self.state, &self.keys.trusted, &opts_dev()).unwrap();
        assert_eq!(
            (choice.slot, choice.bundle.manifest.version, choice.trial),
            (SlotName::A, 5, false)
        );
    }

    /// `refused`, for a bundle error matching `check`.
    #[track_caller]
    fn refused_bundle(&self, bytes: &[u8], check: impl Fn(&BundleError) -> bool) {
        self.refused(bytes, |e| matches!(e, InstallError::Bundle(b) if check(b)));
    }

    /// `refused_bundle`, for `m` signed by `sign_raw` with the production key.
    #[track_caller]
    fn refused_raw(&self, m: &Manifest, check: impl Fn(&BundleError) -> bool) {
        self.refused_bundle(&sign_raw(&self.keys.prod, m), check);
    }
}

fn opts_dev() -> VerifyOptions {
    VerifyOptions {
        allow_development: true,
        ..opts()
    }
}

fn is_bad_signature(b: &BundleError) -> bool {
    matches!(b, BundleError::BadSignature { .. })
}

/// A rollback refusal of `version` against the floor 5, with `text` in its message.
fn is_rollback(e: &InstallError, version: u32, text: &str) -> bool {
    matches!(e, InstallError::Rollback { version: v, floor: 5, .. } if *v == version)
        && e.to_string().contains(text)
}

#[test]
fn install_then_mark_good_raises_floor_and_boots_new_slot() {
    let dev = Device::new();
    let r = dev.install(&dev.keys.bundle(6), &opts()).unwrap();
    assert_eq!((r.slot, r.previous), (SlotName::B, Some(SlotName::A)));
    let choice = boot_select(&dev.state, &dev.keys.trusted, &opts()).unwrap();
    assert_eq!((choice.slot, choice.trial), (SlotName::B, true));
    assert_eq!(choice.cache_dir, dev.state.join("slots/b/cache"));
    assert!(choice.cache_dir.is_dir());
    assert_eq!(choice.fallback_reason, None);
    mark_good(&dev.state, SlotName::B).unwrap();
    let s = outpost_provision::status(&dev.state, 10).unwrap();
    assert_eq!(
        (s.state.active, s.state.trial, s.state.floor),
        (Some(SlotName::B), false, 6)
    );
    assert_eq!(s.slots[1].meta.as_ref().unwrap().version, 6);
    assert!(!dev.state.join("staging").exists());
    // mark_good never lowers the floor and is idempotent.
    mark_good(&dev.state, SlotName::B).unwrap();
    assert_eq!(
        read_state_in(&outpost_provision::FsStore::new(&dev.state))
            .unwrap()
            .floor,
        6
    );
}

#[test]
fn flipped_byte_in_signature_refused() {
    let dev = Device::new();
    let b = dev.keys.bundle(6);
    let sig = HEADER_LEN + manifest_len(&b);
    for at in [sig + 8, sig + 40, sig + SIGNATURE_BLOCK_LEN - 1] {
        dev.refused_bundle(&flipped(&b, at), is_bad_signature);
    }
}

#[test]
fn flipped_byte_in_manifest_refused() {
    let dev = Device::new();
    let b = dev.keys.bundle(6);
    for at in [
        HEADER_LEN,
        HEADER_LEN + manifest_len(&b) / 2,
        HEADER_LEN + manifest_len(&b) - 1,
    ] {
        dev.refused_bundle(&flipped(&b, at), is_bad_signature);
    }
}

#[test]
fn flipped_byte_in_each_payload_file_refused() {
    let dev = Device::new();
    let b = dev.keys.bundle(6);
    let mut at = HEADER_LEN + manifest_len(&b) + SIGNATURE_BLOCK_LEN;
    for (name, data) in payload(6) {
        dev.refused_bundle(
            &flipped(&b, at + data.len() / 2),
            |b| matches!(b, BundleError::HashMismatch { name: n, .. } if *n == name),
        );
        at += data.len();
    }
}

#[test]
fn truncated_bundle_refused_at_several_offsets() {
    let dev = Device::new();
    let b = dev.keys.bundle(6);
    let m = manifest_len(&b);
    for cut in [
        0,
        10,
        HEADER_LEN,
        HEADER_LEN + m / 2,
        HEADER_LEN + m + 30,
        HEADER_LEN + m + SIGNATURE_BLOCK_LEN + 1000,
        b.len() / 2,
        b.len() - 1,
    ] {
        dev.refused_bundle(&b[..cut], |b| {
            matches!(
                b,
                BundleError::Truncated { .. } | BundleError::FileTruncated { .. }
            )
        });
    }
}

#[test]
fn oversized_manifest_field_refused() {
    let dev = Device::new();
    let mut m = manifest(6, false);
    m.name = "n".repeat(65);
    m.files = zero_entries(NAMES);
    dev.refused_raw(
        &m,
        |b| matches!(b, BundleError::StringLength { field, .. } if field == "name"),
    );
}

/// The defect of issue 21: 33 labels (over the protocol's 32) used to install and then
/// send the device to safe mode at boot.
#[test]
fn labels_over_the_wire_limit_refused() {
    let dev = Device::new();
    let mut m = manifest(6, false);
    m.pipeline.labels = (0..33).map(|i| format!("command{i}")).collect();
    m.self_tests[0].expect_label = "command0".into();
    m.files = zero_entries(NAMES);
    dev.refused_raw(&m, |b| {
        matches!(b, BundleError::TooMany { what, count: 33, max: 32 } if what == "pipeline.labels")
    });
}

/// Valid as a bundle, but not a pipeline the runtime builds: refused at install, not boot.
#[test]
fn pipeline_the_runtime_cannot_serve_refused() {
    let dev = Device::new();
    let mut m = manifest(6, false);
    m.pipeline.vad = stage("vad.onnx");
    dev.refused(&dev.keys.bundle_with(&m), |e| {
        e.to_string()
            == "bundle rejected: pipeline.vad.inputs: names 1 tensors (the runtime uses exactly 3)"
    });
    let mut m = manifest(6, false);
    m.self_tests[0].max_frame_us = 0;
    dev.refused(&dev.keys.bundle_with(&m), |e| {
        e.to_string().contains("self_tests[0].max_frame_us: is 0")
    });
}

#[test]
fn oversized_file_count_refused() {
    let dev = Device::new();
    let mut m = manifest(6, false);
    m.files = zero_entries(
        (0..33)
            .map(|i| format!("f{i}"))
            .chain(NAMES.map(String::from)),
    );
    dev.refused_raw(
        &m,
        |b| matches!(b, BundleError::TooMany { what, .. } if what == "files"),
    );
}

#[test]
fn path_traversal_and_absolute_names_refused() {
    let dev = Device::new();
    for bad in [
        "../escape",
        "/etc/passwd",
        "a/../../b",
        "..",
        ".hidden",
        "sub/file",
    ] {
        let mut m = manifest(6, false);
        m.files = zero_entries(std::iter::once(bad).chain(NAMES));
        dev.refused_raw(&m, |b| matches!(b, BundleError::InvalidFileName { .. }));
    }
    assert!(!dev.state.parent().unwrap().join("escape").exists());
}

#[test]
fn unknown_key_id_refused() {
    let dev = Device::new();
    let stranger = SigningKey::from_pkcs8(&SigningKey::generate().unwrap()).unwrap();
    let b = build_bundle(&manifest(6, false), &payload(6), &stranger).unwrap();
    dev.refused_bundle(&b, |b| matches!(b, BundleError::UnknownKey { .. }));
}

#[test]
fn dev_key_without_development_flag_refused() {
    let dev = Device::new();
    let b = build_bundle(&manifest(6, true), &payload(6), &dev.keys.dev).unwrap();
    dev.refused_bundle(&b, |b| matches!(b, BundleError::DevelopmentRefused { .. }));
    // With the flag it installs.
    let r = dev.install(&b, &opts_dev()).unwrap();
    assert!(r.meta.development);
}

#[test]
fn older_version_refused_as_rollback() {
    let dev = Device::new();
    dev.refused(&dev.keys.bundle(3), |e| {
        is_rollback(e, 3, "version 3 is below the anti-rollback floor 5")
    });
}

#[test]
fn equal_version_refused() {
    let dev = Device::new();
    dev.refused(&dev.keys.bundle(5), |e| {
        is_rollback(e, 5, "equal to the anti-rollback floor 5")
    });
}

#[test]
fn wrong_compatible_string_refused() {
    let dev = Device::new();
    let mut m = manifest(6, false);
    m.compatible = "raspberry-pi".into();
    dev.refused_bundle(&dev.keys.bundle_with(&m), |b| {
        matches!(b, BundleError::Incompatible { .. })
    });
}

#[test]
fn runtime_version_outside_range_refused() {
    let dev = Device::new();
    for (min, max) in [("0.2.0", "0.3.0"), ("0.0.1", "0.0.9")] {
        let mut m = manifest(6, false);
        m.runtime_min = min.into();
        m.runtime_max = max.into();
        dev.refused(&dev.keys.bundle_with(&m), |e| {
            matches!(e, InstallError::RuntimeUnsupported { .. })
                && e.to_string().contains("this runtime is 0.1.0")
        });
    }
}

#[test]
fn oversized_source_refused() {
    // Exceeding MAX_BUNDLE_LEN needs > 256 MiB; check the bound through a fake reader.
    let mut store = MemStore::new();
    let k = keys();
    let endless = io::repeat(0).take(format::MAX_BUNDLE_LEN + 1);
    let err = install_in(&mut store, endless, "huge.bundle", &k.trusted, &opts(), NOW).unwrap_err();
    assert!(matches!(err, InstallError::TooLarge { .. }), "{err}");
    assert!(!store.exists(Path::new("staging")));
    assert!(!store.exists(Path::new("state.json")));
}

#[test]
fn self_test_failure_marks_bad_falls_back_and_refuses_bundle_next_time() {
    let dev = Device::new();
    let v6 = dev.keys.bundle(6);
    dev.install(&v6, &opts()).unwrap();
    let choice = boot_select(&dev.state, &dev.keys.trusted, &opts()).unwrap();
    assert!(choice.trial);
    // A proven slot cannot be marked bad, and only the active slot can be marked.
    assert!(mark_bad(&dev.state, SlotName::A, "x").is_err());
    mark_bad(
        &dev.state,
        SlotName::B,
        "self-test lights_on.raw: no detection",
    )
    .unwrap();
    let choice = boot_select(&dev.state, &dev.keys.trusted, &opts()).unwrap();
    assert_eq!(
        (choice.slot, choice.bundle.manifest.version, choice.trial),
        (SlotName::A, 5, false)
    );
    let s = outpost_provision::status(&dev.state, 10).unwrap();
    assert_eq!(s.state.floor, 5, "floor not raised by a failed trial");
    assert_eq!(s.state.rejected.len(), 1);
    assert_eq!(s.audit.last().unwrap().action, "mark-bad");
    dev.refused(&v6, |e| {
        matches!(e, InstallError::PreviouslyRejected { .. })
            && e.to_string().contains("no detection")
    });
    // A rebuilt v6 (different manifest hash) is accepted.
    let mut m = manifest(6, false);
    m.pipeline.decision.threshold = 0.6;
    dev.install(&dev.keys.bundle_with(&m), &opts()).unwrap();
}

#[test]
fn install_while_another_install_pending_is_refused() {
    let dev = Device::new();
    // Another process holds the lock.
    let lock = InstallLock::acquire(&dev.state).unwrap();
    let before = dev.snapshot();
    let err = dev.install(&dev.keys.bundle(6), &opts()).unwrap_err();
    assert!(matches!(err, InstallError::Busy { .. }), "{err}");
    assert!(
        err.to_string().contains("another install is in progress"),
        "{err}"
    );
    assert_eq!(dev.snapshot(), before);
    drop(lock);
    // A previous install still on trial (not yet self-tested).
    dev.install(&dev.keys.bundle(6), &opts()).unwrap();
    let before = dev.snapshot();
    let err = dev.install(&dev.keys.bundle(7), &opts()).unwrap_err();
    assert!(
        matches!(
            err,
            InstallError::TrialPending {
                slot: SlotName::B,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(dev.snapshot(), before);
    mark_good(&dev.state, SlotName::B).unwrap();
    assert_eq!(
        dev.install(&dev.keys.bundle(7), &opts()).unwrap().slot,
        SlotName::A
    );
}

#[test]
fn rewriting_a_slot_clears_its_engine_cache() {
    let dev = Device::new();
    dev.install(&dev.keys.bundle(6), &opts()).unwrap();
    mark_good(&dev.state, SlotName::B).unwrap();
    let stale = outpost_provision::trt_cache_dir(
        &dev.state.join("slots/a"),
        &[7; 32],
        "1.22",
        "10.3",
        "fp16",
    );
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join("engine.trt"), b"stale").unwrap();
    assert_eq!(
        dev.install(&dev.keys.bundle(7), &opts()).unwrap().slot,
        SlotName::A
    );
    assert!(!stale.exists());
    assert!(dev.state.join("slots/a/cache").is_dir());
}

#[test]
fn corrupted_active_slot_falls_back_with_reason() {
    let dev = Device::new();
    dev.install(&dev.keys.bundle(6), &opts()).unwrap();
    let bundle = dev.state.join("slots/b/bundle");
    let mut bytes = fs::read(&bundle).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&bundle, bytes).unwrap();
    let choice = boot_select(&dev.state, &dev.keys.trusted, &opts()).unwrap();
    assert_eq!((choice.slot, choice.trial), (SlotName::A, false));
    let reason = choice.fallback_reason.unwrap();
    assert!(
        reason.contains("active slot b refused") && reason.contains("SHA-256 mismatch"),
        "{reason}"
    );
    assert_eq!(
        read_audit(&dev.state, 1).unwrap()[0].action,
        "boot-fallback"
    );
    // Both broken: safe mode, with a reason per slot.
    fs::write(dev.state.join("slots/a/bundle"), b"junk").unwrap();
    let err = boot_select(&dev.state, &dev.keys.trusted, &opts()).unwrap_err();
    assert_eq!(err.reasons.len(), 2);
    assert!(
        err.to_string()
            .contains("slot a: bundle rejected: truncated in the header"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Source faults.

/// Yields `data`, then fails with EIO (the stick was pulled).
struct PulledStick<'a> {
    data: &'a [u8],
    pos: usize,
    fail_at: usize,
}

impl Read for PulledStick<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.fail_at {
            return Err(io::Error::other("EIO: device removed"));
        }
        let n = buf
            .len()
            .min(self.fail_at - self.pos)
            .min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Installs `k.bundle(version)` into `store`, read from memory under the name `file`.
fn install_version(
    store: &mut MemStore,
    k: &Keys,
    version: u32,
    file: &str,
) -> Result<InstallReport, InstallError> {
    install_in(
        store,
        k.bundle(version).as_slice(),
        file,
        &k.trusted,
        &opts(),
        NOW,
    )
}

/// A good device in memory: v1 installed in slot a and proven (floor 1).
fn mem_device(k: &Keys) -> MemStore {
    let mut store = MemStore::new();
    install_version(&mut store, k, 1, "v1.bundle").unwrap();
    mark_good_in(&mut store, SlotName::A, NOW).unwrap();
    store
}

#[test]
fn usb_stick_removed_mid_copy() {
    let k = keys();
    let b = k.bundle(2);
    for fail_at in [0, 100, 70_000, b.len() - 1] {
        let mut store = mem_device(&k);
        let before = store.reboot();
        let src = PulledStick {
            data: &b,
            pos: 0,
            fail_at,
        };
        let err =
            install_in(&mut store, src, "pulled.bundle", &k.trusted, &opts(), NOW).unwrap_err();
        assert!(matches!(err, InstallError::Source { .. }), "{err}");
        assert!(err.to_string().contains("was the stick removed?"), "{err}");
        assert!(!store.exists(Path::new("staging")));
        assert_eq!(
            read_state_in(&store).unwrap(),
            read_state_in(&before).unwrap()
        );
        let c = boot_select_in(&mut store, &k.trusted, &opts(), NOW).unwrap();
        assert_eq!((c.slot, c.bundle.manifest.version), (SlotName::A, 1));
    }
}

/// Returns the good bundle up to its end once; any read after that end returns other
/// bytes (as a flaky or malicious stick might on a second pass).
struct FickleStick {
    good: Vec<u8>,
    pos: usize,
    eof_seen: bool,
}

impl Read for FickleStick {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.good.len() {
            if !self.eof_seen {
                self.eof_seen = true;
                return Ok(0);
            }
            buf.fill(0xee);
            return Ok(buf.len());
        }
        let n = buf.len().min(self.good.len() - self.pos);
        buf[..n].copy_from_slice(&self.good[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn stick_returning_different_bytes_on_second_read_does_not_matter() {
    let k = keys();
    let mut store = mem_device(&k);
    let good = k.bundle(2);
    let src = FickleStick {
        good: good.clone(),
        pos: 0,
        eof_seen: false,
    };
    install_in(&mut store, src, "fickle.bundle", &k.trusted, &opts(), NOW).unwrap();
    // The slot holds exactly what was read once and verified.
    assert_eq!(store.read(&SlotName::B.bundle()).unwrap(), good);
    let c = boot_select_in(&mut store, &k.trusted, &opts(), NOW).unwrap();
    assert_eq!(
        (c.slot, c.bundle.manifest.version, c.trial),
        (SlotName::B, 2, true)
    );
}

// ---------------------------------------------------------------------------------------
// Storage faults at every step.

/// Injects `fault` into a fresh `mem_device`, then installs v2 on it: the store and the
/// install's result.
fn install_v2_with(k: &Keys, fault: Fault) -> (MemStore, Result<InstallReport, InstallError>) {
    let mut store = mem_device(k);
    store.inject(fault);
    let result = install_version(&mut store, k, 2, "v2.bundle");
    (store, result)
}

/// Number of mutating operations a fault-free install of v2 performs on `mem_device`.
fn install_ops(k: &Keys) -> usize {
    let (store, result) = install_v2_with(k, Fault::EioAt(usize::MAX));
    result.unwrap();
    store.ops()
}

/// After a fault: boot selection yields v1 (proven) or v2 (on trial), the state is
/// consistent enough to finish the trial and install v3, which then boots.
#[track_caller]
fn assert_recovers(store: &mut MemStore, k: &Keys, what: &str) -> u32 {
    let c = boot_select_in(store, &k.trusted, &opts(), NOW)
        .unwrap_or_else(|e| panic!("{what}: no bootable slot: {e}"));
    let v = c.bundle.manifest.version;
    match v {
        1 => assert_eq!((c.slot, c.trial), (SlotName::A, false), "{what}"),
        2 => assert_eq!((c.slot, c.trial), (SlotName::B, true), "{what}"),
        _ => panic!("{what}: booted version {v}"),
    }
    if c.trial {
        mark_good_in(store, c.slot, NOW).unwrap();
    }
    let r = install_version(store, k, 3, "v3.bundle")
        .unwrap_or_else(|e| panic!("{what}: next install failed: {e}"));
    assert_eq!(r.slot, c.slot.other(), "{what}");
    let c3 = boot_select_in(store, &k.trusted, &opts(), NOW).unwrap();
    assert_eq!((c3.bundle.manifest.version, c3.trial), (3, true), "{what}");
    v
}

#[test]
fn process_killed_after_every_install_step_leaves_a_verified_slot() {
    let k = keys();
    let n = install_ops(&k);
    assert!(n >= 20, "only {n} operations");
    let mut switched_at = None;
    for step in 1..=n {
        let (store, result) = install_v2_with(&k, Fault::CrashAfter(step));
        assert!(store.is_crashed(), "step {step}: no crash");
        let trace = store.trace().to_vec();
        let mut rebooted = store.reboot();
        let what = format!("crash after step {step} ({})", trace.last().unwrap());
        let v = assert_recovers(&mut rebooted, &k, &what);
        // Once the switch is durable it stays durable; before it, the install must not
        // have claimed success... unless only the audit record was lost.
        if v == 2 && switched_at.is_none() {
            switched_at = Some(step);
        }
        if let Some(s) = switched_at {
            assert_eq!(v, 2, "{what}: switched at step {s}, then back");
        }
        if v == 1 {
            assert!(
                result.is_err(),
                "{what}: install claimed success but the old slot boots"
            );
        }
    }
    let switched_at = switched_at.expect("the new slot is selected after a full install");
    eprintln!("crash points: {n}; new slot durable from step {switched_at}");
}

#[test]
fn eio_at_every_install_step_is_fatal_and_leaves_a_verified_slot() {
    let k = keys();
    let n = install_ops(&k);
    for step in 1..=n {
        let (mut store, result) = install_v2_with(&k, Fault::EioAt(step));
        let failed_op = store.trace()[step - 1].clone();
        let what = format!("EIO at step {step} ({failed_op})");
        if failed_op.starts_with("fsync") && !failed_op.contains("audit.log") {
            assert!(result.is_err(), "{what}: fsync error not fatal");
            let retries = store.trace()[step..]
                .iter()
                .filter(|t| **t == failed_op)
                .count();
            assert_eq!(retries, 0, "{what}: fsync retried");
        }
        // Without a reboot, and after one.
        let mut rebooted = store.reboot();
        assert_recovers(&mut store, &k, &format!("{what}, no reboot"));
        assert_recovers(&mut rebooted, &k, &format!("{what}, rebooted"));
    }
    eprintln!("EIO points: {n}");
}

#[test]
fn disk_full_while_writing_the_slot() {
    let k = keys();
    let n = install_ops(&k);
    let mut refused = 0;
    for step in 1..=n {
        let (mut store, result) = install_v2_with(&k, Fault::FullFrom(step));
        let what = format!("ENOSPC from step {step}");
        if let Err(e) = &result {
            refused += 1;
            assert!(
                e.to_string().contains("no space left on device"),
                "{what}: {e}"
            );
        }
        store.inject(Fault::EioAt(usize::MAX)); // Space freed again.
        let mut rebooted = store.reboot();
        assert_recovers(&mut store, &k, &what);
        assert_recovers(&mut rebooted, &k, &format!("{what}, rebooted"));
    }
    assert!(refused > n / 2);
}

#[test]
fn crash_during_mark_good_and_mark_bad_leaves_a_verified_slot() {
    let k = keys();
    for bad in [false, true] {
        let mut probe = mem_device(&k);
        install_version(&mut probe, &k, 2, "v2.bundle").unwrap();
        let base = probe.reboot();
        let mut count = base.clone();
        count.inject(Fault::EioAt(usize::MAX));
        if bad {
            mark_bad_in(&mut count, SlotName::B, "no detection", NOW).unwrap();
        } else {
            mark_good_in(&mut count, SlotName::B, NOW).unwrap();
        }
        for step in 1..=count.ops() {
            let mut store = base.clone();
            store.inject(Fault::CrashAfter(step));
            let _ = if bad {
                mark_bad_in(&mut store, SlotName::B, "no detection", NOW)
            } else {
                mark_good_in(&mut store, SlotName::B, NOW)
            };
            let mut r = store.reboot();
            let c = boot_select_in(&mut r, &k.trusted, &opts(), NOW).unwrap();
            let s = read_state_in(&r).unwrap();
            if bad {
                // Either still on trial (the daemon self-tests again) or back on v1.
                assert!(
                    (c.slot == SlotName::B && c.trial)
                        || (c.slot == SlotName::A && !c.trial && s.rejected.len() == 1),
                    "mark_bad crash at {step}: {c:?}"
                );
            } else {
                // Trial and floor change together.
                assert!(
                    (c.trial && s.floor == 1) || (!c.trial && s.floor == 2),
                    "mark_good crash at {step}"
                );
                assert_eq!(c.slot, SlotName::B);
            }
        }
        eprintln!(
            "mark_{} crash points: {}",
            if bad { "bad" } else { "good" },
            count.ops()
        );
    }
}

#[test]
fn audit_records_each_decision() {
    let k = keys();
    let mut store = mem_device(&k);
    let _ = install_version(&mut store, &k, 1, "old.bundle");
    let recs = read_audit_in(&store, 10).unwrap();
    let actions: Vec<_> = recs
        .iter()
        .map(|r| (r.action.as_str(), r.result.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("install", "ok"),
            ("mark-good", "ok"),
            ("install", "refused")
        ]
    );
    let last = recs.last().unwrap();
    assert_eq!(last.time, "2026-05-01T12:01:01Z");
    assert_eq!(last.file.as_deref(), Some("old.bundle"));
    assert_eq!(last.version, Some(1));
    assert!(last
        .bundle
        .as_deref()
        .unwrap()
        .starts_with("install-test@1 ("));
    assert_eq!(last.key_id, Some(k.prod.key_id().to_string()));
    assert_eq!(read_audit_in(&store, 1).unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------
// USB.

#[test]
fn usb_installs_newest_valid_bundle_and_leaves_the_rest() {
    let dev = Device::new();
    let stick = dev.incoming.join("stick");
    fs::create_dir_all(stick.join("models/deep")).unwrap();
    fs::write(stick.join("v6.bundle"), dev.keys.bundle(6)).unwrap();
    fs::write(stick.join("models/v7.bundle"), dev.keys.bundle(7)).unwrap();
    let mut broken = dev.keys.bundle(9);
    let last = broken.len() - 1;
    broken[last] ^= 1;
    fs::write(stick.join("models/v9-broken.bundle"), &broken).unwrap();
    fs::write(stick.join("v4-old.bundle"), dev.keys.bundle(4)).unwrap();
    fs::write(stick.join("notes.txt"), b"not a bundle").unwrap();
    fs::create_dir_all(stick.join("a/b/c/d")).unwrap();
    fs::write(stick.join("a/b/c/d/too-deep.bundle"), dev.keys.bundle(8)).unwrap();
    std::os::unix::fs::symlink(stick.join("v6.bundle"), stick.join("link.bundle")).unwrap();
    let before: Vec<_> = walk_files(&stick);

    let r = usb_install(&stick, &dev.state, &dev.keys.trusted, &opts()).unwrap();
    let installed = r.installed.expect("installed");
    assert_eq!((installed.meta.version, installed.slot), (7, SlotName::B));
    let by_file: BTreeMap<String, String> = r
        .decisions
        .iter()
        .map(|d| {
            (
                d.file.strip_prefix(&stick).unwrap().display().to_string(),
                d.result.clone(),
            )
        })
        .collect();
    assert_eq!(by_file["models/v7.bundle"], "installed");
    assert_eq!(by_file["models/v9-broken.bundle"], "refused");
    assert_eq!(by_file["v6.bundle"], "skipped");
    assert_eq!(by_file["v4-old.bundle"], "skipped");
    assert_eq!(by_file["link.bundle"], "skipped");
    assert!(!by_file.contains_key("a/b/c/d/too-deep.bundle"));
    assert_eq!(walk_files(&stick), before, "the stick was modified");
    let audit = read_audit(&dev.state, 100).unwrap();
    for file in [
        "v9-broken.bundle",
        "v4-old.bundle",
        "link.bundle",
        "v7.bundle",
        "v6.bundle",
    ] {
        assert!(
            audit
                .iter()
                .any(|a| a.file.as_deref().is_some_and(|f| f.ends_with(file))),
            "{file} not audited"
        );
    }
    // A second run while v7 is on trial is refused as a whole.
    let err = usb_install(&stick, &dev.state, &dev.keys.trusted, &opts()).unwrap_err();
    assert!(matches!(err, InstallError::TrialPending { .. }), "{err}");
}

fn walk_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let ft = fs::symlink_metadata(&p).unwrap().file_type();
        if ft.is_dir() {
            out.extend(walk_files(&p));
        } else if ft.is_file() {
            out.push((p.clone(), fs::read(&p).unwrap()));
        } else {
            out.push((
                p.clone(),
                fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes(),
            ));
        }
    }
    out.sort();
    out
}
