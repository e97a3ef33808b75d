//! Stage 2: the verifier. When stage 1 (the per-frame trigger of [`crate::pipeline`])
//! fires, the last 3 s of the stream's audio go through Whisper tiny.en, exported to
//! three ONNX graphs by the recipe (`models/reference/recipe/whisper_onnx.py`,
//! decoder fine-tuned by `verifier_train.py`, shipped by `verifier_export.py`):
//!
//! ```text
//! audio f32 [1, 48000] ─mel─▶ log_mel [1, 80, 300] ─encoder─▶ states [1, 150, 384]
//! states + one teacher-forced batch of every label's token sequence ─decoder─▶ score [labels]
//! ```
//!
//! `score[i]` is the log-probability (nats) of `prompt ‖ candidate[i] ‖ <|endoftext|>`;
//! the last label is `none`, scored by its own sequence (`<|nocaptions|>`). The verdict
//! is the best command when it beats `none` by at least `theta` nats, else `none`.
//! Measured accuracy and false accepts: `models/reference/verifier_train.md`; cost on
//! this CPU: `docs/recognition.md`.

use std::time::Instant;

use ort::session::{RunOptions, Session};
use ort::value::TensorRef;
use outpost_protocol::{Provider, Stage};
use serde::Deserialize;

use crate::ort_env::{build_session, SessionConfig};
use crate::RuntimeError;

/// Longest token sequence (prompt + candidate + `<|endoftext|>`) a verifier may score;
/// Whisper's decoder has 448 positions, commands need a handful.
pub const MAX_SEQUENCE_TOKENS: usize = 64;
/// Whisper's encoder width (tiny.en), the last dimension of the encoder states.
pub const ENCODER_DIM: usize = 384;

/// How the decoder's batch is built and read: `verifier.json` of
/// `verifier_export.py`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VerifierSpec {
    /// Audio window in samples at 16 kHz (48 000 = 3 s), ending at the trigger.
    pub window_samples: usize,
    /// Decoder prompt token ids (`<|startoftranscript|><|notimestamps|>`).
    pub prompt: Vec<u32>,
    /// `<|endoftext|>` token id, appended to every candidate.
    pub eot: u32,
    /// Label names, `none` last; the same as the bundle's.
    pub labels: Vec<String>,
    /// Token ids per label (`" Lights on."`, …; `<|nocaptions|>` for `none`).
    pub candidates: Vec<Vec<u32>>,
    /// Nats a command's score must exceed `none`'s by to be accepted.
    pub theta: f32,
}

impl VerifierSpec {
    /// Checks the spec's shape.
    ///
    /// # Errors
    /// [`RuntimeError::Pipeline`] naming what is wrong: no labels, a label count that
    /// differs from the candidates', the last label not `none`, an empty or too long
    /// sequence, a window that is not a whole number of 10 ms hops, a non-finite theta.
    pub fn check(&self) -> Result<(), RuntimeError> {
        let bad = |m: String| Err(RuntimeError::Pipeline(format!("verifier: {m}")));
        if self.labels.len() < 2 || self.labels.len() != self.candidates.len() {
            return bad(format!(
                "{} labels and {} candidate sequences (expected the same number, at least 2)",
                self.labels.len(),
                self.candidates.len()
            ));
        }
        if self.labels.last().map(String::as_str) != Some("none") {
            return bad("the last label must be `none` (the rejection candidate)".into());
        }
        for (l, c) in self.labels.iter().zip(&self.candidates) {
            let n = self.prompt.len() + c.len() + 1;
            if c.is_empty() || n > MAX_SEQUENCE_TOKENS {
                return bad(format!(
                    "label `{l}`: {n} tokens with prompt and end of text (expected 1..={MAX_SEQUENCE_TOKENS} and a non-empty candidate)"
                ));
            }
        }
        if self.window_samples == 0 || !self.window_samples.is_multiple_of(320) {
            return bad(format!(
                "window of {} samples (expected a positive multiple of 320: Whisper's encoder halves 10 ms mel frames)",
                self.window_samples
            ));
        }
        if !self.theta.is_finite() {
            return bad(format!(
                "theta {} (expected a finite number of nats)",
                self.theta
            ));
        }
        Ok(())
    }
}

/// What the verifier decided on one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The accepted command's label index, or `None` when `none` won.
    pub label: Option<usize>,
    /// The best command (accepted or not).
    pub best: usize,
    /// `score[best] - score[none]`, in nats.
    pub margin: f32,
    /// Log-probability of every label's sequence, in nats, label order.
    pub scores: Vec<f32>,
    /// Compute in µs: mel, encoder, decoder.
    pub stage_us: [u32; 3],
}

