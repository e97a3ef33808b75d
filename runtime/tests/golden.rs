//! Golden vectors: every stage's output on real speech (`models/reference/golden/`,
//! an espeak-ng hold-out voice saying "lights on"), computed with the upstream models
//! under ONNX Runtime in Python by `models/reference/recipe/golden.py`. Tolerances are
//! the ones recorded in `golden.json` for each tensor (absolute, per element).
//!
//! Upstream models come from `.outpost/models` (`scripts/fetch-models`, SHA-256
//! checked); the head from `models/reference/command_head.onnx`.

use std::path::{Path, PathBuf};

use outpost_models::manifest::{DecisionSpec, Manifest, ModelStage, PipelineSpec, StageBudgets};
use outpost_models::{
    build_bundle, verify_bundle, PublicKey, SigningKey, TrustedKeys, VerifyOptions,
};
use outpost_protocol::Stage;
use outpost_runtime::ort_env::SessionConfig;
use outpost_runtime::pipeline::stages::StageSession;
use outpost_runtime::pipeline::{Engine, FRAME_SAMPLES, VAD_STATE};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn golden_dir() -> PathBuf {
    repo().join("models/reference/golden")
}

fn index() -> Value {
    serde_json::from_str(&std::fs::read_to_string(golden_dir().join("golden.json")).unwrap())
        .unwrap()
}

/// A golden tensor and its tolerance.
fn tensor(name: &str) -> (Vec<f32>, f32) {
    let idx = index();
    let t = &idx["tensors"][name];
    assert!(!t.is_null(), "golden.json has no tensor '{name}'");
    let bytes = std::fs::read(golden_dir().join(t["file"].as_str().unwrap())).unwrap();
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let n: u64 = t["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap())
        .product();
    assert_eq!(
        v.len() as u64,
        n,
        "{name}: file length does not match its shape"
    );
    (v, t["tolerance_abs"].as_f64().unwrap() as f32)
}

fn assert_close(name: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let (i, d) = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold((0, 0.0f32), |m, (i, d)| if d > m.1 { (i, d) } else { m });
    assert!(
        d <= tol,
        "{name}: max |diff| {d} at {i} (got {}, want {}) > tolerance {tol}",
        got[i],
        want[i]
    );
}

fn clip() -> Vec<i16> {
    let mut r = hound::WavReader::open(golden_dir().join("lights_on.wav")).unwrap();
    r.samples::<i16>().map(Result::unwrap).collect()
}

fn model(name: &str) -> Vec<u8> {
    let p = if name == "command_head.onnx" {
        repo().join("models/reference").join(name)
    } else {
        repo().join(".outpost/models").join(name)
    };
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup first)", p.display()))
}

fn stage(file: &str, inputs: &[&str], outputs: &[&str]) -> ModelStage {
    ModelStage {
        file: file.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
    }
}

fn session(stage_of: Stage, file: &str, inputs: &[&str], outputs: &[&str]) -> StageSession {
    StageSession::new(
        stage_of,
        &model(file),
        &stage(file, inputs, outputs),
        &SessionConfig::default(),
    )
    .unwrap()
}

/// The raw mel golden, transformed as the runtime does (x/10 + 2); tolerance / 10.
fn transformed(name: &str) -> (Vec<f32>, f32) {
    let (v, tol) = tensor(name);
    (v.iter().map(|x| x / 10.0 + 2.0).collect(), tol / 10.0)
}

#[test]
fn mel_matches_upstream_on_the_first_window_and_a_later_one() {
    let audio: Vec<f32> = clip().iter().map(|&s| s as f32).collect();
    let mut mel = session(Stage::Mel, "melspectrogram.onnx", &["input"], &["output"]);
    let (want, tol) = transformed("mel_first_1760");
    assert_close(
        "mel_first_1760",
        &mel.mel(&audio[..1760]).unwrap(),
        &want,
        tol,
    );
    let (want, tol) = transformed("mel_frame12");
    assert_close(
        "mel_frame12",
        &mel.mel(&audio[14_880..16_640]).unwrap(),
        &want,
        tol,
    );
    let (want, tol) = tensor("silence_mel_frame");
    assert_close(
        "silence_mel_frame",
        &mel.mel(&[0.0; 1760]).unwrap()[7 * 32..],
        &want,
        tol,
    );
}

#[test]
fn embedding_matches_upstream() {
    let mut emb = session(
        Stage::Embedding,
        "embedding_model.onnx",
        &["input_1"],
        &["conv2d_19"],
    );
    let (input, _) = tensor("embedding_input_last");
    let (want, tol) = tensor("embedding_output_last");
    assert_close(
        "embedding_output_last",
        &emb.embedding(&input).unwrap(),
        &want,
        tol,
    );
    let (silence_mel, _) = tensor("silence_mel_frame");
    let window: Vec<f32> = (0..76).flat_map(|_| silence_mel.clone()).collect();
    let (want, tol) = tensor("silence_embedding");
    assert_close(
        "silence_embedding",
        &emb.embedding(&window).unwrap(),
        &want,
        tol,
    );
}

