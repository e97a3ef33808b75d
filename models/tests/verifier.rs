//! Bundle format v2: the stage-2 verifier section, its round trip, its checks, and the
//! v1/v2 boundary (a bundle without a verifier stays v1; the versions' signatures do not
//! cross).

use outpost_models::format::{self, SignatureBlock};
use outpost_models::manifest::{
    DecisionSpec, ModelStage, PipelineSpec, StageBudgets, VerifierSection,
};
use outpost_models::{
    build_bundle, verify_bundle, BundleError, Manifest, SigningKey, TrustedKeys, VerifyOptions,
};

fn stage(file: &str, inputs: &[&str], outputs: &[&str]) -> ModelStage {
    ModelStage {
        file: file.into(),
        inputs: inputs.iter().map(|s| (*s).into()).collect(),
        outputs: outputs.iter().map(|s| (*s).into()).collect(),
    }
}

fn verifier() -> VerifierSection {
    VerifierSection {
        mel: stage("whisper_mel.onnx", &["audio"], &["log_mel"]),
        encoder: stage("whisper_encoder.onnx", &["log_mel"], &["encoder_states"]),
        decoder: stage(
            "whisper_decoder.onnx",
            &["encoder_states", "tokens", "targets", "mask"],
            &["score"],
        ),
        window_samples: 48_000,
        prompt: vec![50257, 50362],
        eot: 50256,
        candidates: vec![vec![22661, 319, 13], vec![22661, 572, 13], vec![50361]],
        theta: 2.0,
        end_of_speech_vad: 0.5,
        max_wait_ms: 320,
        deadline_ms: 250,
        budget_us: 100_000,
    }
}

