//! The real pipeline on the dev bundle (ONNX Runtime, CPU provider): cancellation,
//! determinism, no dead time at stream start. Needs `scripts/setup` (models, library,
//! dev bundle); fails with that instruction otherwise.

use std::path::{Path, PathBuf};

use ort::session::RunOptions;
use outpost_models::{verify_path, TrustedKeys, VerifiedBundle, VerifyOptions};
use outpost_runtime::ort_env::SessionConfig;
use outpost_runtime::pipeline::{Engine, FRAME_SAMPLES};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn dev_bundle() -> VerifiedBundle {
    let path = repo().join(".outpost/dev.bundle");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup first",
        path.display()
    );
    let keys = TrustedKeys::load_dir(&repo().join("models/reference/dev-keys")).unwrap();
    verify_path(
        &path,
        &keys,
        &VerifyOptions {
            allow_development: true,
            expected_compatible: None,
        },
    )
    .unwrap()
}

/// Deterministic speech-like test signal: a gliding harmonic tone with noise, int16 scale.
fn signal(frames: usize) -> Vec<i16> {
    let mut seed = 12345u32;
    (0..frames * FRAME_SAMPLES)
        .map(|i| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let t = i as f32 / 16_000.0;
            let f0 = 120.0 + 40.0 * (t * 3.0).sin();
            let v: f32 = (1..6)
                .map(|h| (2.0 * std::f32::consts::PI * f0 * h as f32 * t).sin() / h as f32)
                .sum();
            (v * 4000.0 + ((seed >> 16) as f32 / 65536.0 - 0.5) * 300.0) as i16
        })
        .collect()
}

#[test]
fn a_cancelled_run_fails_and_the_engine_serves_the_next_frame() {
    let bundle = dev_bundle();
    let mut e = Engine::new(&bundle, &SessionConfig::default()).unwrap();
    let audio = signal(3);
    let mut st = e.new_stream();
    let run = RunOptions::new().unwrap();
    run.terminate().unwrap();
    let err = e
        .process(&mut st, &audio[..FRAME_SAMPLES], &run)
        .unwrap_err();
    assert!(err.to_string().contains("inference failed"), "{err}");
    // A fresh stream state and fresh run options: the engine works again.
    let mut st = e.new_stream();
    let out = e
        .process(
            &mut st,
            &audio[FRAME_SAMPLES..2 * FRAME_SAMPLES],
            &RunOptions::new().unwrap(),
        )
        .unwrap();
    assert!((0.0..=1.0).contains(&out.vad_prob));
}

#[test]
fn the_same_audio_gives_the_same_outputs_on_two_engines() {
    let bundle = dev_bundle();
    let mut a = Engine::new(&bundle, &SessionConfig::default()).unwrap();
    let mut b = Engine::new(&bundle, &SessionConfig::default()).unwrap();
    let audio = signal(25);
    let (mut sa, mut sb) = (a.new_stream(), b.new_stream());
    for f in audio.chunks_exact(FRAME_SAMPLES) {
        let oa = a.process_uninterruptible(&mut sa, f).unwrap();
        let ob = b.process_uninterruptible(&mut sb, f).unwrap();
        assert_eq!(
            (oa.vad_prob, oa.detection, oa.audio_ms),
            (ob.vad_prob, ob.detection, ob.audio_ms)
        );
    }
}

#[test]
fn frames_of_the_wrong_length_are_refused() {
    let bundle = dev_bundle();
    let mut e = Engine::new(&bundle, &SessionConfig::default()).unwrap();
    let mut st = e.new_stream();
    let err = e
        .process_uninterruptible(&mut st, &[0i16; 1000])
        .unwrap_err();
    assert!(
        err.to_string().contains("1000 samples (expected 1280)"),
        "{err}"
    );
}

#[test]
fn silence_gives_no_detection_and_time_advances_from_the_first_frame() {
    let bundle = dev_bundle();
    let mut e = Engine::new(&bundle, &SessionConfig::default()).unwrap();
    let mut st = e.new_stream();
    for i in 1..=30u32 {
        let out = e
            .process_uninterruptible(&mut st, &[0i16; FRAME_SAMPLES])
            .unwrap();
        assert_eq!(out.audio_ms, i * 80, "stream time advances 80 ms per frame");
        assert_eq!(out.detection, None, "silence must not trigger");
        assert!(
            out.vad_prob < 0.5,
            "frame {i}: VAD {} on digital silence",
            out.vad_prob
        );
    }
}