#[test]
fn silero_vad_matches_upstream_with_carried_context_and_state() {
    let audio: Vec<f32> = clip().iter().map(|&s| s as f32 / 32768.0).collect();
    let mut vad = session(
        Stage::Vad,
        "silero_vad.onnx",
        &["input", "state", "sr"],
        &["output", "stateN"],
    );
    let (want, tol) = tensor("vad_probs");
    let mut state = [0.0f32; VAD_STATE];
    let mut context = [0.0f32; 64];
    let mut got = Vec::new();
    for w in audio.chunks_exact(512).take(want.len()) {
        let input: Vec<f32> = context.iter().chain(w).copied().collect();
        got.push(vad.vad(&input, &mut state).unwrap());
        context.copy_from_slice(&w[512 - 64..]);
    }
    assert_close("vad_probs", &got, &want, tol);
    let (want, tol) = tensor("vad_state_final");
    assert_close("vad_state_final", &state, &want, tol);
}

#[test]
fn command_head_matches_its_python_export() {
    let mut head = session(
        Stage::Head,
        "command_head.onnx",
        &["embeddings"],
        &["scores"],
    );
    let (input, _) = tensor("head_input_last");
    let (want, tol) = tensor("head_scores_last");
    assert_close(
        "head_scores_last",
        &head.head(&input, 16).unwrap(),
        &want,
        tol,
    );
}

/// A bundle of the reference models and the golden's decision parameters, signed by an
/// ephemeral key, so the streaming test does not depend on the dev bundle.
fn golden_engine() -> Engine {
    let idx = index();
    let labels: Vec<String> = idx["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    let d = &idx["decision"];
    let names = [
        "silero_vad.onnx",
        "melspectrogram.onnx",
        "embedding_model.onnx",
        "command_head.onnx",
    ];
    let files: Vec<(String, Vec<u8>)> = names.iter().map(|n| (n.to_string(), model(n))).collect();
    let manifest = Manifest {
        name: "golden".into(),
        version: 1,
        compatible: "any".into(),
        runtime_min: "0.1.0".into(),
        runtime_max: "0.99.0".into(),
        development: true,
        pipeline: PipelineSpec {
            sample_rate_hz: 16_000,
            frame_samples: 1280,
            vad: stage(names[0], &["input", "state", "sr"], &["output", "stateN"]),
            mel: stage(names[1], &["input"], &["output"]),
            embedding: stage(names[2], &["input_1"], &["conv2d_19"]),
            head: stage(names[3], &["embeddings"], &["scores"]),
            head_window: 16,
            labels,
            decision: DecisionSpec {
                threshold: d["threshold"].as_f64().unwrap() as f32,
                label_thresholds: vec![],
                smoothing_frames: d["smoothing_frames"].as_u64().unwrap() as u32,
                refractory_ms: d["refractory_ms"].as_u64().unwrap() as u32,
                vad_threshold: d["vad_threshold"].as_f64().unwrap() as f32,
                vad_hangover_ms: d["vad_hangover_ms"].as_u64().unwrap() as u32,
            },
            budgets_us: StageBudgets {
                vad_us: 1000,
                mel_us: 2000,
                embedding_us: 6000,
                head_us: 1000,
            },
        },
        self_tests: vec![],
        files: vec![],
        verifier: None,
    };
    let key = SigningKey::from_pkcs8(&SigningKey::generate().unwrap()).unwrap();
    let bytes = build_bundle(&manifest, &files, &key).unwrap();
    let public: PublicKey = key.public_key("golden-test", true).unwrap();
    let bundle = verify_bundle(
        &bytes[..],
        &TrustedKeys::from_keys(vec![public]),
        &VerifyOptions {
            allow_development: true,
            expected_compatible: None,
        },
    )
    .unwrap();
    Engine::new(&bundle, &SessionConfig::default()).unwrap()
}

#[test]
fn the_streaming_pipeline_matches_the_recipe_frame_by_frame() {
    let mut e = golden_engine();
    let (want_vad, vad_tol) = tensor("stream_vad");
    let (want_scores, score_tol) = tensor("stream_scores");
    let labels = e.labels().to_vec();
    let mut st = e.new_stream();
    let mut detections = Vec::new();
    for (i, frame) in clip().chunks_exact(FRAME_SAMPLES).enumerate() {
        let out = e.process_uninterruptible(&mut st, frame).unwrap();
        assert!(
            (out.vad_prob - want_vad[i]).abs() <= vad_tol,
            "frame {i}: VAD {} vs {}",
            out.vad_prob,
            want_vad[i]
        );
        let n = labels.len();
        assert_close(
            &format!("stream_scores frame {i}"),
            &out.scores[..out.scores_len],
            &want_scores[i * n..(i + 1) * n],
            score_tol,
        );
        if let Some(d) = out.detection {
            detections.push((i as u64, labels[d.label].clone()));
        }
    }
    let want: Vec<(u64, String)> = index()["stream_detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["frame"].as_u64().unwrap(),
                d["label"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        detections, want,
        "detections (frame, label) as the recipe's streaming evaluator saw them"
    );
}
