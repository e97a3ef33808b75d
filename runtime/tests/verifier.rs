//! Stage 2 on the shipped verifier (`.outpost/verifier/`, exported by `scripts/setup`
//! with `models/reference/recipe/verifier_export.py`): the Rust scores equal the
//! recipe's ONNX Runtime scores on the same clip, the verdict names the command,
//! silence is `none`, a cancelled run fails and the next one succeeds, bad specs are
//! refused. Fails with the setup instruction when the files are missing.

use std::path::{Path, PathBuf};

use ort::session::RunOptions;
use outpost_runtime::ort_env::SessionConfig;
use outpost_runtime::verifier::{Verifier, VerifierSpec};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn dir() -> PathBuf {
    let d = repo().join(".outpost/verifier");
    assert!(
        d.join("verifier.json").is_file(),
        "{} is missing: run scripts/setup first",
        d.join("verifier.json").display()
    );
    d
}

fn spec_json() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir().join("verifier.json")).unwrap()).unwrap()
}

fn load(spec: VerifierSpec) -> Result<Verifier, outpost_runtime::RuntimeError> {
    let d = dir();
    let read = |n: &str| std::fs::read(d.join(n)).unwrap();
    Verifier::new(
        &read("whisper_mel.onnx"),
        &read("whisper_encoder.onnx"),
        &read("whisper_decoder.onnx"),
        spec,
        &SessionConfig::default(),
    )
}

fn spec() -> VerifierSpec {
    serde_json::from_value(spec_json()).unwrap()
}

/// The check clip as `verifier_train.place` lays it out: ending `tail` samples before
/// the window's end, silence after.
fn check_window(spec: &VerifierSpec) -> (Vec<i16>, Vec<f32>) {
    let j = spec_json();
    let check = &j["check"];
    let clip = repo()
        .join(".outpost/clips")
        .join(check["clip"].as_str().unwrap());
    let mut r = hound::WavReader::open(&clip).unwrap();
    let x: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
    let tail = check["tail_samples"].as_u64().unwrap() as usize;
    let mut w = vec![0i16; spec.section.window_samples as usize];
    let end = spec.section.window_samples as usize - tail;
    let seg = &x[x.len().saturating_sub(end)..];
    w[end - seg.len()..end].copy_from_slice(seg);
    let scores = check["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    (w, scores)
}

#[test]
fn rust_scores_equal_the_recipes_and_the_verdict_names_the_command() {
    let spec = spec();
    let (window, want) = check_window(&spec);
    let mut v = load(spec.clone()).unwrap();
    let run = RunOptions::new().unwrap();
    let got = v.verify(&window, &run).unwrap();
    assert_eq!(got.scores.len(), want.len());
    for (i, (g, w)) in got.scores.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() < 2e-3,
            "label {}: Rust {g} vs recipe {w}",
            spec.labels[i]
        );
    }
    let label = got.label.map(|i| spec.labels[i].as_str());
    assert_eq!(label, Some("lights on"), "{got:?}");
    // The same window again gives the same bits.
    let again = v.verify(&window, &run).unwrap();
    assert_eq!(again.scores, got.scores);
}

#[test]
fn silence_is_none_and_a_cancelled_run_fails_then_the_next_succeeds() {
    let spec = spec();
    let mut v = load(spec.clone()).unwrap();
    let silence = vec![0i16; spec.section.window_samples as usize];
    let run = RunOptions::new().unwrap();
    let got = v.verify(&silence, &run).unwrap();
    assert_eq!(got.label, None, "{got:?}");
    assert!(got.margin < spec.section.theta);

    let cancelled = RunOptions::new().unwrap();
    cancelled.terminate().unwrap();
    let err = v.verify(&silence, &cancelled).unwrap_err().to_string();
    assert!(err.contains("verifier"), "{err}");
    let (window, _) = check_window(&spec);
    assert!(v.verify(&window, &run).unwrap().label.is_some());
}

#[test]
fn a_spec_that_does_not_fit_is_refused_with_what_was_expected() {
    let mut s = spec();
    s.labels.pop();
    let e = s.check().unwrap_err().to_string();
    assert!(e.contains("sequences for"), "{e}");

    let mut s = spec();
    *s.labels.last_mut().unwrap() = "anything else".into();
    let e = s.check().unwrap_err().to_string();
    assert!(e.contains("`none`"), "{e}");

    let mut s = spec();
    s.section.candidates[0] = vec![1; 100];
    let e = s.check().unwrap_err().to_string();
    assert!(e.contains("tokens"), "{e}");

    let mut s = spec();
    s.section.window_samples = 1000;
    assert!(load(s).unwrap_err().to_string().contains("multiple of 320"));
}
