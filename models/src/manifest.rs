//! The bundle manifest: what a signed bundle promises about its contents.
//!
//! Encoded with `postcard` inside the bundle file; the Ed25519 signature covers
//! the exact encoded bytes (see `crate::format`). Field order is part of the
//! format: append new fields only with a new `format_version`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::BundleError;
use crate::format::{
    validate_file_name, FRAME_SAMPLES, MAX_FILES, MAX_FILE_LEN, MAX_HEAD_WINDOW, MAX_LABELS,
    MAX_PAYLOAD_LEN, MAX_SELF_TESTS, MAX_SEQUENCE_TOKENS, MAX_SMOOTHING_FRAMES, MAX_STRING_LEN,
    MAX_TENSORS_PER_STAGE, MAX_VERIFIER_WINDOW, MAX_VERIFY_DEADLINE_MS, MAX_VERIFY_WAIT_MS,
    SAMPLE_RATE_HZ, STAGE_TENSORS, VERIFIER_TENSORS,
};

/// Everything a bundle declares. Parsed strictly (postcard, size caps checked
/// by [`Manifest::validate`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Human name, e.g. `outpost-reference-dev`. At most 64 bytes.
    pub name: String,
    /// Monotonic version; installs below the anti-rollback floor are refused.
    pub version: u32,
    /// Device class this bundle is built for, e.g. `jetson-orin`, `generic-x86_64`, `any`.
    pub compatible: String,
    /// Inclusive range of `outpost-runtime` versions (semver `MAJOR.MINOR.PATCH`) that can run it.
    pub runtime_min: String,
    /// Inclusive upper bound, see `runtime_min`.
    pub runtime_max: String,
    /// `true` when signed by a development key; shown in status, refused in production.
    pub development: bool,
    /// The voice-command pipeline the runtime builds from the payload files.
    pub pipeline: PipelineSpec,
    /// Clips the daemon runs at boot before it marks the slot good.
    pub self_tests: Vec<SelfTest>,
    /// Every payload file, in the order they follow the signature in the bundle file.
    pub files: Vec<FileEntry>,
    /// Stage 2, the verifier (format v2 only; `None` in a v1 bundle): when stage 1
    /// triggers, a speech recogniser scores the trigger's audio against every label's
    /// token sequence, and only an agreeing command is detected.
    pub verifier: Option<VerifierSection>,
}

/// Stage 2 of docs/DESIGN.md §3: Whisper tiny.en (the reference) exported to three ONNX
/// graphs by `models/reference/recipe/verifier_export.py`, which also writes this
/// section as `verifier.json`:
///
/// ```text
/// audio f32 [1, window_samples] ─mel─▶ log_mel [1, 80, frames] ─encoder─▶ states [1, T, 384]
/// states + every label's teacher-forced sequence ─decoder─▶ score [labels] (log-prob, nats)
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifierSection {
    /// Log-mel front end: `audio` → `log_mel`.
    pub mel: ModelStage,
    /// Encoder: `log_mel` → `encoder_states`.
    pub encoder: ModelStage,
    /// Decoder: `encoder_states`, `tokens`, `targets`, `mask` → `score`.
    pub decoder: ModelStage,
    /// Audio window in samples at 16 kHz, ending at the trigger (48 000 = 3 s): a
    /// positive multiple of 320 (Whisper's encoder halves 10 ms mel frames), at most
    /// [`MAX_VERIFIER_WINDOW`] (30 s, Whisper's window).
    pub window_samples: u32,
    /// Decoder prompt token ids (`<|startoftranscript|><|notimestamps|>` for tiny.en).
    pub prompt: Vec<u32>,
    /// End-of-text token id, appended to every candidate.
    pub eot: u32,
    /// Token ids per label, in `pipeline.labels` order; the last label is `none` and its
    /// sequence (`<|nocaptions|>`) is the competitor for "anything else": the reference
    /// decoder scores that row as `ln(1 - Σ p(command))`, everything but the commands.
    pub candidates: Vec<Vec<u32>>,
    /// Nats by which the best command's score must beat `none`'s to be accepted; finite.
    pub theta: f32,
    /// A trigger's utterance has ended on the first frame, from the trigger on, whose VAD
    /// probability is below this, in [0, 1]; the verified window ends with that frame.
    pub end_of_speech_vad: f32,
    /// The longest wait for that frame after the trigger, in ms
    /// (0..=[`MAX_VERIFY_WAIT_MS`]; rounded up to whole 80 ms frames): babble keeps the
    /// VAD up, and the window then ends with the last frame waited for.
    pub max_wait_ms: u32,
    /// Default verification deadline, in ms after the arrival of the frame the window
    /// ends with (1..=[`MAX_VERIFY_DEADLINE_MS`]); the daemon's `--verify-deadline-ms`
    /// overrides it.
    pub deadline_ms: u32,
    /// Compute budget per verification, in µs (reported beside the measured p99).
    pub budget_us: u32,
}

