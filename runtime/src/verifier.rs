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
//! `score[i]` is the log-probability (nats) of `prompt ‖ candidate[i] ‖ <|endoftext|>`
//! for a command; the last label is `none`, whose row (`<|nocaptions|>`) the reference
//! decoder scores as everything that is not a command, `ln(1 - Σ p(command))`
//! (`models/reference/recipe/whisper_onnx.py`, `not_a_command`). The verdict is the best
//! command when it beats `none` by at least `theta` nats, else `none`.
//! Measured accuracy and false accepts: `models/reference/verifier_train.md`; cost on
//! this CPU: `docs/recognition.md`.

use std::time::Instant;

use ort::session::{RunOptions, Session};
use ort::value::TensorRef;
use outpost_models::manifest::VerifierSection;
use outpost_models::Manifest;
use outpost_protocol::{Provider, Stage};
use serde::Deserialize;

use crate::ort_env::{build_session, SessionConfig};
use crate::pipeline::CancelToken;
use crate::scheduler::{VerifyOutput, WindowVerifier};
use crate::RuntimeError;

/// Whisper's encoder width (tiny.en), the last dimension of the encoder states.
pub const ENCODER_DIM: usize = 384;

/// What the verifier scores: the bundle's `verifier` section and its labels (or
/// `verifier.json` of `verifier_export.py`, which holds both).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VerifierSpec {
    /// Label names, `none` last: the bundle's `pipeline.labels`.
    pub labels: Vec<String>,
    /// Models, window, token sequences, `theta` and deadline.
    #[serde(flatten)]
    pub section: VerifierSection,
}

impl VerifierSpec {
    /// The verifier of a bundle's manifest, if it has one (format v2).
    pub fn of(manifest: &Manifest) -> Option<Self> {
        manifest.verifier.as_ref().map(|v| Self {
            labels: manifest.pipeline.labels.clone(),
            section: v.clone(),
        })
    }

    /// Checks the spec as a bundle's manifest is checked ([`VerifierSection::validate`]).
    ///
    /// # Errors
    /// [`RuntimeError::Pipeline`] naming the field.
    pub fn check(&self) -> Result<(), RuntimeError> {
        self.section
            .validate(&self.labels)
            .map_err(|e| RuntimeError::Pipeline(format!("verifier: {e}")))
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
    /// `score[best]` minus the next best command's score, in nats (`f32::INFINITY` with
    /// a single command).
    pub command_gap: f32,
    /// Log-probability of every label's sequence, in nats, label order, as the bundle's
    /// decoder gives it (the reference decoder takes 100 nats off a command its prior
    /// veto rejects: `models/reference/recipe/whisper_onnx.py`, `Prior`).
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
        let v = &spec.section;
        let seq_len = v
            .candidates
            .iter()
            .map(|c| v.prompt.len() + c.len())
            .max()
            .unwrap_or(0);
        let n = v.candidates.len();
        let eot = i64::from(v.eot);
        let (mut tokens, mut targets) = (vec![eot; n * seq_len], vec![eot; n * seq_len]);
        let mut mask = vec![0f32; n * seq_len];
        for (i, c) in v.candidates.iter().enumerate() {
            let full: Vec<i64> = v
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
                if j + 1 >= v.prompt.len() {
                    mask[row + j] = 1.0;
                }
            }
        }
        let audio = vec![0f32; v.window_samples as usize];
        let mut verifier = Self {
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
        let silence = vec![0i16; verifier.audio.len()];
        verifier.verify_uninterruptible(&silence)?;
        Ok(verifier)
    }

    /// [`Verifier::verify`] without a cancellation handle (warm-up, self-test, benches).
    ///
    /// # Errors
    /// As [`Verifier::verify`], and [`RuntimeError::RunOptions`].
    pub fn verify_uninterruptible(&mut self, window: &[i16]) -> Result<Verdict, RuntimeError> {
        let run = RunOptions::new().map_err(|e| RuntimeError::RunOptions(e.to_string()))?;
        self.verify(window, &run)
    }

    /// The spec the verifier was built with.
    pub fn spec(&self) -> &VerifierSpec {
        &self.spec
    }

    /// Execution provider per session: mel, encoder, decoder.
    pub fn providers(&self) -> [Provider; 3] {
        self.providers
    }

    /// Scores one window: `window` is the last [`VerifierSection::window_samples`] samples
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
        let n = self.audio.len();
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
        let b = self.spec.section.candidates.len();
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
        let command_gap = (0..none)
            .filter(|&i| i != best)
            .map(|i| scores[best] - scores[i])
            .fold(f32::INFINITY, f32::min);
        let us = |a: Instant, z: Instant| (z - a).as_micros().min(u32::MAX as u128) as u32;
        Ok(Verdict {
            label: (margin >= self.spec.section.theta).then_some(best),
            best,
            margin,
            command_gap,
            scores,
            stage_us: [us(t0, t1), us(t1, t2), us(t2, t3)],
        })
    }
}

impl WindowVerifier for Verifier {
    fn window_samples(&self) -> usize {
        self.audio.len()
    }

    fn cancel_token(&self) -> CancelToken {
        CancelToken::for_ort_run()
    }

    fn verify(
        &mut self,
        window: &[i16],
        cancel: &CancelToken,
    ) -> Result<VerifyOutput, RuntimeError> {
        let v = match cancel.run_options() {
            Some(run) => Verifier::verify(self, window, run)?,
            None => self.verify_uninterruptible(window)?,
        };
        Ok(VerifyOutput {
            label: v.label,
            best: v.best,
            margin: v.margin,
            command_gap: v.command_gap,
            compute_us: v.stage_us.iter().sum(),
        })
    }
}
