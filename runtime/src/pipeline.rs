//! The streaming voice-command pipeline of docs/DESIGN.md §3, one 80 ms frame at a time:
//! Silero VAD → openWakeWord mel spectrogram → openWakeWord embedding → command head
//! → [`crate::decision`].
//!
//! An [`Engine`] owns one ONNX Runtime session per stage (`Session::run` needs
//! `&mut`, so each worker thread has its own engine). A [`StreamState`] holds
//! everything that belongs to one audio stream, so any engine can process any stream's
//! next frame, in order.
//!
//! Streams start as if preceded by digital silence: the mel and embedding windows are
//! pre-filled with the features of zeros, so the first frame already produces scores
//! (openWakeWord's streaming service has ~2 s of dead time here instead).

use std::sync::atomic::{AtomicBool, Ordering};

use ort::session::{RunOptions, Session};
use ort::value::TensorRef;
use outpost_models::format::MAX_HEAD_WINDOW;
use outpost_models::manifest::{ModelStage, PipelineSpec};
use outpost_models::verify::VerifiedBundle;
use outpost_protocol::{Provider, Stage, SAMPLE_RATE_HZ};

use crate::decision::{Decided, Decider, DecisionParams, TriggerRule};
use crate::ort_env::{build_session, SessionConfig};
use crate::scheduler::FrameProcessor;
use crate::RuntimeError;

/// Samples per frame (80 ms at 16 kHz).
pub const FRAME_SAMPLES: usize = outpost_protocol::FRAME_SAMPLES;
/// Samples per mel call: 1280 new + 480 of context → 8 mel frames.
pub const MEL_WINDOW_SAMPLES: usize = 1760;
/// Mel frames produced per audio frame (hop 160 samples = 10 ms).
pub const MEL_FRAMES_PER_FRAME: usize = 8;
/// Mel bins (openWakeWord `melspectrogram.onnx`).
pub const MEL_BINS: usize = 32;
/// Mel frames seen by the embedding model (`input_1` [1, 76, 32, 1]).
pub const EMBEDDING_WINDOW: usize = 76;
/// Embedding width (`conv2d_19` [1, 1, 1, 96]).
pub const EMBEDDING_DIM: usize = 96;
/// Silero VAD window at 16 kHz in samples, and its carried context.
pub const VAD_WINDOW: usize = 512;
/// Context samples Silero prepends to each window.
pub const VAD_CONTEXT: usize = 64;
/// Silero recurrent state size: [2, 1, 128].
pub const VAD_STATE: usize = 2 * 128;

/// Stream time at the end of frame `seq` (0 for the stream's first frame), in ms:
/// `(seq + 1) × 80`, saturating at `u32::MAX` (49.7 days of audio). It keeps advancing
/// across a state reset and counts frames the client skipped.
pub fn stream_time_ms(seq: u32) -> u32 {
    let frame_ms = (FRAME_SAMPLES as u32 * 1000) / SAMPLE_RATE_HZ;
    seq.saturating_add(1).saturating_mul(frame_ms)
}

/// Result of one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameOutput {
    /// Highest VAD probability of the windows completed in this frame.
    pub vad_prob: f32,
    /// Detection, if the decision fired on this frame.
    pub detection: Option<Decided>,
    /// Audio this engine state has processed, in ms, at the end of this frame. It
    /// restarts with the state (a deadline miss resets it), so it is not the stream's
    /// time: the scheduler stamps detections with [`stream_time_ms`] of the frame's
    /// sequence number instead.
    pub audio_ms: u32,
    /// Compute per stage in µs: VAD, mel, embedding, head+decision.
    pub stage_us: [u32; 4],
    /// The head's scores for this frame (softmax, label order); the first
    /// `scores_len` entries are meaningful.
    pub scores: [f32; crate::decision::MAX_LABELS],
    /// Number of labels in `scores`.
    pub scores_len: usize,
}

/// The model stages in [`FrameOutput::stage_us`] order.
pub const MODEL_STAGES: [Stage; 4] = [Stage::Vad, Stage::Mel, Stage::Embedding, Stage::Head];