/// The three sessions and the fixed decoder batch.
pub struct Verifier {
    mel: Session,
    encoder: Session,
    decoder: Session,
    spec: VerifierSpec,
    tokens: Vec<i64>,
    targets: Vec<i64>,
    mask: Vec<f32>,
    seq_len: usize,
    audio: Vec<f32>,
    providers: [Provider; 3],
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("spec", &self.spec)
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Builds the sessions (execution-provider chain of `cfg`) from the three models'
    /// bytes and checks them on a silent window.
    ///
    /// # Errors
    /// [`RuntimeError::Pipeline`] for a bad spec or outputs of the wrong shape,
    /// [`RuntimeError::Session`] for a model ONNX Runtime refuses.
    pub fn new(
        mel: &[u8],
        encoder: &[u8],
        decoder: &[u8],
        spec: VerifierSpec,
        cfg: &SessionConfig,
    ) -> Result<Self, RuntimeError> {
        spec.check()?;
        let (mel, p0) = build_session(Stage::Verifier, mel, cfg)?;
        let (encoder, p1) = build_session(Stage::Verifier, encoder, cfg)?;
        let (decoder, p2) = build_session(Stage::Verifier, decoder, cfg)?;
        let seq_len = spec
            .candidates
            .iter()
            .map(|c| spec.prompt.len() + c.len())
            .max()
            .unwrap_or(0);
        let n = spec.candidates.len();
        let eot = i64::from(spec.eot);
        let (mut tokens, mut targets) = (vec![eot; n * seq_len], vec![eot; n * seq_len]);
        let mut mask = vec![0f32; n * seq_len];
        for (i, c) in spec.candidates.iter().enumerate() {
            let full: Vec<i64> = spec
                .prompt
                .iter()
                .chain(c)
                .map(|&t| i64::from(t))
                .chain([eot])
                .collect();
            let row = i * seq_len;
            for j in 0..full.len() - 1 {
                tokens[row + j] = full[j];
                targets[row + j] = full[j + 1];
                if j + 1 >= spec.prompt.len() {
                    mask[row + j] = 1.0;
                }
            }
        }
        let audio = vec![0f32; spec.window_samples];
        let mut v = Self {
            mel,
            encoder,
            decoder,
            spec,
            tokens,
            targets,
            mask,
            seq_len,
            audio,
            providers: [p0, p1, p2],
        };
        let silence = vec![0i16; v.spec.window_samples];
        let run = RunOptions::new().map_err(|e| RuntimeError::RunOptions(e.to_string()))?;
        v.verify(&silence, &run)?;
        Ok(v)
    }

    /// The spec the verifier was built with.
    pub fn spec(&self) -> &VerifierSpec {
        &self.spec
    }

    /// Execution provider per session: mel, encoder, decoder.
    pub fn providers(&self) -> [Provider; 3] {
        self.providers
    }

    /// Scores one window: `window` is the last [`VerifierSpec::window_samples`] samples
    /// of 16 kHz s16 audio ending at the trigger (shorter input is zero-padded at the
    /// start). `run` cancels it from another thread (`RunOptions::terminate`).
    ///
    /// # Errors
    /// [`RuntimeError::Inference`] (stage `verifier`) when a session fails or is
    /// cancelled, or an output has the wrong shape.
    pub fn verify(&mut self, window: &[i16], run: &RunOptions) -> Result<Verdict, RuntimeError> {
        let err = |e: &dyn std::fmt::Display| RuntimeError::Inference {
            stage: Stage::Verifier,
            detail: e.to_string(),
        };
        let n = self.spec.window_samples;
        let take = window.len().min(n);
        self.audio.fill(0.0);
        for (d, &s) in self.audio[n - take..]
            .iter_mut()
            .zip(&window[window.len() - take..])
        {
            *d = f32::from(s) / 32768.0;
        }
        let t0 = Instant::now();
        let mel_out = self
            .mel
            .run_with_options(
                ort::inputs!["audio" => TensorRef::from_array_view(([1usize, n], self.audio.as_slice())).map_err(|e| err(&e))?],
                run,
            )
            .map_err(|e| err(&e))?;
        let (mel_shape, mel) = mel_out["log_mel"]
            .try_extract_tensor::<f32>()
            .map_err(|e| err(&e))?;
        let mel_shape: Vec<usize> = mel_shape.iter().map(|&d| d as usize).collect();
        let mel = mel.to_vec();
        drop(mel_out);
        let t1 = Instant::now();
        let enc_out = self
            .encoder
            .run_with_options(
                ort::inputs!["log_mel" => TensorRef::from_array_view((mel_shape, mel.as_slice())).map_err(|e| err(&e))?],
                run,
            )
            .map_err(|e| err(&e))?;
        let (enc_shape, enc) = enc_out["encoder_states"]
            .try_extract_tensor::<f32>()
            .map_err(|e| err(&e))?;
        if enc_shape.len() != 3 || enc_shape[2] as usize != ENCODER_DIM {
            return Err(err(&format!(
                "encoder states of shape {enc_shape:?} (expected [1, T, {ENCODER_DIM}])"
            )));
        }
        let enc_shape: Vec<usize> = enc_shape.iter().map(|&d| d as usize).collect();
        let enc = enc.to_vec();
        drop(enc_out);
        let t2 = Instant::now();
        let b = self.spec.candidates.len();
        let shape = [b, self.seq_len];
        let dec_out = self
            .decoder
            .run_with_options(
                ort::inputs![
                    "encoder_states" => TensorRef::from_array_view((enc_shape, enc.as_slice())).map_err(|e| err(&e))?,
                    "tokens" => TensorRef::from_array_view((shape, self.tokens.as_slice())).map_err(|e| err(&e))?,
                    "targets" => TensorRef::from_array_view((shape, self.targets.as_slice())).map_err(|e| err(&e))?,
                    "mask" => TensorRef::from_array_view((shape, self.mask.as_slice())).map_err(|e| err(&e))?,
                ],
                run,
            )
            .map_err(|e| err(&e))?;
        let (_, scores) = dec_out["score"]
            .try_extract_tensor::<f32>()
            .map_err(|e| err(&e))?;
        if scores.len() != b {
            return Err(err(&format!(
                "{} scores (expected one per label, {b})",
                scores.len()
            )));
        }
        let scores = scores.to_vec();
        let t3 = Instant::now();
        let none = b - 1;
        let best = (0..none)
            .max_by(|&i, &j| scores[i].total_cmp(&scores[j]))
            .unwrap_or(0);
        let margin = scores[best] - scores[none];
        let us = |a: Instant, z: Instant| (z - a).as_micros().min(u32::MAX as u128) as u32;
        Ok(Verdict {
            label: (margin >= self.spec.theta).then_some(best),
            best,
            margin,
            scores,
            stage_us: [us(t0, t1), us(t1, t2), us(t2, t3)],
        })
    }
}