/// One payload file. Names are plain (`[A-Za-z0-9._-]`, no leading `.`, at most 64 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name, see [`crate::format::validate_file_name`].
    pub name: String,
    /// Length in bytes.
    pub len: u64,
    /// SHA-256 of the file's bytes.
    pub sha256: [u8; 32],
}

/// The pipeline of docs/DESIGN.md §3: VAD, mel features, embedding, command head, decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineSpec {
    /// Audio sample rate in Hz; must be [`SAMPLE_RATE_HZ`] (16 000), the protocol's.
    pub sample_rate_hz: u32,
    /// Samples per streamed frame; must be [`FRAME_SAMPLES`] (1280 = 80 ms at 16 kHz).
    pub frame_samples: u32,
    /// Voice activity detection model.
    pub vad: ModelStage,
    /// Mel-spectrogram feature model.
    pub mel: ModelStage,
    /// Speech embedding model.
    pub embedding: ModelStage,
    /// Command classification head.
    pub head: ModelStage,
    /// Number of embeddings the head sees (16 for the reference head: [1, 16, 96]);
    /// 1..=[`MAX_HEAD_WINDOW`].
    pub head_window: u32,
    /// Head output labels, in output-index order, 1..=[`MAX_LABELS`] (32) of them. The
    /// label `none` is the rejection class.
    pub labels: Vec<String>,
    /// How head scores become detections.
    pub decision: DecisionSpec,
    /// Per-stage compute budgets in µs (docs/DESIGN.md §4 latency budget).
    pub budgets_us: StageBudgets,
}

/// One ONNX model of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelStage {
    /// Payload file name (must appear in `Manifest::files`).
    pub file: String,
    /// Input tensor names, in the order the runtime feeds them.
    pub inputs: Vec<String>,
    /// Output tensor names, in the order the runtime reads them.
    pub outputs: Vec<String>,
}

/// Decision parameters applied to head scores (see `outpost_runtime::decision`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionSpec {
    /// Smoothed score a command must reach to be detected, in [0, 1].
    pub threshold: f32,
    /// Per-label overrides of `threshold`: `(label, threshold)`.
    pub label_thresholds: Vec<(String, f32)>,
    /// Scores are averaged over this many consecutive frames,
    /// 1..=[`MAX_SMOOTHING_FRAMES`] (16).
    pub smoothing_frames: u32,
    /// No second detection within this many ms of the previous one.
    pub refractory_ms: u32,
    /// VAD speech probability that counts as speech, in [0, 1].
    pub vad_threshold: f32,
    /// A detection needs speech within this many ms before the frame (VAD gating).
    pub vad_hangover_ms: u32,
}

/// Per-stage compute budgets in µs; the daemon reports measured p99 beside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageBudgets {
    /// VAD budget per frame, in µs.
    pub vad_us: u32,
    /// Mel features budget per frame, in µs.
    pub mel_us: u32,
    /// Embedding budget per frame, in µs.
    pub embedding_us: u32,
    /// Head budget per frame, in µs.
    pub head_us: u32,
}

