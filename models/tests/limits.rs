//! The bundle's limits against the wire's and the runtime's: a manifest the device could
//! not announce or serve is refused by `build_bundle` and `verify_bundle` (and, for the
//! runtime's rules, by `Manifest::check_runtime`), never first at boot.

use outpost_models::format::{
    self, FRAME_SAMPLES, MAX_HEAD_WINDOW, MAX_LABELS, MAX_SMOOTHING_FRAMES, MAX_STRING_LEN,
    SAMPLE_RATE_HZ,
};
use outpost_models::manifest::{
    DecisionSpec, FileEntry, ModelStage, PipelineSpec, SelfTest, StageBudgets,
};
use outpost_models::{
    build_bundle, verify_bundle, BundleError, Manifest, SigningKey, TrustedKeys, VerifyOptions,
};
use outpost_protocol::{encode_frame, HelloAck, Response, MAX_FRAME_BYTES, MAX_PAYLOAD_BYTES};

fn stage(file: &str, inputs: &[&str], outputs: &[&str]) -> ModelStage {
    ModelStage {
        file: file.into(),
        inputs: inputs.iter().map(|s| (*s).into()).collect(),
        outputs: outputs.iter().map(|s| (*s).into()).collect(),
    }
}

/// A manifest shaped like the reference bundle's (tensor counts as the runtime uses them).
fn manifest() -> Manifest {
    Manifest {
        name: "limits-test".into(),
        version: 1,
        compatible: "any".into(),
        runtime_min: "0.1.0".into(),
        runtime_max: "0.99.0".into(),
        development: false,
        pipeline: PipelineSpec {
            sample_rate_hz: 16_000,
            frame_samples: 1280,
            vad: stage("vad.onnx", &["input", "state", "sr"], &["output", "stateN"]),
            mel: stage("mel.onnx", &["input"], &["output"]),
            embedding: stage("emb.onnx", &["input_1"], &["conv2d_19"]),
            head: stage("head.onnx", &["embeddings"], &["scores"]),
            head_window: 16,
            labels: vec!["lights on".into(), "none".into()],
            decision: DecisionSpec {
                threshold: 0.9,
                label_thresholds: Vec::new(),
                smoothing_frames: 4,
                refractory_ms: 1000,
                vad_threshold: 0.005,
                vad_hangover_ms: 800,
            },
            budgets_us: StageBudgets {
                vad_us: 1000,
                mel_us: 2000,
                embedding_us: 6000,
                head_us: 1000,
            },
        },
        self_tests: vec![SelfTest {
            audio_file: "selftest.raw".into(),
            expect_label: "lights on".into(),
            max_frame_us: 20_000,
        }],
        files: Vec::new(),
        verifier: None,
    }
}

fn payload() -> Vec<(String, Vec<u8>)> {
    [
        "vad.onnx",
        "mel.onnx",
        "emb.onnx",
        "head.onnx",
        "selftest.raw",
    ]
    .iter()
    .map(|n| ((*n).to_owned(), vec![0u8; 64]))
    .collect()
}

fn key() -> SigningKey {
    SigningKey::from_pkcs8(&SigningKey::generate().unwrap()).unwrap()
}

/// Signs a manifest as is (no `validate`), to prove `verify_bundle` refuses it too.
fn sign_raw(key: &SigningKey, m: &Manifest, files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut m = m.clone();
    m.files = files
        .iter()
        .map(|(name, data)| FileEntry {
            name: name.clone(),
            len: data.len() as u64,
            sha256: format::sha256(data),
        })
        .collect();
    let (fv, mb) = format::encode_manifest(&m).unwrap();
    let mut out = format::Header::new(fv, mb.len() as u32).encode().to_vec();
    out.extend_from_slice(&mb);
    out.extend_from_slice(
        &format::SignatureBlock {
            key_id: key.key_id(),
            signature: key.sign(&format::signed_message(fv, &mb)),
        }
        .encode(),
    );
    for (_, d) in files {
        out.extend_from_slice(d);
    }
    out
}

fn verify(key: &SigningKey, bytes: &[u8]) -> Result<Manifest, BundleError> {
    let trusted = TrustedKeys::from_keys(vec![key.public_key("k", false).unwrap()]);
    verify_bundle(bytes, &trusted, &VerifyOptions::default()).map(|v| v.manifest)
}

#[test]
fn shared_constants_are_the_protocols() {
    assert_eq!(MAX_LABELS, outpost_protocol::MAX_LABELS);
    assert_eq!(MAX_LABELS, 32);
    assert_eq!(SAMPLE_RATE_HZ, outpost_protocol::SAMPLE_RATE_HZ);
    assert_eq!(FRAME_SAMPLES as usize, outpost_protocol::FRAME_SAMPLES);
}

#[test]
fn labels_over_the_wire_limit_are_refused_by_build_and_verify() {
    let key = key();
    let labels = |n: usize| (0..n).map(|i| format!("command {i}")).collect::<Vec<_>>();
    let mut ok = manifest();
    ok.pipeline.labels = labels(MAX_LABELS);
    ok.self_tests[0].expect_label = "command 0".into();
    verify(&key, &build_bundle(&ok, &payload(), &key).unwrap()).unwrap();

    for n in [MAX_LABELS + 1, 64] {
        let mut m = manifest();
        m.pipeline.labels = labels(n);
        m.self_tests[0].expect_label = "command 0".into();
        let err = build_bundle(&m, &payload(), &key).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("bundle rejected: pipeline.labels has {n} entries (limit 32)")
        );
        let err = verify(&key, &sign_raw(&key, &m, &payload())).unwrap_err();
        assert!(
            matches!(err, BundleError::TooMany { ref what, count, max: 32 } if what == "pipeline.labels" && count == n),
            "{err}"
        );
    }
}