/// Everything one stream carries from frame to frame.
#[derive(Debug, Clone)]
pub struct StreamState {
    /// Last 480 samples of audio (int16 scale), prepended to the next frame for mel.
    mel_context: [f32; MEL_WINDOW_SAMPLES - FRAME_SAMPLES],
    /// Silero carried context (last 64 samples, scaled to [-1, 1)).
    vad_context: [f32; VAD_CONTEXT],
    /// Silero recurrent state.
    vad_state: [f32; VAD_STATE],
    /// Samples (scaled) waiting for a full VAD window.
    vad_pending: [f32; VAD_WINDOW],
    vad_pending_len: usize,
    /// Last 76 mel frames, oldest first, already transformed (x/10 + 2).
    mel: Vec<f32>,
    /// Last `head_window` embeddings, oldest first.
    emb: Vec<f32>,
    decider: Decider,
    frames: u32,
}

impl StreamState {
    /// Frames processed so far.
    pub fn frames(&self) -> u32 {
        self.frames
    }
}

/// Resolved tensor names of one stage.
#[derive(Debug, Clone)]
struct Names {
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl Names {
    fn of(stage: &ModelStage, n_in: usize, n_out: usize, what: &str) -> Result<Self, RuntimeError> {
        if stage.inputs.len() != n_in || stage.outputs.len() != n_out {
            return Err(RuntimeError::Pipeline(format!(
                "{what} stage declares {} inputs and {} outputs (expected {n_in} and {n_out})",
                stage.inputs.len(),
                stage.outputs.len()
            )));
        }
        Ok(Self {
            inputs: stage.inputs.clone(),
            outputs: stage.outputs.clone(),
        })
    }
}

/// One set of sessions for the whole pipeline, plus scratch buffers.
pub struct Engine {
    vad: Session,
    mel: Session,
    emb: Session,
    head: Session,
    vad_names: Names,
    mel_names: Names,
    emb_names: Names,
    head_names: Names,
    providers: [Provider; 4],
    params: DecisionParams,
    labels: Vec<String>,
    head_window: usize,
    silence_mel: [f32; MEL_BINS],
    silence_emb: [f32; EMBEDDING_DIM],
    no_cancel: std::sync::Arc<RunOptions>,
    vad_in: Vec<f32>,
    mel_in: Vec<f32>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("providers", &self.providers)
            .field("labels", &self.labels)
            .field("head_window", &self.head_window)
            .finish_non_exhaustive()
    }
}

fn stage_err(stage: Stage, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Inference {
        stage,
        detail: e.to_string(),
    }
}

impl Engine {
    /// Builds the sessions from a verified bundle and checks every stage's output
    /// shape by running it once on silence (which is also the first warm-up).
    ///
    /// # Errors
    /// [`RuntimeError::Pipeline`] when the manifest's pipeline does not fit this runtime
    /// (sample rate, frame size, names, shapes), [`RuntimeError::Session`] when a model
    /// does not load, [`RuntimeError::Inference`] when the silence run fails.
    pub fn new(bundle: &VerifiedBundle, cfg: &SessionConfig) -> Result<Self, RuntimeError> {
        let spec: &PipelineSpec = &bundle.manifest.pipeline;
        if spec.sample_rate_hz != SAMPLE_RATE_HZ || spec.frame_samples as usize != FRAME_SAMPLES {
            return Err(RuntimeError::Pipeline(format!(
                "bundle pipeline is {} Hz x {} samples per frame (this runtime runs {SAMPLE_RATE_HZ} Hz x {FRAME_SAMPLES})",
                spec.sample_rate_hz, spec.frame_samples
            )));
        }
        let model = |st: &ModelStage, what: Stage| -> Result<(Session, Provider), RuntimeError> {
            let bytes = bundle.file(&st.file).ok_or_else(|| {
                RuntimeError::Pipeline(format!(
                    "{what} model file '{}' is not in the bundle",
                    st.file
                ))
            })?;
            build_session(what, bytes, cfg)
        };
        let (vad, pv) = model(&spec.vad, Stage::Vad)?;
        let (mel, pm) = model(&spec.mel, Stage::Mel)?;
        let (emb, pe) = model(&spec.embedding, Stage::Embedding)?;
        let (head, ph) = model(&spec.head, Stage::Head)?;
        let head_window = spec.head_window as usize;
        if !(1..=MAX_HEAD_WINDOW as usize).contains(&head_window) {
            return Err(RuntimeError::Pipeline(format!(
                "head_window = {head_window} (expected 1..={MAX_HEAD_WINDOW})"
            )));
        }
        // Stage 1 of a two-stage bundle fires on any command; its verifier names it.
        let rule = match bundle.manifest.verifier {
            Some(_) => TriggerRule::AnyCommand,
            None => TriggerRule::BestCommand,
        };
        let params = DecisionParams::from_spec(&spec.decision, &spec.labels, 80, rule)
            .map_err(|e| RuntimeError::Pipeline(format!("decision parameters: {e}")))?;
        let mut engine = Self {
            vad,
            mel,
            emb,
            head,
            vad_names: Names::of(&spec.vad, 3, 2, "vad")?,
            mel_names: Names::of(&spec.mel, 1, 1, "mel")?,
            emb_names: Names::of(&spec.embedding, 1, 1, "embedding")?,
            head_names: Names::of(&spec.head, 1, 1, "head")?,
            providers: [pv, pm, pe, ph],
            params,
            labels: spec.labels.clone(),
            head_window,
            silence_mel: [0.0; MEL_BINS],
            silence_emb: [0.0; EMBEDDING_DIM],
            no_cancel: std::sync::Arc::new(
                RunOptions::new().map_err(|e| RuntimeError::RunOptions(e.to_string()))?,
            ),
            vad_in: vec![0.0; VAD_CONTEXT + VAD_WINDOW],
            mel_in: vec![0.0; MEL_WINDOW_SAMPLES],
        };
        engine.compute_silence()?;
        Ok(engine)
    }