/// A self-test vector: raw 16 kHz mono s16le audio streamed through the pipeline at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfTest {
    /// Payload file with raw s16le samples (an even number of bytes).
    pub audio_file: String,
    /// The label that must be detected (exactly one detection), or `none` for no detection.
    pub expect_label: String,
    /// Maximum allowed per-frame compute in µs during the self-test (>= 1).
    pub max_frame_us: u32,
}

impl Manifest {
    /// Checks every cap and rule of format v1 (see the crate README, "Caps"):
    ///
    /// - `name`, `compatible`, labels, tensor names, self-test labels: 1..=64 bytes
    ///   ([`MAX_STRING_LEN`]), no control characters;
    /// - `runtime_min` / `runtime_max`: `MAJOR.MINOR.PATCH`, min <= max;
    /// - at most [`MAX_FILES`] files, names valid ([`validate_file_name`]) and unique, each at
    ///   most [`MAX_FILE_LEN`] bytes, [`MAX_PAYLOAD_LEN`] bytes in all;
    /// - 1..=[`MAX_LABELS`] labels (unique; the protocol's limit), at most
    ///   [`MAX_LABELS`] per-label thresholds, [`MAX_SELF_TESTS`] self tests,
    ///   [`MAX_TENSORS_PER_STAGE`] inputs/outputs per stage;
    /// - every file named by a stage or self test is in `files`; every self-test label and
    ///   per-label threshold names a label (or `none`);
    /// - thresholds finite and in [0, 1]; `smoothing_frames` in
    ///   1..=[`MAX_SMOOTHING_FRAMES`]; `head_window` in 1..=[`MAX_HEAD_WINDOW`];
    ///   `sample_rate_hz` = [`SAMPLE_RATE_HZ`] and `frame_samples` = [`FRAME_SAMPLES`]
    ///   (the protocol's audio format).
    ///
    /// What the runtime needs beyond the format (tensor counts per stage, self-test
    /// vectors) is [`Manifest::check_runtime`].
    ///
    /// # Errors
    /// The first rule broken, as the matching [`BundleError`] variant.
    pub fn validate(&self) -> Result<(), BundleError> {
        check_string("name", &self.name)?;
        check_string("compatible", &self.compatible)?;
        let min = parse_semver("runtime_min", &self.runtime_min)?;
        let max = parse_semver("runtime_max", &self.runtime_max)?;
        if min > max {
            return Err(invalid(
                "runtime_min",
                format!(
                    "{} is above runtime_max {} (expected min <= max)",
                    self.runtime_min, self.runtime_max
                ),
            ));
        }

        check_count("files", self.files.len(), MAX_FILES)?;
        let mut names = BTreeSet::new();
        let mut total: u64 = 0;
        for f in &self.files {
            validate_file_name(&f.name)?;
            if !names.insert(f.name.as_str()) {
                return Err(BundleError::DuplicateFileName {
                    name: f.name.clone(),
                });
            }
            if f.len > MAX_FILE_LEN {
                return Err(BundleError::FileTooLarge {
                    name: f.name.clone(),
                    len: f.len,
                    max: MAX_FILE_LEN,
                });
            }
            total += f.len; // <= 32 * 64 MiB: no overflow.
        }
        if total > MAX_PAYLOAD_LEN {
            return Err(BundleError::PayloadTooLarge {
                total,
                max: MAX_PAYLOAD_LEN,
            });
        }

        let p = &self.pipeline;
        for (field, value, expected) in [
            ("pipeline.sample_rate_hz", p.sample_rate_hz, SAMPLE_RATE_HZ),
            ("pipeline.frame_samples", p.frame_samples, FRAME_SAMPLES),
        ] {
            if value != expected {
                return Err(invalid(
                    field,
                    format!("is {value} (protocol v1 streams {expected}; expected {expected})"),
                ));
            }
        }
        check_range("pipeline.head_window", p.head_window, MAX_HEAD_WINDOW)?;
        for (stage_name, stage) in self.model_stages() {
            let field = format!("{stage_name}.file");
            if !names.contains(stage.file.as_str()) {
                return Err(BundleError::MissingFile {
                    referenced_by: field,
                    name: stage.file.clone(),
                });
            }
            for (dir, tensors) in [("inputs", &stage.inputs), ("outputs", &stage.outputs)] {
                let field = format!("{stage_name}.{dir}");
                check_count(&field, tensors.len(), MAX_TENSORS_PER_STAGE)?;
                for (i, t) in tensors.iter().enumerate() {
                    check_string(&format!("{field}[{i}]"), t)?;
                }
            }
        }

        if p.labels.is_empty() {
            return Err(invalid(
                "pipeline.labels",
                format!("is empty (expected 1..={MAX_LABELS} labels)"),
            ));
        }
        check_count("pipeline.labels", p.labels.len(), MAX_LABELS)?;
        let mut labels = BTreeSet::new();
        for (i, l) in p.labels.iter().enumerate() {
            check_string(&format!("pipeline.labels[{i}]"), l)?;
            if !labels.insert(l.as_str()) {
                return Err(invalid(
                    "pipeline.labels",
                    format!("label '{l}' appears twice (expected unique labels)"),
                ));
            }
        }

        let d = &p.decision;
        check_unit("pipeline.decision.threshold", d.threshold)?;
        check_unit("pipeline.decision.vad_threshold", d.vad_threshold)?;
        check_count(
            "pipeline.decision.label_thresholds",
            d.label_thresholds.len(),
            MAX_LABELS,
        )?;
        for (i, (label, t)) in d.label_thresholds.iter().enumerate() {
            let field = format!("pipeline.decision.label_thresholds[{i}]");
            if !labels.contains(label.as_str()) {
                return Err(invalid(
                    &field,
                    format!(
                        "label '{}' is not in pipeline.labels",
                        label.escape_default()
                    ),
                ));
            }
            check_unit(&field, *t)?;
        }
        check_range(
            "pipeline.decision.smoothing_frames",
            d.smoothing_frames,
            MAX_SMOOTHING_FRAMES,
        )?;

        if let Some(v) = &self.verifier {
            v.validate(&p.labels)?;
        }

        check_count("self_tests", self.self_tests.len(), MAX_SELF_TESTS)?;
        for (i, t) in self.self_tests.iter().enumerate() {
            if !names.contains(t.audio_file.as_str()) {
                return Err(BundleError::MissingFile {
                    referenced_by: format!("self_tests[{i}].audio_file"),
                    name: t.audio_file.clone(),
                });
            }
            let field = format!("self_tests[{i}].expect_label");
            check_string(&field, &t.expect_label)?;
            if t.expect_label != "none" && !labels.contains(t.expect_label.as_str()) {
                return Err(invalid(
                    &field,
                    format!(
                        "'{}' is not in pipeline.labels (expected a label or `none`)",
                        t.expect_label
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks what the runtime needs of a valid manifest beyond the format caps of
    /// [`Manifest::validate`], so that a bundle it cannot serve is refused when it is built,
    /// verified or installed (`outpost-provision` calls this), not first at boot:
    ///
    /// - each stage names exactly the tensors the runtime feeds and reads
    ///   ([`STAGE_TENSORS`]: VAD 3 inputs and 2 outputs, mel, embedding and head 1 and 1);
    /// - each self-test vector holds whole s16le samples (an even number of bytes) and has
    ///   `max_frame_us >= 1` (0 can never pass).
    ///
    /// Whether the tensor names exist in the models and the head gives one score per label
    /// needs ONNX Runtime: the daemon checks that at boot.
    ///
    /// # Errors
    /// The first rule broken, as [`BundleError::InvalidManifest`] naming the field.
    pub fn check_runtime(&self) -> Result<(), BundleError> {
        let p = &self.pipeline;
        let verifier = self.verifier.iter().flat_map(|v| {
            [&v.mel, &v.encoder, &v.decoder]
                .into_iter()
                .zip(VERIFIER_TENSORS)
        });
        for (stage, (name, n_in, n_out)) in [&p.vad, &p.mel, &p.embedding, &p.head]
            .into_iter()
            .zip(STAGE_TENSORS)
            .chain(verifier)
        {
            for (dir, got, want) in [
                ("inputs", stage.inputs.len(), n_in),
                ("outputs", stage.outputs.len(), n_out),
            ] {
                if got != want {
                    return Err(invalid(
                        &format!("{name}.{dir}"),
                        format!("names {got} tensors (the runtime uses exactly {want})"),
                    ));
                }
            }
        }
        for (i, t) in self.self_tests.iter().enumerate() {
            if let Some(f) = self.file(&t.audio_file) {
                if f.len % 2 != 0 {
                    return Err(invalid(
                        &format!("self_tests[{i}].audio_file"),
                        format!(
                            "'{}' is {} bytes (expected whole s16le samples: an even number of bytes)",
                            t.audio_file, f.len
                        ),
                    ));
                }
            }
            if t.max_frame_us == 0 {
                return Err(invalid(
                    &format!("self_tests[{i}].max_frame_us"),
                    "is 0 (expected >= 1 µs; no frame computes in 0 µs)".into(),
                ));
            }
        }
        Ok(())
    }

    /// Every model stage with its manifest path (`pipeline.vad`, …, `verifier.decoder`).
    pub fn model_stages(&self) -> Vec<(&'static str, &ModelStage)> {
        let p = &self.pipeline;
        let mut stages = vec![
            ("pipeline.vad", &p.vad),
            ("pipeline.mel", &p.mel),
            ("pipeline.embedding", &p.embedding),
            ("pipeline.head", &p.head),
        ];
        if let Some(v) = &self.verifier {
            stages.extend([
                ("verifier.mel", &v.mel),
                ("verifier.encoder", &v.encoder),
                ("verifier.decoder", &v.decoder),
            ]);
        }
        stages
    }

    /// The file entry with this name.
    #[must_use]
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Sum of all file lengths, in bytes.
    #[must_use]
    pub fn payload_len(&self) -> u64 {
        self.files.iter().map(|f| f.len).sum()
    }

    /// Whether runtime version `version` (`MAJOR.MINOR.PATCH`) is within
    /// `runtime_min..=runtime_max`.
    ///
    /// # Errors
    /// [`BundleError::InvalidManifest`] if `version` or the manifest's bounds do not parse.
    pub fn supports_runtime(&self, version: &str) -> Result<bool, BundleError> {
        let v = parse_semver("runtime version", version)?;
        Ok(parse_semver("runtime_min", &self.runtime_min)? <= v
            && v <= parse_semver("runtime_max", &self.runtime_max)?)
    }
}

impl VerifierSection {
    /// Checks the section against the pipeline's `labels` (called by
    /// [`Manifest::validate`]):
    ///
    /// - one candidate sequence per label, and the last label is `none`;
    /// - each candidate non-empty, and prompt + candidate + end of text at most
    ///   [`MAX_SEQUENCE_TOKENS`] tokens; a non-empty prompt;
    /// - `window_samples` a positive multiple of 320, at most [`MAX_VERIFIER_WINDOW`];
    /// - `theta` finite; `end_of_speech_vad` in [0, 1]; `max_wait_ms` at most
    ///   [`MAX_VERIFY_WAIT_MS`]; `deadline_ms` in 1..=[`MAX_VERIFY_DEADLINE_MS`];
    ///   `budget_us` ≥ 1.
    ///
    /// # Errors
    /// [`BundleError::InvalidManifest`] naming the `verifier.*` field.
    pub fn validate(&self, labels: &[String]) -> Result<(), BundleError> {
        if self.candidates.len() != labels.len() {
            return Err(invalid(
                "verifier.candidates",
                format!(
                    "has {} sequences for {} labels (expected one per label, in label order)",
                    self.candidates.len(),
                    labels.len()
                ),
            ));
        }
        if labels.last().map(String::as_str) != Some("none") {
            return Err(invalid(
                "pipeline.labels",
                "does not end with `none` (a verifier scores `none` last, as the competitor for anything else)".into(),
            ));
        }
        if self.prompt.is_empty() {
            return Err(invalid(
                "verifier.prompt",
                "is empty (expected the decoder's start tokens)".into(),
            ));
        }
        for (i, (label, c)) in labels.iter().zip(&self.candidates).enumerate() {
            let n = self.prompt.len() + c.len() + 1;
            if c.is_empty() || n > MAX_SEQUENCE_TOKENS {
                return Err(invalid(
                    &format!("verifier.candidates[{i}]"),
                    format!(
                        "label '{label}': {} tokens, {n} with prompt and end of text (expected 1 or more, at most {MAX_SEQUENCE_TOKENS} in all)",
                        c.len()
                    ),
                ));
            }
        }
        if self.window_samples == 0
            || !self.window_samples.is_multiple_of(320)
            || self.window_samples > MAX_VERIFIER_WINDOW
        {
            return Err(invalid(
                "verifier.window_samples",
                format!(
                    "is {} (expected a positive multiple of 320 samples, at most {MAX_VERIFIER_WINDOW})",
                    self.window_samples
                ),
            ));
        }
        if !self.theta.is_finite() {
            return Err(invalid(
                "verifier.theta",
                format!("is {} (expected a finite number of nats)", self.theta),
            ));
        }
        check_unit("verifier.end_of_speech_vad", self.end_of_speech_vad)?;
        if self.max_wait_ms > MAX_VERIFY_WAIT_MS {
            return Err(invalid(
                "verifier.max_wait_ms",
                format!(
                    "is {} (expected 0..={MAX_VERIFY_WAIT_MS})",
                    self.max_wait_ms
                ),
            ));
        }
        check_range(
            "verifier.deadline_ms",
            self.deadline_ms,
            MAX_VERIFY_DEADLINE_MS,
        )?;
        check_range("verifier.budget_us", self.budget_us, u32::MAX)?;
        Ok(())
    }
}

fn invalid(field: &str, problem: String) -> BundleError {
    BundleError::InvalidManifest {
        field: field.to_owned(),
        problem,
    }
}

fn check_string(field: &str, s: &str) -> Result<(), BundleError> {
    if s.is_empty() || s.len() > MAX_STRING_LEN {
        return Err(BundleError::StringLength {
            field: field.to_owned(),
            len: s.len(),
            max: MAX_STRING_LEN,
        });
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("'{}' contains a control character", s.escape_default()),
        ));
    }
    Ok(())
}

fn check_count(what: &str, count: usize, max: usize) -> Result<(), BundleError> {
    if count > max {
        return Err(BundleError::TooMany {
            what: what.to_owned(),
            count,
            max,
        });
    }
    Ok(())
}

fn check_range(field: &str, v: u32, max: u32) -> Result<(), BundleError> {
    if !(1..=max).contains(&v) {
        return Err(invalid(field, format!("is {v} (expected 1..={max})")));
    }
    Ok(())
}

fn check_unit(field: &str, v: f32) -> Result<(), BundleError> {
    if !(0.0..=1.0).contains(&v) {
        return Err(invalid(field, format!("{v} is outside [0, 1]")));
    }
    Ok(())
}

fn parse_semver(field: &str, s: &str) -> Result<(u64, u64, u64), BundleError> {
    let bad = || {
        invalid(
            field,
            format!(
                "'{}' is not a MAJOR.MINOR.PATCH version",
                s.escape_default()
            ),
        )
    };
    let mut parts = s.split('.');
    let mut next = || -> Result<u64, BundleError> {
        let p = parts.next().ok_or_else(bad)?;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        p.parse().map_err(|_| bad())
    };
    let v = (next()?, next()?, next()?);
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(v)
}