#[test]
fn runtime_ranges_are_refused_by_build_and_verify() {
    let key = key();
    type Mutate = fn(&mut Manifest);
    let cases: [(&str, Mutate, &str); 7] = [
        (
            "no labels",
            |m| m.pipeline.labels.clear(),
            "pipeline.labels: is empty (expected 1..=32 labels)",
        ),
        (
            "48 kHz",
            |m| m.pipeline.sample_rate_hz = 48_000,
            "pipeline.sample_rate_hz: is 48000",
        ),
        (
            "20 ms frames",
            |m| m.pipeline.frame_samples = 320,
            "pipeline.frame_samples: is 320",
        ),
        (
            "head window 0",
            |m| m.pipeline.head_window = 0,
            "pipeline.head_window: is 0 (expected 1..=64)",
        ),
        (
            "head window 65",
            |m| m.pipeline.head_window = MAX_HEAD_WINDOW + 1,
            "pipeline.head_window: is 65 (expected 1..=64)",
        ),
        (
            "smoothing 0",
            |m| m.pipeline.decision.smoothing_frames = 0,
            "smoothing_frames: is 0 (expected 1..=16)",
        ),
        (
            "smoothing 17",
            |m| m.pipeline.decision.smoothing_frames = MAX_SMOOTHING_FRAMES + 1,
            "smoothing_frames: is 17 (expected 1..=16)",
        ),
    ];
    for (what, mutate, message) in cases {
        let mut m = manifest();
        mutate(&mut m);
        if m.pipeline.labels.is_empty() {
            m.self_tests.clear();
        }
        let err = build_bundle(&m, &payload(), &key).unwrap_err().to_string();
        assert!(err.contains(message), "{what}: {err}");
        let err = verify(&key, &sign_raw(&key, &m, &payload()))
            .unwrap_err()
            .to_string();
        assert!(err.contains(message), "{what}: {err}");
    }
}

#[test]
fn check_runtime_refuses_what_the_runtime_cannot_serve() {
    let key = key();
    let ok = verify(&key, &build_bundle(&manifest(), &payload(), &key).unwrap()).unwrap();
    ok.check_runtime().unwrap();

    type Mutate = fn(&mut Manifest);
    let cases: [(&str, Mutate, &str); 5] = [
        (
            "vad with one input",
            |m| m.pipeline.vad.inputs.truncate(1),
            "pipeline.vad.inputs: names 1 tensors (the runtime uses exactly 3)",
        ),
        (
            "vad with one output",
            |m| m.pipeline.vad.outputs.truncate(1),
            "pipeline.vad.outputs: names 1 tensors (the runtime uses exactly 2)",
        ),
        (
            "head with two outputs",
            |m| m.pipeline.head.outputs.push("logits".into()),
            "pipeline.head.outputs: names 2 tensors (the runtime uses exactly 1)",
        ),
        (
            "odd self-test audio",
            |m| m.files[4].len = 63,
            "self_tests[0].audio_file: 'selftest.raw' is 63 bytes",
        ),
        (
            "self-test budget 0",
            |m| m.self_tests[0].max_frame_us = 0,
            "self_tests[0].max_frame_us: is 0",
        ),
    ];
    for (what, mutate, message) in cases {
        let mut m = ok.clone();
        mutate(&mut m);
        m.validate().unwrap();
        let err = m.check_runtime().unwrap_err().to_string();
        assert!(err.contains(message), "{what}: {err}");
    }
}

/// The largest handshake a valid bundle can produce (32 labels and a name of 64 bytes
/// each) fits one protocol frame.
#[test]
fn the_largest_handshake_fits_one_frame() {
    let name = "n".repeat(MAX_STRING_LEN);
    let labels: Vec<String> = (0..MAX_LABELS)
        .map(|i| format!("{i:x>width$}", width = MAX_STRING_LEN))
        .collect();
    let mut wire_labels = heapless::Vec::new();
    for l in &labels {
        wire_labels.push(l.as_str()).unwrap();
    }
    let ack = Response::Hello(HelloAck {
        protocol_version: u8::MAX,
        bundle_name: &name,
        bundle_version: u32::MAX,
        key_id: [0xff; 8],
        labels: wire_labels,
        sample_rate_hz: u32::MAX,
        frame_samples: u16::MAX,
        max_streams: u16::MAX,
        default_deadline_us: u32::MAX,
        max_deadline_us: u32::MAX,
        max_frame_bytes: u16::MAX,
        verify_deadline_us: 0,
    });
    let mut scratch = vec![0u8; MAX_PAYLOAD_BYTES];
    let mut out = vec![0u8; MAX_FRAME_BYTES];
    let n = encode_frame(u32::MAX, &ack, &mut scratch, &mut out).unwrap();
    assert!(n <= MAX_FRAME_BYTES, "{n}");
}