    /// Provider serving each model stage, in [`MODEL_STAGES`] order.
    pub fn providers(&self) -> [Provider; 4] {
        self.providers
    }

    /// Labels, indexed by [`Decided::label`].
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Decision parameters in force.
    pub fn params(&self) -> &DecisionParams {
        &self.params
    }

    fn compute_silence(&mut self) -> Result<(), RuntimeError> {
        self.mel_in.fill(0.0);
        let mut frames = [0.0f32; MEL_FRAMES_PER_FRAME * MEL_BINS];
        run_mel(
            &mut self.mel,
            &self.mel_names,
            &self.mel_in,
            &mut frames,
            &self.no_cancel,
        )?;
        self.silence_mel
            .copy_from_slice(&frames[(MEL_FRAMES_PER_FRAME - 1) * MEL_BINS..]);
        let window: Vec<f32> = (0..EMBEDDING_WINDOW)
            .flat_map(|_| self.silence_mel)
            .collect();
        let mut e = [0.0f32; EMBEDDING_DIM];
        run_embedding(
            &mut self.emb,
            &self.emb_names,
            &window,
            &mut e,
            &self.no_cancel,
        )?;
        self.silence_emb = e;
        // Check the head's output width against the labels.
        let st = self.new_stream();
        let mut scores = [0.0f32; crate::decision::MAX_LABELS];
        let n = run_head(
            &mut self.head,
            &self.head_names,
            &st.emb,
            self.head_window,
            &mut scores,
            &self.no_cancel,
        )?;
        if n != self.labels.len() {
            return Err(RuntimeError::Pipeline(format!(
                "head outputs {n} scores but the bundle lists {} labels",
                self.labels.len()
            )));
        }
        Ok(())
    }

    /// A new stream, as if preceded by digital silence.
    pub fn new_stream(&self) -> StreamState {
        StreamState {
            mel_context: [0.0; MEL_WINDOW_SAMPLES - FRAME_SAMPLES],
            vad_context: [0.0; VAD_CONTEXT],
            vad_state: [0.0; VAD_STATE],
            vad_pending: [0.0; VAD_WINDOW],
            vad_pending_len: 0,
            mel: (0..EMBEDDING_WINDOW)
                .flat_map(|_| self.silence_mel)
                .collect(),
            emb: (0..self.head_window)
                .flat_map(|_| self.silence_emb)
                .collect(),
            decider: Decider::new(),
            frames: 0,
        }
    }

    /// [`Engine::process`] without a cancellation handle (warm-up, self-test, benches).
    ///
    /// # Errors
    /// As [`Engine::process`].
    pub fn process_uninterruptible(
        &mut self,
        st: &mut StreamState,
        pcm: &[i16],
    ) -> Result<FrameOutput, RuntimeError> {
        let run = std::sync::Arc::clone(&self.no_cancel);
        self.process(st, pcm, &run)
    }