fn manifest(verifier: Option<VerifierSection>) -> Manifest {
    Manifest {
        name: "v2-bundle".into(),
        version: 3,
        compatible: "any".into(),
        runtime_min: "0.1.0".into(),
        runtime_max: "0.9.0".into(),
        development: false,
        pipeline: PipelineSpec {
            sample_rate_hz: 16_000,
            frame_samples: 1280,
            vad: stage("vad.onnx", &["input", "state", "sr"], &["output", "stateN"]),
            mel: stage("mel.onnx", &["input"], &["output"]),
            embedding: stage("emb.onnx", &["input_1"], &["conv2d_19"]),
            head: stage("head.onnx", &["x"], &["scores"]),
            head_window: 16,
            labels: vec!["lights on".into(), "lights off".into(), "none".into()],
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
        self_tests: vec![],
        files: Vec::new(),
        verifier,
    }
}

fn payload(with_verifier: bool) -> Vec<(String, Vec<u8>)> {
    let mut names = vec!["vad.onnx", "mel.onnx", "emb.onnx", "head.onnx"];
    if with_verifier {
        names.extend([
            "whisper_mel.onnx",
            "whisper_encoder.onnx",
            "whisper_decoder.onnx",
        ]);
    }
    names
        .iter()
        .enumerate()
        .map(|(i, n)| ((*n).to_owned(), vec![i as u8; 50 + i]))
        .collect()
}

fn keys() -> (SigningKey, TrustedKeys) {
    let key = SigningKey::from_pkcs8(&SigningKey::generate().unwrap()).unwrap();
    let trusted = TrustedKeys::from_keys(vec![key.public_key("k", false).unwrap()]);
    (key, trusted)
}

#[test]
fn a_verifier_makes_a_v2_bundle_that_round_trips() {
    let (key, trusted) = keys();
    let bytes = build_bundle(&manifest(Some(verifier())), &payload(true), &key).unwrap();
    assert_eq!(bytes[8..10], [2, 0], "format_version 2");
    let b = verify_bundle(&bytes[..], &trusted, &VerifyOptions::default()).unwrap();
    assert_eq!(b.manifest.verifier, Some(verifier()));
    assert_eq!(
        b.file("whisper_decoder.onnx").unwrap(),
        &vec![6u8; 56][..],
        "verifier payload readable"
    );
    b.manifest.check_runtime().unwrap();
}

#[test]
fn without_a_verifier_the_bundle_stays_v1_byte_for_byte() {
    let (key, trusted) = keys();
    let bytes = build_bundle(&manifest(None), &payload(false), &key).unwrap();
    assert_eq!(bytes[8..10], [1, 0], "format_version 1");
    // The v1 manifest is the v2 encoding without the trailing `None`.
    let full = postcard::to_allocvec(&manifest(None)).unwrap();
    let (v, mb) = format::encode_manifest(&manifest(None)).unwrap();
    assert_eq!((v, &mb[..]), (1, &full[..full.len() - 1]));
    let b = verify_bundle(&bytes[..], &trusted, &VerifyOptions::default()).unwrap();
    assert_eq!(b.manifest.verifier, None);
}

#[test]
fn a_v2_header_needs_a_verifier_and_its_own_signing_tag() {
    let (key, trusted) = keys();
    // A v2 manifest without a verifier, correctly signed under the v2 tag: refused.
    let m = manifest(None);
    let mb = postcard::to_allocvec(&m).unwrap();
    let mut out = format::Header::new(2, mb.len() as u32).encode().to_vec();
    out.extend_from_slice(&mb);
    let sig = SignatureBlock {
        key_id: key.key_id(),
        signature: key.sign(&format::signed_message(2, &mb)),
    };
    out.extend_from_slice(&sig.encode());
    let err = verify_bundle(&out[..], &trusted, &VerifyOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("absent in a format v2 manifest"),
        "{err}"
    );

    // A v2 bundle relabelled v1 fails the signature (v1 tag), before any parsing.
    let mut bytes = build_bundle(&manifest(Some(verifier())), &payload(true), &key).unwrap();
    bytes[8] = 1;
    assert!(matches!(
        verify_bundle(&bytes[..], &trusted, &VerifyOptions::default()).unwrap_err(),
        BundleError::BadSignature { .. }
    ));
}

#[test]
fn bad_verifier_sections_name_the_field() {
    let (key, _) = keys();
    type Break = Box<dyn Fn(&mut Manifest)>;
    let cases: Vec<(&str, Break)> = vec![
        (
            "verifier.candidates",
            Box::new(|m| {
                m.verifier
                    .as_mut()
                    .unwrap()
                    .candidates
                    .pop()
                    .map(drop)
                    .unwrap()
            }),
        ),
        (
            "pipeline.labels",
            Box::new(|m| m.pipeline.labels.swap(0, 2)),
        ),
        (
            "verifier.candidates[1]",
            Box::new(|m| m.verifier.as_mut().unwrap().candidates[1].clear()),
        ),
        (
            "verifier.candidates[0]",
            Box::new(|m| m.verifier.as_mut().unwrap().candidates[0] = vec![1; 62]),
        ),
        (
            "verifier.prompt",
            Box::new(|m| m.verifier.as_mut().unwrap().prompt.clear()),
        ),
        (
            "verifier.window_samples",
            Box::new(|m| m.verifier.as_mut().unwrap().window_samples = 48_001),
        ),
        (
            "verifier.window_samples",
            Box::new(|m| m.verifier.as_mut().unwrap().window_samples = 480_320),
        ),
        (
            "verifier.theta",
            Box::new(|m| m.verifier.as_mut().unwrap().theta = f32::NAN),
        ),
        (
            "verifier.deadline_ms",
            Box::new(|m| m.verifier.as_mut().unwrap().deadline_ms = 0),
        ),
        (
            "verifier.end_of_speech_vad",
            Box::new(|m| m.verifier.as_mut().unwrap().end_of_speech_vad = 1.5),
        ),
        (
            "verifier.max_wait_ms",
            Box::new(|m| m.verifier.as_mut().unwrap().max_wait_ms = 2_001),
        ),
        (
            "verifier.deadline_ms",
            Box::new(|m| m.verifier.as_mut().unwrap().deadline_ms = 10_001),
        ),
        (
            "verifier.decoder.file",
            Box::new(|m| m.verifier.as_mut().unwrap().decoder.file = "absent.onnx".into()),
        ),
    ];
    for (field, break_it) in cases {
        let mut m = manifest(Some(verifier()));
        break_it(&mut m);
        let err = build_bundle(&m, &payload(true), &key)
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
    // Tensor counts are the runtime's check.
    let mut m = manifest(Some(verifier()));
    m.verifier.as_mut().unwrap().decoder.inputs.pop();
    m.files = verify_bundle(
        &build_bundle(&m, &payload(true), &key).unwrap()[..],
        &TrustedKeys::from_keys(vec![key.public_key("k", false).unwrap()]),
        &VerifyOptions::default(),
    )
    .unwrap()
    .manifest
    .files;
    let err = m.check_runtime().unwrap_err().to_string();
    assert!(err.contains("verifier.decoder.inputs"), "{err}");
}