    /// Processes one frame of exactly [`FRAME_SAMPLES`] s16 samples through every
    /// stage. `run` lets another thread cancel the work (`RunOptions::terminate`).
    ///
    /// On error the stream's state may hold part of this frame; the caller resets it
    /// with [`Engine::new_stream`] (the scheduler does).
    ///
    /// # Errors
    /// [`RuntimeError::Inference`] naming the stage (including a cancelled run), or
    /// [`RuntimeError::Pipeline`] for a frame of the wrong length.
    pub fn process(
        &mut self,
        st: &mut StreamState,
        pcm: &[i16],
        run: &RunOptions,
    ) -> Result<FrameOutput, RuntimeError> {
        if pcm.len() != FRAME_SAMPLES {
            return Err(RuntimeError::Pipeline(format!(
                "frame has {} samples (expected {FRAME_SAMPLES})",
                pcm.len()
            )));
        }
        let mut stage_us = [0u32; 4];
        let t0 = std::time::Instant::now();

        // VAD: Silero on each completed 512-sample window, with 64 samples of context.
        let mut vad_prob = 0.0f32;
        for &s in pcm {
            st.vad_pending[st.vad_pending_len] = s as f32 / 32768.0;
            st.vad_pending_len += 1;
            if st.vad_pending_len == VAD_WINDOW {
                self.vad_in[..VAD_CONTEXT].copy_from_slice(&st.vad_context);
                self.vad_in[VAD_CONTEXT..].copy_from_slice(&st.vad_pending);
                let p = run_vad(
                    &mut self.vad,
                    &self.vad_names,
                    &self.vad_in,
                    &mut st.vad_state,
                    run,
                )?;
                vad_prob = vad_prob.max(p);
                st.vad_context
                    .copy_from_slice(&st.vad_pending[VAD_WINDOW - VAD_CONTEXT..]);
                st.vad_pending_len = 0;
            }
        }
        let t1 = std::time::Instant::now();

        // Mel: last 1760 samples at int16 scale → 8 frames, then x/10 + 2.
        let ctx = st.mel_context.len();
        self.mel_in[..ctx].copy_from_slice(&st.mel_context);
        for (d, &s) in self.mel_in[ctx..].iter_mut().zip(pcm) {
            *d = s as f32;
        }
        st.mel_context
            .copy_from_slice(&self.mel_in[MEL_WINDOW_SAMPLES - ctx..]);
        let new = MEL_FRAMES_PER_FRAME * MEL_BINS;
        st.mel.copy_within(new.., 0);
        let at = st.mel.len() - new;
        run_mel(
            &mut self.mel,
            &self.mel_names,
            &self.mel_in,
            &mut st.mel[at..],
            run,
        )?;
        let t2 = std::time::Instant::now();

        // Embedding of the last 76 mel frames.
        st.emb.copy_within(EMBEDDING_DIM.., 0);
        let at = st.emb.len() - EMBEDDING_DIM;
        let mut e = [0.0f32; EMBEDDING_DIM];
        run_embedding(&mut self.emb, &self.emb_names, &st.mel, &mut e, run)?;
        st.emb[at..].copy_from_slice(&e);
        let t3 = std::time::Instant::now();

        // Head on the last `head_window` embeddings, then the decision.
        let mut scores = [0.0f32; crate::decision::MAX_LABELS];
        let n = run_head(
            &mut self.head,
            &self.head_names,
            &st.emb,
            self.head_window,
            &mut scores,
            run,
        )?;
        let detection = st.decider.push(&self.params, &scores[..n], vad_prob);
        let t4 = std::time::Instant::now();

        st.frames += 1;
        for (slot, (a, b)) in stage_us
            .iter_mut()
            .zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4)])
        {
            *slot = (b - a).as_micros().min(u32::MAX as u128) as u32;
        }
        Ok(FrameOutput {
            vad_prob,
            detection,
            audio_ms: st.frames * 80,
            stage_us,
            scores,
            scores_len: n,
        })
    }
}

fn run_vad(
    s: &mut Session,
    names: &Names,
    input: &[f32],
    state: &mut [f32; VAD_STATE],
    run: &RunOptions,
) -> Result<f32, RuntimeError> {
    let sr = [i64::from(SAMPLE_RATE_HZ)];
    let out = s
        .run_with_options(
            ort::inputs![
                names.inputs[0].as_str() => TensorRef::from_array_view(([1usize, input.len()], input)).map_err(|e| stage_err(Stage::Vad, e))?,
                names.inputs[1].as_str() => TensorRef::from_array_view(([2usize, 1, 128], &state[..])).map_err(|e| stage_err(Stage::Vad, e))?,
                names.inputs[2].as_str() => TensorRef::from_array_view((Vec::<i64>::new(), &sr[..])).map_err(|e| stage_err(Stage::Vad, e))?,
            ],
            run,
        )
        .map_err(|e| stage_err(Stage::Vad, e))?;
    let (_, prob) = out[names.outputs[0].as_str()]
        .try_extract_tensor::<f32>()
        .map_err(|e| stage_err(Stage::Vad, e))?;
    let (_, new_state) = out[names.outputs[1].as_str()]
        .try_extract_tensor::<f32>()
        .map_err(|e| stage_err(Stage::Vad, e))?;
    if prob.len() != 1 || new_state.len() != VAD_STATE {
        return Err(stage_err(
            Stage::Vad,
            format!(
                "outputs {} and {} values (expected 1 and {VAD_STATE})",
                prob.len(),
                new_state.len()
            ),
        ));
    }
    state.copy_from_slice(new_state);
    Ok(prob[0])
}

fn run_mel(
    s: &mut Session,
    names: &Names,
    input: &[f32],
    out_frames: &mut [f32],
    run: &RunOptions,
) -> Result<(), RuntimeError> {
    let out = s
        .run_with_options(
            ort::inputs![names.inputs[0].as_str() => TensorRef::from_array_view(([1usize, input.len()], input)).map_err(|e| stage_err(Stage::Mel, e))?],
            run,
        )
        .map_err(|e| stage_err(Stage::Mel, e))?;
    let (_, v) = out[names.outputs[0].as_str()]
        .try_extract_tensor::<f32>()
        .map_err(|e| stage_err(Stage::Mel, e))?;
    if v.len() != out_frames.len() {
        return Err(stage_err(
            Stage::Mel,
            format!(
                "output has {} values (expected {} = 8 frames x 32 bins)",
                v.len(),
                out_frames.len()
            ),
        ));
    }
    for (d, &x) in out_frames.iter_mut().zip(v) {
        *d = x / 10.0 + 2.0;
    }
    Ok(())
}

fn run_embedding(
    s: &mut Session,
    names: &Names,
    mel: &[f32],
    out_emb: &mut [f32; EMBEDDING_DIM],
    run: &RunOptions,
) -> Result<(), RuntimeError> {
    let out = s
        .run_with_options(
            ort::inputs![names.inputs[0].as_str() => TensorRef::from_array_view(([1usize, EMBEDDING_WINDOW, MEL_BINS, 1], mel)).map_err(|e| stage_err(Stage::Embedding, e))?],
            run,
        )
        .map_err(|e| stage_err(Stage::Embedding, e))?;
    let (_, v) = out[names.outputs[0].as_str()]
        .try_extract_tensor::<f32>()
        .map_err(|e| stage_err(Stage::Embedding, e))?;
    if v.len() != EMBEDDING_DIM {
        return Err(stage_err(
            Stage::Embedding,
            format!("output has {} values (expected 96)", v.len()),
        ));
    }
    out_emb.copy_from_slice(v);
    Ok(())
}

fn run_head(
    s: &mut Session,
    names: &Names,
    emb: &[f32],
    window: usize,
    scores: &mut [f32; crate::decision::MAX_LABELS],
    run: &RunOptions,
) -> Result<usize, RuntimeError> {
    let out = s
        .run_with_options(
            ort::inputs![names.inputs[0].as_str() => TensorRef::from_array_view(([1usize, window, EMBEDDING_DIM], emb)).map_err(|e| stage_err(Stage::Head, e))?],
            run,
        )
        .map_err(|e| stage_err(Stage::Head, e))?;
    let (_, v) = out[names.outputs[0].as_str()]
        .try_extract_tensor::<f32>()
        .map_err(|e| stage_err(Stage::Head, e))?;
    if v.is_empty() || v.len() > scores.len() {
        return Err(stage_err(
            Stage::Head,
            format!(
                "output has {} scores (expected 1..={})",
                v.len(),
                crate::decision::MAX_LABELS
            ),
        ));
    }
    scores[..v.len()].copy_from_slice(v);
    Ok(v.len())
}

/// Cancels one frame's work from another thread: a flag, plus the ONNX Runtime
/// `RunOptions` the run uses, terminated at the next operator boundary.
#[derive(Debug, Default)]
pub struct CancelToken {
    cancelled: AtomicBool,
    run: Option<RunOptionsCell>,
}

/// `RunOptions` wrapper (`RunOptions` has no `Debug`).
struct RunOptionsCell(RunOptions);

impl std::fmt::Debug for RunOptionsCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunOptions")
    }
}

impl CancelToken {
    /// A token that also terminates an ONNX Runtime run.
    pub fn with_run_options(run: RunOptions) -> Self {
        Self {
            cancelled: AtomicBool::new(false),
            run: Some(RunOptionsCell(run)),
        }
    }

    /// A token with fresh ONNX Runtime `RunOptions`; a plain flag (with a warning) in the
    /// unlikely case ONNX Runtime cannot make them, so the run is still answered by its
    /// deadline, only not cut short.
    pub fn for_ort_run() -> Self {
        match RunOptions::new() {
            Ok(r) => Self::with_run_options(r),
            Err(e) => {
                log::warn!("no RunOptions for cancellation: {e}");
                Self::default()
            }
        }
    }

    /// Requests cancellation.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        if let Some(r) = &self.run {
            if let Err(e) = r.0.terminate() {
                log::warn!("could not terminate an ONNX Runtime run: {e}");
            }
        }
    }

    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// The ONNX Runtime options to run with, if any.
    pub fn run_options(&self) -> Option<&RunOptions> {
        self.run.as_ref().map(|r| &r.0)
    }
}

impl FrameProcessor for Engine {
    type State = StreamState;

    fn new_stream(&self) -> StreamState {
        Engine::new_stream(self)
    }

    fn cancel_token(&self) -> CancelToken {
        CancelToken::for_ort_run()
    }

    fn process(
        &mut self,
        state: &mut StreamState,
        pcm: &[i16],
        cancel: &CancelToken,
    ) -> Result<FrameOutput, RuntimeError> {
        match cancel.run_options() {
            Some(run) => Engine::process(self, state, pcm, run),
            None => Engine::process_uninterruptible(self, state, pcm),
        }
    }
}

/// Low-level stage calls for golden-vector tests and benchmarks: each runs one model
/// exactly as the pipeline does.
pub mod stages {
    use super::*;

    /// A single-stage session built from model bytes with the shared builder.
    pub struct StageSession {
        session: Session,
        names: Names,
        run: RunOptions,
    }

    impl std::fmt::Debug for StageSession {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("StageSession")
                .field("names", &self.names)
                .finish_non_exhaustive()
        }
    }

    impl StageSession {
        /// Loads `model` with tensor names from `stage`.
        ///
        /// # Errors
        /// As [`build_session`].
        pub fn new(
            what: Stage,
            model: &[u8],
            stage: &ModelStage,
            cfg: &SessionConfig,
        ) -> Result<Self, RuntimeError> {
            let (session, _) = build_session(what, model, cfg)?;
            Ok(Self {
                session,
                names: Names {
                    inputs: stage.inputs.clone(),
                    outputs: stage.outputs.clone(),
                },
                run: RunOptions::new().map_err(|e| RuntimeError::RunOptions(e.to_string()))?,
            })
        }

        /// Silero: `input` = 64 context + 512 samples in [-1, 1); updates `state`;
        /// returns the speech probability.
        ///
        /// # Errors
        /// [`RuntimeError::Inference`].
        pub fn vad(
            &mut self,
            input: &[f32],
            state: &mut [f32; VAD_STATE],
        ) -> Result<f32, RuntimeError> {
            run_vad(&mut self.session, &self.names, input, state, &self.run)
        }

        /// Mel: 1760 int16-scale samples → 8 × 32 transformed (x/10 + 2) frames.
        ///
        /// # Errors
        /// [`RuntimeError::Inference`].
        pub fn mel(&mut self, input: &[f32]) -> Result<Vec<f32>, RuntimeError> {
            let mut out = vec![0.0; MEL_FRAMES_PER_FRAME * MEL_BINS];
            run_mel(&mut self.session, &self.names, input, &mut out, &self.run)?;
            Ok(out)
        }

        /// Embedding: 76 × 32 transformed mel frames → 96 values.
        ///
        /// # Errors
        /// [`RuntimeError::Inference`].
        pub fn embedding(&mut self, mel: &[f32]) -> Result<[f32; EMBEDDING_DIM], RuntimeError> {
            let mut e = [0.0; EMBEDDING_DIM];
            run_embedding(&mut self.session, &self.names, mel, &mut e, &self.run)?;
            Ok(e)
        }

        /// Head: `window` × 96 embeddings → scores.
        ///
        /// # Errors
        /// [`RuntimeError::Inference`].
        pub fn head(&mut self, emb: &[f32], window: usize) -> Result<Vec<f32>, RuntimeError> {
            let mut s = [0.0; crate::decision::MAX_LABELS];
            let n = run_head(
                &mut self.session,
                &self.names,
                emb,
                window,
                &mut s,
                &self.run,
            )?;
            Ok(s[..n].to_vec())
        }
    }
}
