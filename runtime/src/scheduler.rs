//! The deadline scheduler: every submitted frame gets exactly one answer, never later
//! than its deadline (docs/DESIGN.md §4).
//!
//! * **EDF across streams, FIFO within a stream.** Workers pick, among streams that
//!   are not already being processed, the one whose queued frames hold the earliest
//!   deadline, and take that stream's oldest frame (per-stream VAD and feature state
//!   demand order).
//! * **Admission control.** At arrival a frame is refused with
//!   [`Response::Rejected`] when the queue is at its bound, or when the work queued
//!   ahead of it (each frame at the mean measured compute, plus three standard
//!   deviations of their sum) plus its own worst-case compute (online p99.9 of
//!   measured compute; the p99 over the first 2 000 frames) cannot finish by its
//!   deadline. A frame that would start at once is charged its mean compute, and one
//!   such frame per second without a start is admitted whatever the estimates say
//!   ([`crate::edf::Edf::admit`]), so estimates above the budget cannot refuse every
//!   frame for ever. The estimates are seeded by warm-up at boot and then follow a
//!   sliding window of measured frames ([`crate::edf::CostEstimate`]).
//! * **Deadline timer.** A timer thread fires `guard` before each deadline; a frame not
//!   answered by then is answered [`Response::DeadlineMissed`], its ONNX Runtime run is
//!   terminated (`RunOptions::terminate`) and its stream's state is reset before the
//!   stream's next frame. ONNX Runtime calls cannot be pre-empted, so this is
//!   cooperative: the worker stops at the next operator boundary.
//! * **Exactly once.** Worker and timer race for one atomic flag per frame; the loser
//!   stays silent. A worker that finishes after the deadline answers `DeadlineMissed`,
//!   never a late result.
//! * **Checked at the write.** An audio frame's answer travels as a [`FrameAnswer`]
//!   with its [`Due`] time and is stamped when its first byte is written
//!   ([`FrameAnswer::written_at`]): a result the transport would write after the
//!   deadline goes out as `DeadlineMissed`, `total_us` / `elapsed_us` are the times
//!   of the write, and every answer written after its deadline is counted
//!   ([`Counters::late_writes`]).
//! * **Stage 2, verification, a second request class** ([`Scheduler::start_with_verifier`]).
//!   When stage 1 fires on a frame, the trigger waits for the end of its utterance
//!   (the first frame whose VAD probability drops below
//!   [`VerifyConfig::end_of_speech_vad`], at most [`VerifyConfig::max_wait_frames`]
//!   frames); the stream's last window of processed audio (3 s) up to that frame then
//!   becomes a verification job due [`VerifyConfig::deadline_us`] after that frame's
//!   arrival: end of speech + the latency target. It is admitted, queued EDF, expired
//!   and cancelled by the same policy ([`Edf`]) with its own compute estimates, and
//!   runs on its own worker(s) under `SCHED_IDLE` ([`Role::Verifier`]), so a 60 ms
//!   verification never holds a frame worker nor takes CPU time one wants: frames keep
//!   their 30 ms deadline. The trigger frame's answer carries no detection; the command
//!   (or why there is none) follows as `Response::Verification` with the trigger
//!   frame's request id, checked at the write like a frame's answer. A command that
//!   does not beat every other command by [`VerifyConfig::command_gap`] there is
//!   answered `NoCommand`.
//! * **Early verification** ([`VerifyConfig::early_theta`]). When the trigger frame
//!   does not end its utterance, the window ending with the trigger frame is also
//!   verified at once (stage 1 fires after the end of speech more often than not). A
//!   command that beats `none` by at least `early_theta` nats there, and every other
//!   command by [`VerifyConfig::early_command_gap`], is answered at once, and the
//!   verification at the end of the utterance is then dropped unrun; any other early
//!   outcome (a weaker or ambiguous command, `none`, a refusal, a failure or a
//!   deadline miss) is silent, and the trigger is answered by the verification at the
//!   end of its utterance as without it. It is made whatever the load (skipping it
//!   when the verifier is busy made the verdict depend on the load: the e2e
//!   reproducibility test caught it); only a refusal or deadline miss of it, under
//!   overload, leaves the decision to the later window. Within a stream verifications
//!   run in order, so the one at the end of the utterance never starts before the
//!   early one has finished, and when the utterance ends while the early one is still
//!   queued or running, its verification is **deferred**: admitted only when the early
//!   one ends, and dropped unrun if that one answered. Admitted at once, it was
//!   charged the early one's run ahead of it, and its refusal answered the trigger
//!   before the early verdict could: on a CPU where one verification takes most of
//!   the deadline, 6 or 7 of 8 triggers were refused so (`docs/performance.md`).
//!   Either way a trigger gets exactly one `Verification` (the first of its jobs to
//!   answer claims it).
//! * **Early fallback** ([`VerifyConfig::early_fallback_gap`]). A silent early verdict
//!   that named a command above the bundle's θ, clear of every other command by that
//!   gap, is kept; when the verdict at the end of the utterance then names no command,
//!   that command is detected instead. In babble the VAD does not drop, so the final
//!   window ends 320 ms after the trigger and often hears the talkers over the command
//!   the trigger's window held; no verification is added.
//! * **Utterance-end verification** ([`VerifyConfig::utterance`]). An utterance stage 1
//!   never fired on (at least [`UtteranceVerify::min_speech_frames`] frames with the VAD
//!   probability at or above [`VerifyConfig::end_of_speech_vad`], ended by
//!   [`UtteranceVerify::quiet_frames`] frames below it in a row) is verified as if a
//!   trigger had fired on its last frame: the window ending there, its audio from
//!   [`UtteranceVerify::lead_frames`] before the utterance's first frame of speech on
//!   (earlier audio zeroed), the verdict at the end of an utterance's rules. Its answer carries the `none` label as
//!   `trigger_label` and is sent only for a detected command, a deadline miss, a
//!   refusal or a failure; `NoCommand` stays silent (most utterances are not commands).
//!   A trigger in the quiet frames after it, up to
//!   [`UtteranceVerify::late_trigger_frames`] of them, belongs to that utterance: it is verified (on its own window) and
//!   answered only if the utterance-end verification was not, so an utterance gets at
//!   most one answer, whatever the order the two finish in (a stream's verifications
//!   run in order). It catches what the trigger misses: a dialect's sounds the
//!   trigger head never heard (docs/recognition.md).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;

use embassy_time::{Duration, Instant};

use outpost_protocol::{
    Detection, FrameResult, RejectReason, Response, Stage, Timing, Verification, VerifyOutcome,
    WireError,
};

pub use crate::answer::{Counters, Due, FrameAnswer, ResponseSink};
use crate::edf::{Admission, Edf, EdfConfig};
pub use crate::edf::{OpenError, StreamKey};
use crate::estimator::ComputeEstimator;
use crate::pipeline::{stream_time_ms, CancelToken, FrameOutput, FRAME_SAMPLES, MODEL_STAGES};
use crate::rt::{apply_to_current_thread, Role, RtConfig};
use crate::stats::LatencyStats;
use crate::RuntimeError;

/// What the scheduler runs: the pipeline, or a fake in tests.
pub trait FrameProcessor: Send + 'static {
    /// Per-stream state.
    type State: Send + 'static;
    /// Fresh state for a new (or reset) stream.
    fn new_stream(&self) -> Self::State;
    /// A cancel token for one frame.
    fn cancel_token(&self) -> CancelToken;
    /// Processes one frame of 1280 samples.
    ///
    /// # Errors
    /// Any [`RuntimeError`]; the scheduler resets the stream afterwards.
    fn process(
        &mut self,
        state: &mut Self::State,
        pcm: &[i16],
        cancel: &CancelToken,
    ) -> Result<FrameOutput, RuntimeError>;
}

/// What the scheduler runs for stage 2: the verifier
/// ([`crate::verifier::Verifier`]), or a fake in tests.
pub trait WindowVerifier: Send + 'static {
    /// Samples of audio, ending at the end of the utterance, that one verification
    /// scores.
    fn window_samples(&self) -> usize;
    /// A cancel token for one verification.
    fn cancel_token(&self) -> CancelToken;
    /// Scores one window of [`WindowVerifier::window_samples`] s16 samples at 16 kHz
    /// (fewer at a stream's start).
    ///
    /// # Errors
    /// Any [`RuntimeError`] (a cancelled run included); answered `Failed`.
    fn verify(
        &mut self,
        window: &[i16],
        cancel: &CancelToken,
    ) -> Result<VerifyOutput, RuntimeError>;
}

/// One verification's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VerifyOutput {
    /// The accepted command's label index, or `None` (no command).
    pub label: Option<usize>,
    /// The best command's label index, accepted or not.
    pub best: usize,
    /// The best command's score minus `none`'s, in nats.
    pub margin: f32,
    /// The best command's score minus the next best command's, in nats
    /// (`f32::INFINITY` with a single command).
    pub command_gap: f32,
    /// Compute in µs.
    pub compute_us: u32,
}

/// Stage 2's limits and starting estimates.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// Verification deadline after the arrival of the frame that ends the utterance
    /// (the window's last frame), in µs.
    pub deadline_us: u32,
    /// The utterance has ended on the first frame, from the trigger on, whose VAD
    /// probability is below this (the bundle's `verifier.end_of_speech_vad`).
    pub end_of_speech_vad: f32,
    /// Frames after the trigger to wait at most for the end of speech (babble keeps
    /// the VAD up); the window then ends at the last of them.
    pub max_wait_frames: u32,
    /// Early verification: when the trigger frame does not end its utterance, the
    /// window ending with it is verified at once too, and a command whose margin over
    /// `none` is at least this many nats is answered without waiting for the end of
    /// the utterance. `None`: verify only at the end of the utterance. It should be
    /// above the bundle's `theta`: the early window may cut the command's last sound
    /// (the daemon sets `theta` + 2 nats, `outpostd --early-verify-margin`).
    pub early_theta: Option<f32>,
    /// An early verdict must also beat every other command by this many nats: a window
    /// that cuts `lights o…` scores `lights on` and `lights off` alike, and the end of
    /// the utterance decides (the daemon sets 4, `outpostd --early-command-gap`).
    pub early_command_gap: f32,
    /// Early fallback: when the verdict at the end of the utterance names no command, a
    /// silent early verdict's command is detected if it beat `none` by the bundle's
    /// `theta` and every other command by this many nats (the daemon sets 4,
    /// `outpostd --early-fallback-gap`). `None`: the end of the utterance alone decides.
    pub early_fallback_gap: Option<f32>,
    /// The verdict at the end of the utterance must beat every other command by this
    /// many nats, else it is answered `NoCommand`: a miss the operator repeats rather
    /// than the other half of a minimal pair (`lights on` heard as `lights off` in
    /// noise; the daemon sets 1, `outpostd --command-gap`). 0: the best command wins.
    pub command_gap: f32,
    /// Utterance-end verification of the utterances stage 1 did not fire on; `None`:
    /// only triggers are verified (the daemon's default is on,
    /// `outpostd --no-utterance-verify`).
    pub utterance: Option<UtteranceVerify>,
    /// Verifications queued (not yet started) over all streams; beyond it, `Rejected`.
    pub queue_capacity: usize,
    /// Worst-case compute per verification assumed before any measurement, in µs.
    pub initial_wcet_us: u32,
    /// Typical compute per verification assumed before any measurement, in µs.
    pub initial_typical_us: u32,
    /// Standard deviation of compute per verification before any measurement, in µs.
    pub initial_spread_us: u32,
}

impl VerifyConfig {
    /// Frames of 80 ms to wait at most for the end of an utterance, for a wait of
    /// `max_wait_ms` (a bundle's `verifier.max_wait_ms`), rounded up.
    pub fn frames_of_wait(max_wait_ms: u32) -> u32 {
        max_wait_ms.div_ceil(stream_time_ms(0))
    }

    /// Whether a trigger's utterance has ended on a frame whose VAD probability is
    /// `vad_prob`, `frames_waited` frames after the trigger frame (0 on the trigger
    /// frame itself): the rule the scheduler serves and the boot self-test applies.
    pub fn utterance_ended(&self, vad_prob: f32, frames_waited: u32) -> bool {
        vad_prob < self.end_of_speech_vad || frames_waited >= self.max_wait_frames
    }
}

impl Default for VerifyConfig {
    /// 250 ms deadline (DESIGN §3's p90 target), end of speech at VAD < 0.5 or 4 frames
    /// (320 ms) after the trigger, no early verification, no utterance-end verification,
    /// 8 queued, 100 ms per verification.
    fn default() -> Self {
        Self {
            deadline_us: 250_000,
            end_of_speech_vad: 0.5,
            max_wait_frames: 4,
            early_theta: None,
            early_command_gap: 0.0,
            early_fallback_gap: None,
            command_gap: 0.0,
            utterance: None,
            queue_capacity: 8,
            initial_wcet_us: 100_000,
            initial_typical_us: 100_000,
            initial_spread_us: 0,
        }
    }
}

/// Which utterances stage 1 did not fire on are verified at their end
/// ([`VerifyConfig::utterance`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UtteranceVerify {
    /// Frames of 80 ms with the VAD probability at or above
    /// [`VerifyConfig::end_of_speech_vad`] an utterance needs (the daemon sets 3, 240 ms:
    /// the shortest command, `stop`, holds 4 or more).
    pub min_speech_frames: u32,
    /// Frames below it in a row that end the utterance; a shorter dip, a pause between
    /// two words, belongs to it (the daemon sets 2, 160 ms).
    pub quiet_frames: u32,
    /// Frames of audio kept before the utterance's first frame of speech; the window's
    /// audio before them is zeroed, so the verifier hears this utterance and not the
    /// one before it (a command said a second earlier would be heard again; the daemon
    /// sets 4, 320 ms: Silero's probability rises a frame or two after the speech
    /// starts).
    pub lead_frames: u32,
    /// Frames after the utterance's end in which a trigger, while the VAD stays below
    /// [`VerifyConfig::end_of_speech_vad`], still belongs to that utterance (the daemon
    /// sets 12, 960 ms: stage 1 fires up to 590 ms after the end of speech,
    /// `models/reference/stream_check.md`, and the utterance ends 240–400 ms after it).
    pub late_trigger_frames: u32,
    /// The `none` label's index in the bundle's labels: the answer's `trigger_label`.
    pub none_label: u8,
}

/// Scheduler limits.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Frames queued (not yet started) over all streams; beyond it, `QueueFull`.
    pub queue_capacity: usize,
    /// Streams open over all clients.
    pub max_streams: usize,
    /// Time before the deadline by which every answer must be handed to the writer:
    /// the timer answers unfinished frames `DeadlineMissed` then, and a worker that
    /// finishes later answers `DeadlineMissed` too. Room to encode and write, in µs
    /// (default 2 000; measured hand-off + write p99 is well under 1 ms).
    pub guard_us: u32,
    /// Worst-case compute per frame assumed before any measurement, in µs.
    pub initial_wcet_us: u32,
    /// Typical (mean) compute per frame assumed before any measurement, in µs; at
    /// most `initial_wcet_us`.
    pub initial_typical_us: u32,
    /// Standard deviation of compute per frame assumed before any measurement, in µs.
    pub initial_spread_us: u32,
    /// Real-time scheduling of the timer and worker threads.
    pub rt: RtConfig,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 64,
            max_streams: 64,
            guard_us: 2_000,
            initial_wcet_us: 10_000,
            initial_typical_us: 10_000,
            initial_spread_us: 0,
            rt: RtConfig::off(),
        }
    }
}

/// One frame to process.
pub struct FrameJob {
    /// Stream.
    pub key: StreamKey,
    /// Request id to answer.
    pub request_id: u32,
    /// Frame sequence number.
    pub seq: u32,
    /// 1280 samples.
    pub pcm: Vec<i16>,
    /// When the transport read the frame's last byte (embassy-time, the scheduler's
    /// clock).
    pub arrived: Instant,
    /// Deadline relative to `arrived`, in µs.
    pub deadline_us: u32,
    /// Where the answer goes.
    pub sink: Arc<dyn ResponseSink>,
}

impl std::fmt::Debug for FrameJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameJob")
            .field("key", &self.key)
            .field("seq", &self.seq)
            .field("deadline_us", &self.deadline_us)
            .finish_non_exhaustive()
    }
}

fn to_std(d: Duration) -> std::time::Duration {
    std::time::Duration::from_micros(d.as_micros())
}

fn us(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u64) as u32
}

/// A job in flight (a frame, or a verification): shared by the queue, the worker and
/// the deadline timer.
struct Slot<J = FrameJob> {
    job: J,
    arrived: Instant,
    deadline: Instant,
    answered: AtomicBool,
    /// The running job's cancel token, published by the worker when it starts.
    cancel: Mutex<Option<Arc<CancelToken>>>,
}

/// One verification: the trigger and the audio window ending where its utterance ended.
struct VerifyJob {
    key: StreamKey,
    /// The trigger's id ([`PendingTrigger::id`]).
    trigger: u64,
    /// The trigger frame's request id, which the answer carries.
    request_id: u32,
    trigger_seq: u32,
    trigger_label: u8,
    /// The window's last frame: where the utterance was taken to end.
    end_seq: u32,
    deadline_us: u32,
    window: Vec<i16>,
    sink: Arc<dyn ResponseSink>,
    /// The early verification (window ending with the trigger frame) or the one at the
    /// end of the utterance.
    pass: Pass,
    /// Set by whichever of the trigger's verifications answers it first (exactly one
    /// `Verification` per trigger): when the early one answered a command, the one at
    /// the end of the utterance is dropped unrun; when the one at the end missed its
    /// deadline or was refused (a stream closed with both queued) while the early one
    /// still waited, the early one stays silent. Shared by both
    /// ([`VerifyJob::answers_trigger`]).
    settled: Arc<AtomicBool>,
    /// The command a silent early verdict heard above θ, for the early fallback; shared
    /// by the trigger's jobs, set by the early one.
    early_heard: Arc<OnceLock<EarlyHeard>>,
}

/// A command the early verification heard above the bundle's θ without answering it
/// ([`VerifyConfig::early_fallback_gap`]).
#[derive(Debug, Clone, Copy)]
struct EarlyHeard {
    label: usize,
    /// Over `none`, in nats.
    margin: f32,
    /// Over the next best command, in nats.
    command_gap: f32,
}

impl VerifyJob {
    /// Claims the trigger's one `Verification` for this job; `false` if another of the
    /// trigger's jobs has it.
    fn answers_trigger(&self) -> bool {
        !self.settled.swap(true, Ordering::SeqCst)
    }
}

/// Which of a trigger's verifications a job is ([`VerifyConfig::early_theta`]).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pass {
    /// On the window ending with the trigger frame, before the end of the utterance:
    /// answers only a command with a margin over `none` of at least `early_theta` (the
    /// first value) that beats every other command by `early_command_gap` (the second),
    /// else nothing.
    Early(f32, f32),
    /// On the window ending with the end of the utterance: always answers (unless the
    /// early one did); a command is detected only when it beats every other command by
    /// `command_gap` (the first value), else the early verdict's command when it beat
    /// every other command by `early_fallback_gap` (the second), else `NoCommand`.
    Final(f32, Option<f32>),
    /// On the window ending where an utterance stage 1 did not fire on ended
    /// ([`VerifyConfig::utterance`]): answers a command that beats every other command by
    /// `command_gap` (the value); `NoCommand` is silent.
    Utterance(f32),
}

/// Per stream, the utterance the VAD is in ([`VerifyConfig::utterance`]).
#[derive(Debug, Default)]
struct Utterance {
    /// Frames at or above the end-of-speech VAD probability since it began.
    speech_frames: u32,
    /// Its first such frame.
    start_seq: u32,
    /// Frames below it in a row.
    quiet_frames: u32,
    /// Stage 1 fired in it (or a trigger from before still waits).
    triggered: bool,
    /// Frames left in which a trigger belongs to the utterance verified at its end.
    late_frames: u32,
    /// That verification's answer flag ([`VerifyJob::settled`]), which such a trigger
    /// shares.
    settled: Option<Arc<AtomicBool>>,
}

/// A trigger waiting for the end of its utterance.
struct PendingTrigger {
    /// Unique in the scheduler's life (request ids are the client's, and need not be).
    id: u64,
    request_id: u32,
    trigger_seq: u32,
    trigger_label: u8,
    frames_waited: u32,
    /// Its early verification is queued or running.
    early: bool,
    /// Shared with the trigger's verification jobs ([`VerifyJob::settled`]).
    settled: Arc<AtomicBool>,
    /// Shared with the trigger's verification jobs ([`VerifyJob::early_heard`]).
    early_heard: Arc<OnceLock<EarlyHeard>>,
}

impl<J> Slot<J> {
    fn new(job: J, arrived: Instant, deadline: Instant) -> Self {
        Self {
            job,
            arrived,
            deadline,
            answered: AtomicBool::new(false),
            cancel: Mutex::new(None),
        }
    }

    /// Claims the right to answer; `true` for exactly one caller.
    fn claim(&self) -> bool {
        !self.answered.swap(true, Ordering::SeqCst)
    }

    /// Cancels the job's run, if one is in progress.
    fn cancel(&self) {
        if let Some(t) = self.cancel.lock().ok().and_then(|g| g.clone()) {
            t.cancel();
        }
    }

    /// Runs `f` with a cancel token published on the slot, so the deadline timer can
    /// terminate it.
    fn run<T>(&self, token: CancelToken, f: impl FnOnce(&CancelToken) -> T) -> T {
        let token = Arc::new(token);
        if let Ok(mut g) = self.cancel.lock() {
            *g = Some(Arc::clone(&token));
        }
        if self.answered.load(Ordering::SeqCst) {
            // The timer fired between the pick and the publication.
            token.cancel();
        }
        let r = f(&token);
        if let Ok(mut g) = self.cancel.lock() {
            *g = None;
        }
        r
    }
}

impl Slot<FrameJob> {
    /// When the answer is due, accounted in `sh`.
    fn due<S>(&self, sh: &Shared<S>) -> Due {
        Due::new(
            self.job.arrived,
            self.job.deadline_us,
            Arc::clone(&sh.counters),
            Arc::clone(&sh.stats),
        )
    }

    /// Answers `DeadlineMissed` (counted by the caller).
    fn miss<S>(&self, sh: &Shared<S>) {
        self.job.sink.send_frame_answer(
            self.job.request_id,
            FrameAnswer::Missed {
                stream_id: self.job.key.stream,
                seq: self.job.seq,
            },
            self.due(sh),
        );
    }
}

impl Slot<VerifyJob> {
    /// When the verification is due, accounted in `sh`.
    fn due<S>(&self, sh: &Shared<S>) -> Due {
        Due::new(
            self.arrived,
            self.job.deadline_us,
            Arc::clone(&sh.counters),
            Arc::clone(&sh.stats),
        )
    }

    /// Sends the verification's answer with `outcome` (checked at the write).
    fn answer<S>(&self, sh: &Shared<S>, outcome: VerifyOutcome, queue_us: u32, compute_us: u32) {
        let j = &self.job;
        j.sink.send_frame_answer(
            j.request_id,
            FrameAnswer::Verification(Verification {
                stream_id: j.key.stream,
                trigger_seq: j.trigger_seq,
                trigger_label: j.trigger_label,
                end_seq: j.end_seq,
                outcome,
                deadline_us: j.deadline_us,
                timing: Timing {
                    queue_us,
                    compute_us,
                    total_us: 0,
                },
            }),
            self.due(sh),
        );
    }
}

/// Stage 2's queue and the audio it verifies.
struct VerifyQueue {
    edf: Edf<Arc<Slot<VerifyJob>>>,
    /// Per stream, the last `window` samples of frames that ran to completion.
    rings: HashMap<StreamKey, VecDeque<i16>>,
    /// Per stream, a trigger waiting for the end of its utterance.
    pending: HashMap<StreamKey, PendingTrigger>,
    /// Per stream, the utterance under way ([`VerifyConfig::utterance`]).
    utterances: HashMap<StreamKey, Utterance>,
    /// By trigger ([`PendingTrigger::id`]), the verification at the end of an utterance
    /// whose early verification was still queued or running: admitted when that one
    /// ends, unless it answered ([`release_deferred`]).
    deferred: HashMap<u64, Arc<Slot<VerifyJob>>>,
    /// The next trigger's id.
    next_trigger: u64,
    window: usize,
    cfg: VerifyConfig,
    estimate: ComputeEstimator,
}

impl VerifyQueue {
    /// Appends a processed frame to its stream's window.
    fn record_audio(&mut self, key: StreamKey, pcm: &[i16]) {
        let ring = self
            .rings
            .entry(key)
            .or_insert_with(|| VecDeque::with_capacity(self.window));
        ring.extend(pcm);
        let excess = ring.len().saturating_sub(self.window);
        ring.drain(..excess);
    }
}

/// Everything behind the scheduler lock: the policy and the streams' states.
struct Queue<S> {
    edf: Edf<Arc<Slot>>,
    states: HashMap<StreamKey, Box<S>>,
    shutdown: bool,
    /// Stage 2, when the scheduler runs a verifier.
    verify: Option<VerifyQueue>,
}

struct Shared<S> {
    queue: Mutex<Queue<S>>,
    /// Workers wait here for frames.
    work: Condvar,
    /// Verifier workers wait here for verifications.
    verify_work: Condvar,
    /// The deadline timer waits here for an earlier expiry or shutdown.
    timer: Condvar,
    cfg: SchedulerConfig,
    stats: Arc<LatencyStats>,
    counters: Arc<Counters>,
    /// Admission control's compute estimates, fed by the workers.
    estimate: ComputeEstimator,
    /// When the deadline timer last went round its loop, in embassy-time ticks: its
    /// heartbeat, which the daemon turns into systemd watchdog pings.
    timer_tick: AtomicU64,
}

impl<S> Shared<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<S>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Handle to the running scheduler. Dropping it stops the threads.
pub struct Scheduler<S: Send + 'static> {
    shared: Arc<Shared<S>>,
    threads: Vec<JoinHandle<()>>,
}

impl<S: Send + 'static> std::fmt::Debug for Scheduler<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

impl<S: Send + 'static> Scheduler<S> {
    /// Starts one worker thread per processor, plus the deadline timer thread.
    pub fn start<P: FrameProcessor<State = S>>(
        processors: Vec<P>,
        cfg: SchedulerConfig,
        stats: Arc<LatencyStats>,
    ) -> Self {
        Self::start_with_counters(processors, cfg, stats, Arc::new(Counters::default()))
    }

    /// As [`Scheduler::start`], counting into `counters` (shared with a previous
    /// scheduler across a reload, so status stays cumulative).
    pub fn start_with_counters<P: FrameProcessor<State = S>>(
        processors: Vec<P>,
        cfg: SchedulerConfig,
        stats: Arc<LatencyStats>,
        counters: Arc<Counters>,
    ) -> Self {
        Self::start_with_verifier(processors, Vec::new(), None, cfg, stats, counters)
    }

    /// As [`Scheduler::start_with_counters`], plus stage 2: one verifier worker per
    /// element of `verifiers` (none, or `verify` `None`: no verification, detections
    /// go out in the frame answers).
    pub fn start_with_verifier<P: FrameProcessor<State = S>>(
        processors: Vec<P>,
        verifiers: Vec<Box<dyn WindowVerifier>>,
        verify: Option<VerifyConfig>,
        cfg: SchedulerConfig,
        stats: Arc<LatencyStats>,
        counters: Arc<Counters>,
    ) -> Self {
        let guard = Duration::from_micros(cfg.guard_us as u64);
        let edf = Edf::new(EdfConfig {
            queue_capacity: cfg.queue_capacity,
            max_streams: cfg.max_streams,
            workers: processors.len().max(1),
            guard,
        });
        let verify = verify
            .filter(|_| !verifiers.is_empty())
            .map(|vcfg| VerifyQueue {
                edf: Edf::new(EdfConfig {
                    queue_capacity: vcfg.queue_capacity,
                    // Closed streams linger until their verifications are answered.
                    max_streams: cfg.max_streams * 2,
                    workers: verifiers.len(),
                    guard,
                }),
                rings: HashMap::new(),
                pending: HashMap::new(),
                utterances: HashMap::new(),
                deferred: HashMap::new(),
                next_trigger: 0,
                window: verifiers[0].window_samples(),
                estimate: ComputeEstimator::new(
                    vcfg.initial_wcet_us,
                    vcfg.initial_typical_us,
                    vcfg.initial_spread_us,
                ),
                cfg: vcfg,
            });
        let has_verify = verify.is_some();
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                edf,
                states: HashMap::new(),
                shutdown: false,
                verify,
            }),
            work: Condvar::new(),
            verify_work: Condvar::new(),
            timer: Condvar::new(),
            timer_tick: AtomicU64::new(Instant::now().as_ticks()),
            estimate: ComputeEstimator::new(
                cfg.initial_wcet_us,
                cfg.initial_typical_us,
                cfg.initial_spread_us,
            ),
            cfg,
            stats,
            counters,
        });
        let mut threads = Vec::new();
        for (i, p) in processors.into_iter().enumerate() {
            let sh = Arc::clone(&shared);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("outpost-infer-{i}"))
                    .spawn(move || worker(sh, p))
                    .expect("spawn inference worker"),
            );
        }
        for (i, v) in verifiers.into_iter().enumerate().filter(|_| has_verify) {
            let sh = Arc::clone(&shared);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("outpost-verify-{i}"))
                    .spawn(move || verify_worker(sh, v))
                    .expect("spawn verifier worker"),
            );
        }
        let sh = Arc::clone(&shared);
        threads.push(
            std::thread::Builder::new()
                .name("outpost-deadline".into())
                .spawn(move || timer_loop(sh))
                .expect("spawn deadline timer"),
        );
        Self { shared, threads }
    }

    /// Counters for status.
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Current worst-case compute estimate per frame in µs (admission control input).
    pub fn wcet_us(&self) -> u64 {
        self.shared.estimate.wcet_us()
    }

    /// Current typical (mean) compute estimate per frame in µs (admission control input).
    pub fn typical_us(&self) -> u64 {
        self.shared.estimate.typical_us()
    }

    /// Current standard deviation of compute per frame in µs (admission control input:
    /// the margin for the queued frames' sum, [`crate::edf::QUEUE_SPREAD_Z`]).
    pub fn spread_us(&self) -> u64 {
        self.shared.estimate.spread_us()
    }

    /// Current worst-case compute estimate per verification in µs (0 without a
    /// verifier).
    pub fn verify_wcet_us(&self) -> u64 {
        self.shared
            .lock()
            .verify
            .as_ref()
            .map_or(0, |v| v.estimate.wcet_us())
    }

    /// The verification deadline after a trigger in µs (0 without a verifier).
    pub fn verify_deadline_us(&self) -> u32 {
        self.shared
            .lock()
            .verify
            .as_ref()
            .map_or(0, |v| v.cfg.deadline_us)
    }

    /// Open streams over all connections.
    pub fn open_streams(&self) -> usize {
        self.shared.lock().edf.open_streams()
    }

    /// How long ago the deadline timer last went round its loop. It wakes at least
    /// every [`TIMER_HEARTBEAT`], so an age well above that means the timer, and with
    /// it the deadline promise, is stuck (the daemon then stops petting the systemd
    /// watchdog).
    pub fn deadline_timer_age(&self) -> Duration {
        Instant::now()
            .checked_duration_since(Instant::from_ticks(
                self.shared.timer_tick.load(Ordering::Relaxed),
            ))
            .unwrap_or_default()
    }

    /// Waits until no frame is queued or running, at most `timeout` (used before a
    /// replaced scheduler is dropped, so its frames are answered, not refused).
    pub fn drain(&self, timeout: Duration) {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            let q = self.shared.lock();
            let verify_idle = q
                .verify
                .as_ref()
                .is_none_or(|v| v.edf.queued() == 0 && v.edf.running() == 0);
            if q.edf.queued() == 0 && q.edf.running() == 0 && verify_idle {
                return;
            }
            drop(q);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Opens a stream.
    ///
    /// # Errors
    /// [`OpenError`] when the id is in use or the stream bound is reached.
    pub fn open_stream(&self, key: StreamKey) -> Result<(), OpenError> {
        let mut q = self.shared.lock();
        q.edf.open(key)?;
        if let Some(v) = &mut q.verify {
            if let Err(e) = v.edf.open(key) {
                q.edf.close(key);
                return Err(e);
            }
            v.rings.remove(&key);
            v.pending.remove(&key);
            v.utterances.remove(&key);
        }
        q.states.remove(&key);
        Ok(())
    }

    /// Closes a stream; returns `(frames, detections)`, or `None` if it was not open
    /// (with a verifier, the detections are the verified commands answered so far).
    /// Frames and verifications already queued are still processed and answered; a
    /// trigger on a frame processed after the close is not verified.
    pub fn close_stream(&self, key: StreamKey) -> Option<(u32, u32)> {
        let mut q = self.shared.lock();
        if !q.edf.is_open(key) {
            return None;
        }
        // A verification deferred behind its early one is admitted now (a closed
        // stream takes no job later), charged the early one still queued or running:
        // a client that closes within a verification of an utterance's end may get a
        // refusal where the early verdict would have been a command.
        let mut refused = Vec::new();
        if let Some(v) = &mut q.verify {
            let mut ids: Vec<u64> = v
                .deferred
                .iter()
                .filter(|(_, s)| s.job.key == key)
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            for id in ids {
                refused.extend(release_deferred(v, key, id).err());
            }
        }
        let mut counts = q.edf.close(key)?;
        if let Some(v) = &mut q.verify {
            counts.1 = v.edf.close(key).map_or(0, |(_, detections)| detections);
            v.rings.remove(&key);
            v.pending.remove(&key);
            v.utterances.remove(&key);
        }
        q.states.remove(&key);
        drop(q);
        for r in refused {
            r.answer(&self.shared);
        }
        self.shared.verify_work.notify_one();
        self.shared.timer.notify_one();
        Some(counts)
    }

    /// Drops every stream of a connection that went away; queued frames are discarded
    /// unanswered (there is no one to answer).
    pub fn drop_connection(&self, conn: u64) {
        let mut q = self.shared.lock();
        for s in q.edf.drop_connection(conn) {
            s.answered.store(true, Ordering::SeqCst);
        }
        if let Some(v) = &mut q.verify {
            for s in v.edf.drop_connection(conn) {
                s.answered.store(true, Ordering::SeqCst);
            }
            v.deferred.retain(|_, s| s.job.key.conn != conn);
            v.rings.retain(|k, _| k.conn != conn);
            v.pending.retain(|k, _| k.conn != conn);
            v.utterances.retain(|k, _| k.conn != conn);
        }
        q.states.retain(|k, _| k.conn != conn);
    }

    /// Submits a frame. Exactly one answer goes to `job.sink`: a result, or
    /// `Rejected` (now), or `DeadlineMissed` (by the deadline), or an error.
    pub fn submit(&self, job: FrameJob) {
        let sh = &self.shared;
        let arrived = job.arrived;
        let deadline = arrived + Duration::from_micros(job.deadline_us as u64);
        let reject = |job: &FrameJob, reason, retry_after_us| {
            sh.counters.rejections.fetch_add(1, Ordering::Relaxed);
            job.sink.send(
                job.request_id,
                &Response::Rejected {
                    stream_id: job.key.stream,
                    seq: job.seq,
                    reason,
                    retry_after_us,
                },
            );
        };
        let mut q = sh.lock();
        if q.shutdown {
            drop(q);
            return reject(&job, RejectReason::ShuttingDown, 0);
        }
        if !q.edf.is_open(job.key) {
            drop(q);
            return job.sink.send(
                job.request_id,
                &Response::Error(WireError::UnknownStream {
                    stream_id: job.key.stream,
                }),
            );
        }
        let cost = sh.estimate.cost();
        if let Admission::Reject {
            reason,
            retry_after,
        } = q.edf.admit(job.key, deadline, cost)
        {
            drop(q);
            return reject(&job, reason, us(retry_after));
        }
        let key = job.key;
        let slot = Arc::new(Slot::new(job, arrived, deadline));
        let pushed = q.edf.push(key, deadline, slot).is_ok();
        drop(q);
        debug_assert!(pushed, "stream checked open under the same lock");
        sh.work.notify_one();
        sh.timer.notify_one();
    }

    /// Stops the threads (queued frames, and triggers whose verifications are queued or
    /// deferred, are answered `Rejected { ShuttingDown }`).
    pub fn shutdown(&mut self) {
        let (queued, verify_queued) = {
            let mut q = self.shared.lock();
            q.shutdown = true;
            let v = q.verify.as_mut().map_or_else(Vec::new, |v| {
                let mut jobs: Vec<_> = v.edf.drain_queued().into_iter().map(|(_, s)| s).collect();
                jobs.extend(v.deferred.drain().map(|(_, s)| s));
                jobs
            });
            (q.edf.drain_queued(), v)
        };
        for s in verify_queued {
            // One answer per trigger: its early and final jobs may both be here.
            if s.claim() && s.job.answers_trigger() {
                s.answer(
                    &self.shared,
                    VerifyOutcome::Rejected(RejectReason::ShuttingDown),
                    0,
                    0,
                );
            }
        }
        for (_, s) in queued {
            if s.claim() {
                s.job.sink.send(
                    s.job.request_id,
                    &Response::Rejected {
                        stream_id: s.job.key.stream,
                        seq: s.job.seq,
                        reason: RejectReason::ShuttingDown,
                        retry_after_us: 0,
                    },
                );
            }
        }
        self.shared.work.notify_all();
        self.shared.verify_work.notify_all();
        self.shared.timer.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl<S: Send + 'static> Drop for Scheduler<S> {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shutdown();
        }
    }
}

/// The longest the deadline timer sleeps with nothing due: its heartbeat period
/// ([`Scheduler::deadline_timer_age`]).
pub const TIMER_HEARTBEAT: Duration = Duration::from_millis(250);

/// The deadline timer: at each frame's deadline minus the guard, answers frames still
/// queued or running `DeadlineMissed` and cancels the running ones. It wakes at least
/// every [`TIMER_HEARTBEAT`] and stamps its heartbeat.
fn timer_loop<S>(sh: Arc<Shared<S>>) {
    apply_to_current_thread(&sh.cfg.rt, Role::DeadlineTimer);
    let mut q = sh.lock();
    loop {
        if q.shutdown {
            return;
        }
        let now = Instant::now();
        sh.timer_tick.store(now.as_ticks(), Ordering::Relaxed);
        let expired = q.edf.take_expired();
        let overrun = q.edf.take_overrunning();
        let (v_expired, v_overrun) = q.verify.as_mut().map_or((vec![], vec![]), |v| {
            (v.edf.take_expired(), v.edf.take_overrunning())
        });
        if expired.is_empty() && overrun.is_empty() && v_expired.is_empty() && v_overrun.is_empty()
        {
            let next = q
                .edf
                .next_expiry()
                .into_iter()
                .chain(q.verify.as_ref().and_then(|v| v.edf.next_expiry()))
                .min();
            let wait = next.map_or(TIMER_HEARTBEAT, |at| {
                at.checked_duration_since(now)
                    .unwrap_or_default()
                    .min(TIMER_HEARTBEAT)
            });
            q = sh
                .timer
                .wait_timeout(q, to_std(wait))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            continue;
        }
        // An early verification expired unrun, or is cancelled at its deadline: the one
        // deferred behind it goes on now, so it is answered by its own deadline whenever
        // the cancelled run stops.
        let mut refused = Vec::new();
        if let Some(v) = q.verify.as_mut() {
            for (key, slot) in v_expired.iter().chain(&v_overrun) {
                if let Pass::Early(..) = slot.job.pass {
                    refused.extend(release_deferred(v, *key, slot.job.trigger).err());
                }
            }
        }
        drop(q);
        for r in refused {
            r.answer(&sh);
        }
        for (_, slot) in expired.iter().chain(&overrun) {
            if slot.claim() {
                slot.cancel();
                sh.counters.deadline_misses.fetch_add(1, Ordering::Relaxed);
                sh.counters.cancellations.fetch_add(1, Ordering::Relaxed);
                slot.miss(&sh);
                log::debug!(
                    "deadline miss: stream {:?} seq {}",
                    slot.job.key,
                    slot.job.seq
                );
            }
        }
        for (_, slot) in v_expired.iter().chain(&v_overrun) {
            if let Pass::Early(..) = slot.job.pass {
                // Silent: the verification at the end of the utterance answers.
                if slot.claim() {
                    slot.cancel();
                    sh.counters.cancellations.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            if slot.claim() {
                slot.cancel();
                if !slot.job.answers_trigger() {
                    continue;
                }
                sh.counters.verify_misses.fetch_add(1, Ordering::Relaxed);
                sh.counters.cancellations.fetch_add(1, Ordering::Relaxed);
                slot.answer(&sh, VerifyOutcome::DeadlineMissed, 0, 0);
                log::debug!(
                    "verification deadline miss: stream {:?} trigger seq {}",
                    slot.job.key,
                    slot.job.trigger_seq
                );
            }
        }
        // Expired frames never reached a worker: wake workers in case a stream is now
        // idle with nothing queued, and let the next queued frames run.
        sh.work.notify_all();
        sh.verify_work.notify_all();
        q = sh.lock();
    }
}

/// What a worker answers once the stream is released.
enum Answer {
    /// Nothing: the deadline timer (or a dropped connection) answered already.
    None,
    /// The result, on time.
    Frame(FrameOutput),
    /// Finished after the deadline: `DeadlineMissed`, never the late result.
    Late,
    /// A model stage failed.
    Failed(Stage),
}

fn failed_stage(e: &RuntimeError) -> Stage {
    match e {
        RuntimeError::Inference { stage, .. } => *stage,
        _ => Stage::Total,
    }
}

fn worker<P: FrameProcessor>(sh: Arc<Shared<P::State>>, mut proc_: P) {
    apply_to_current_thread(&sh.cfg.rt, Role::Worker);
    loop {
        let (picked, state) = {
            let mut q = sh.lock();
            loop {
                if q.shutdown {
                    return;
                }
                if let Some(p) = q.edf.pick() {
                    let state = if p.reset_state {
                        q.states.remove(&p.key);
                        None
                    } else {
                        q.states.remove(&p.key)
                    };
                    break (p, state);
                }
                q = sh.work.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let started = Instant::now();
        let slot = &picked.job;
        let mut state = state.unwrap_or_else(|| Box::new(proc_.new_stream()));
        let queue_us = us(started
            .checked_duration_since(slot.arrived)
            .unwrap_or_default());

        // Compute, then claim the right to answer. State stays consistent when the
        // frame ran to completion (late or not); it restarts when the run was
        // cancelled, failed, or never ran (answered by the timer while queued).
        let (mut answer, consistent) = if slot.answered.load(Ordering::SeqCst) {
            (Answer::None, false)
        } else {
            let run_started = Instant::now();
            match run_frame(&mut proc_, &mut state, slot) {
                Ok(out) => {
                    let compute_us: u64 = out.stage_us.iter().map(|&v| v as u64).sum();
                    sh.estimate.record(compute_us);
                    if slot.claim() {
                        (Answer::Frame(out), true)
                    } else {
                        (Answer::None, false)
                    }
                }
                Err(e) => {
                    // A run cut at its deadline cost at least what it ran: leaving it out
                    // would drop exactly the slowest frames from the estimates, so an
                    // overloaded daemon would admit more just as it misses more.
                    sh.estimate.record(u64::from(us(run_started.elapsed())));
                    if slot.claim() {
                        log::error!("stream {:?} seq {}: {e}", slot.job.key, slot.job.seq);
                        (Answer::Failed(failed_stage(&e)), false)
                    } else {
                        (Answer::None, false)
                    }
                }
            }
        };

        // Release the stream before answering, so the stream's next frame (which the
        // client may send the moment it reads this answer) finds it idle. With a
        // verifier, a frame that ran to completion joins its stream's audio window,
        // and a trigger becomes a verification job instead of a detection.
        let mut trigger = None;
        {
            let mut q = sh.lock();
            if let (Some(v), Answer::Frame(out)) = (&mut q.verify, &mut answer) {
                v.record_audio(picked.key, &slot.job.pcm);
                trigger = on_processed_frame(v, slot, out);
            }
            // With a verifier the detection was taken out above: it is counted with its
            // verification.
            let detected = matches!(&answer, Answer::Frame(o) if o.detection.is_some());
            q.edf.finish(picked.key, consistent, detected);
            if consistent && q.edf.is_open(picked.key) {
                q.states.insert(picked.key, state);
            }
        }
        sh.work.notify_one();

        // The last check before the answer leaves: a result that could no longer be
        // written by the deadline (guard included) goes out as `DeadlineMissed`.
        let guard = Duration::from_micros(sh.cfg.guard_us as u64);
        let answer = match answer {
            Answer::Frame(_) if Instant::now() + guard > slot.deadline => Answer::Late,
            a => a,
        };
        let job = &slot.job;
        match answer {
            Answer::None => {}
            Answer::Frame(out) => {
                let compute_us = out.stage_us.iter().sum();
                job.sink.send_frame_answer(
                    job.request_id,
                    FrameAnswer::Result(FrameResult {
                        stream_id: job.key.stream,
                        seq: job.seq,
                        vad_prob: out.vad_prob,
                        detection: out.detection.map(|d| Detection {
                            label: d.label as u8,
                            score: d.score,
                            audio_ms: stream_time_ms(job.seq),
                        }),
                        timing: Timing {
                            queue_us,
                            compute_us,
                            // Set when the answer is written.
                            total_us: 0,
                        },
                    }),
                    slot.due(&sh),
                );
                sh.stats.record(Stage::Queue, queue_us as u64);
                for (st, v) in MODEL_STAGES.iter().zip(out.stage_us) {
                    sh.stats.record(*st, v as u64);
                }
            }
            Answer::Late => {
                sh.counters.deadline_misses.fetch_add(1, Ordering::Relaxed);
                slot.miss(&sh);
            }
            Answer::Failed(stage) => {
                sh.counters.failures.fetch_add(1, Ordering::Relaxed);
                job.sink.send(
                    job.request_id,
                    &Response::Error(WireError::InferenceFailed { stage }),
                );
            }
        }

        // Stage 2 after the frame's own answer, so a verdict (a refusal now, or a
        // verification a waiting verifier would start at once) follows it on the wire.
        // A verifier already busy may still pick the job before this; clients match a
        // verdict to its trigger frame by request id either way.
        match trigger {
            Some(Ok(())) => {
                sh.verify_work.notify_one();
                sh.timer.notify_one();
            }
            Some(Err(refused)) => refused.answer(&sh),
            None => {}
        }
    }
}

/// Runs one frame with a cancel token published on the slot, so the deadline timer
/// can terminate it.
fn run_frame<P: FrameProcessor>(
    proc_: &mut P,
    state: &mut P::State,
    slot: &Slot,
) -> Result<FrameOutput, RuntimeError> {
    slot.run(proc_.cancel_token(), |token| {
        proc_.process(state, &slot.job.pcm, token)
    })
}

/// A verification admission control refused, to be answered once the lock is released.
struct Refused {
    slot: Arc<Slot<VerifyJob>>,
    reason: RejectReason,
}

impl Refused {
    /// Answers the trigger `Rejected`, unless another of its verifications has.
    fn answer<S>(self, sh: &Shared<S>) {
        if self.slot.job.answers_trigger() {
            sh.counters
                .verify_rejections
                .fetch_add(1, Ordering::Relaxed);
            self.slot
                .answer(sh, VerifyOutcome::Rejected(self.reason), 0, 0);
        }
    }
}

/// Stage 2's part of a processed frame, under the scheduler lock: a trigger (taken out
/// of the frame's answer) waits for the end of its utterance, the first frame from the
/// trigger on whose VAD probability is below [`VerifyConfig::end_of_speech_vad`], or
/// [`VerifyConfig::max_wait_frames`] frames; on that frame the verification is made and
/// admitted ([`admit_verification`]), unless an early verification answered already,
/// or deferred while the trigger's early verification is queued or running
/// ([`release_deferred`] admits it when that one ends).
/// With [`VerifyConfig::early_theta`], a trigger frame that does not end its utterance
/// is verified early as well, whatever the load, so the same audio gets the same
/// verdict (a refusal of that one is silent). With [`VerifyConfig::utterance`], an
/// utterance with no trigger is verified on the frame that ends it
/// ([`on_utterance_frame`]).
fn on_processed_frame(
    v: &mut VerifyQueue,
    frame: &Slot,
    out: &mut FrameOutput,
) -> Option<Result<(), Refused>> {
    let f = &frame.job;
    let settled = match on_utterance_frame(v, frame, out.vad_prob, out.detection.is_some()) {
        UtteranceStep::Verify(job) => {
            let slot = make_verification(v, frame, job)?;
            return Some(admit_verification(v, slot));
        }
        UtteranceStep::LateTrigger(settled) => Some(settled),
        UtteranceStep::None => None,
    };
    let mut new_trigger = false;
    if let Some(d) = out.detection.take() {
        // A second trigger while one waits (stage 1's refractory period makes it rare)
        // belongs to the same utterance: the first one stands.
        let id = v.next_trigger;
        v.pending.entry(f.key).or_insert_with(|| {
            new_trigger = true;
            PendingTrigger {
                id,
                request_id: f.request_id,
                trigger_seq: f.seq,
                trigger_label: d.label as u8,
                frames_waited: 0,
                early: false,
                settled: settled.unwrap_or_else(|| Arc::new(AtomicBool::new(false))),
                early_heard: Arc::new(OnceLock::new()),
            }
        });
    } else if let Some(p) = v.pending.get_mut(&f.key) {
        p.frames_waited += 1;
    }
    if new_trigger {
        v.next_trigger += 1;
    }
    let p = v.pending.get(&f.key)?;
    if !v.cfg.utterance_ended(out.vad_prob, p.frames_waited) {
        let early = v.cfg.early_theta.filter(|_| new_trigger)?;
        let job = p.job(Pass::Early(early, v.cfg.early_command_gap));
        let slot = make_verification(v, frame, job)?;
        return match admit_verification(v, slot) {
            Err(refused) => {
                // Silent: the verification at the end of the utterance answers.
                refused.slot.answered.store(true, Ordering::SeqCst);
                None
            }
            Ok(()) => {
                if let Some(p) = v.pending.get_mut(&f.key) {
                    p.early = true;
                }
                Some(Ok(()))
            }
        };
    }
    let p = v.pending.remove(&f.key)?;
    if p.settled.load(Ordering::SeqCst) {
        return None;
    }
    let slot = make_verification(
        v,
        frame,
        p.job(Pass::Final(v.cfg.command_gap, v.cfg.early_fallback_gap)),
    )?;
    if p.early {
        // Admitted now, the early verification ahead of it would be charged to it, and
        // its refusal would answer the trigger before the early verdict could.
        v.deferred.insert(p.id, slot);
        return None;
    }
    Some(admit_verification(v, slot))
}

/// What a processed frame means for utterance-end verification.
enum UtteranceStep {
    /// Nothing (or the feature is off).
    None,
    /// The frame ends an utterance stage 1 did not fire on: its verification.
    Verify(TriggerJob),
    /// The frame's trigger follows an utterance verified at its end: its verification
    /// shares that one's answer flag ([`VerifyJob::settled`]).
    LateTrigger(Arc<AtomicBool>),
}

/// Follows the stream's utterance through one processed frame, whose VAD probability
/// is `vad_prob` and on which stage 1 fired or not (`trigger`;
/// [`VerifyConfig::utterance`]): gives the verification of an utterance stage 1 did not
/// fire on when this frame ends it, or the answer flag a trigger in the quiet frames
/// after such an utterance shares with it. Called under the scheduler lock.
fn on_utterance_frame(
    v: &mut VerifyQueue,
    frame: &Slot,
    vad_prob: f32,
    trigger: bool,
) -> UtteranceStep {
    let Some(cfg) = v.cfg.utterance else {
        return UtteranceStep::None;
    };
    let f = &frame.job;
    let waiting = v.pending.contains_key(&f.key);
    let u = v.utterances.entry(f.key).or_default();
    if vad_prob >= v.cfg.end_of_speech_vad {
        if u.speech_frames == 0 {
            u.start_seq = f.seq;
        }
        u.speech_frames += 1;
        u.quiet_frames = 0;
        u.late_frames = 0;
        u.settled = None;
    } else {
        u.quiet_frames += 1;
    }
    if u.late_frames > 0 {
        u.late_frames -= 1;
        if let Some(settled) = u.settled.take_if(|_| trigger) {
            u.late_frames = 0;
            return UtteranceStep::LateTrigger(settled);
        }
        if u.late_frames == 0 {
            u.settled = None;
        }
    }
    u.triggered |= waiting || trigger;
    if u.quiet_frames < cfg.quiet_frames {
        return UtteranceStep::None;
    }
    let verify = u.speech_frames >= cfg.min_speech_frames && !u.triggered;
    u.speech_frames = 0;
    u.triggered = false;
    if !verify {
        return UtteranceStep::None;
    }
    let settled = Arc::new(AtomicBool::new(false));
    u.late_frames = cfg.late_trigger_frames;
    u.settled = Some(Arc::clone(&settled));
    let id = v.next_trigger;
    v.next_trigger += 1;
    UtteranceStep::Verify(TriggerJob {
        trigger: id,
        request_id: f.request_id,
        trigger_seq: f.seq,
        trigger_label: cfg.none_label,
        pass: Pass::Utterance(v.cfg.command_gap),
        settled,
        early_heard: Arc::new(OnceLock::new()),
        audio_from_seq: Some(u.start_seq.saturating_sub(cfg.lead_frames)),
    })
}

/// The early verification of `trigger` on stream `key` ended (answered, silent,
/// failed, expired unrun, or cancelled past its deadline): the verification at the end
/// of its utterance, if deferred behind it, is dropped when the early one answered the
/// trigger, else admitted now (`Err` to be answered once the lock is released). Called
/// under the scheduler lock.
fn release_deferred(v: &mut VerifyQueue, key: StreamKey, trigger: u64) -> Result<(), Refused> {
    if let Some(p) = v.pending.get_mut(&key).filter(|p| p.id == trigger) {
        p.early = false;
    }
    let Some(slot) = v.deferred.remove(&trigger) else {
        return Ok(());
    };
    if slot.job.settled.load(Ordering::SeqCst) {
        slot.claim();
        return Ok(());
    }
    admit_verification(v, slot)
}

impl PendingTrigger {
    /// The parts of a verification job that come from the trigger.
    fn job(&self, pass: Pass) -> TriggerJob {
        TriggerJob {
            trigger: self.id,
            request_id: self.request_id,
            trigger_seq: self.trigger_seq,
            trigger_label: self.trigger_label,
            pass,
            settled: Arc::clone(&self.settled),
            early_heard: Arc::clone(&self.early_heard),
            audio_from_seq: None,
        }
    }
}

/// A trigger's part of a [`VerifyJob`].
struct TriggerJob {
    trigger: u64,
    request_id: u32,
    trigger_seq: u32,
    trigger_label: u8,
    pass: Pass,
    settled: Arc<AtomicBool>,
    early_heard: Arc<OnceLock<EarlyHeard>>,
    /// The window's audio before this frame is zeroed (an utterance-end verification:
    /// [`UtteranceVerify::lead_frames`]); `None`: the whole window.
    audio_from_seq: Option<u32>,
}

/// The verification of trigger `p` on the window that ends with `frame`, due the
/// verification deadline after the frame's arrival. `None` when the stream was closed
/// while the frame ran: nobody waits for its commands any more. Called under the
/// scheduler lock.
fn make_verification(
    v: &mut VerifyQueue,
    frame: &Slot,
    p: TriggerJob,
) -> Option<Arc<Slot<VerifyJob>>> {
    let f = &frame.job;
    if !v.edf.is_open(f.key) {
        log::debug!(
            "trigger on stream {:?} after its close: not verified",
            f.key
        );
        return None;
    }
    let mut window: Vec<i16> = v
        .rings
        .get(&f.key)
        .map(|r| r.iter().copied().collect())
        .unwrap_or_default();
    if let Some(from) = p.audio_from_seq {
        let keep = (f.seq.saturating_sub(from) as usize + 1) * FRAME_SAMPLES;
        let cut = window.len().saturating_sub(keep);
        window[..cut].fill(0);
    }
    let deadline_us = v.cfg.deadline_us;
    let deadline = f.arrived + Duration::from_micros(u64::from(deadline_us));
    let slot = Arc::new(Slot::new(
        VerifyJob {
            key: f.key,
            trigger: p.trigger,
            request_id: p.request_id,
            trigger_seq: p.trigger_seq,
            trigger_label: p.trigger_label,
            end_seq: f.seq,
            deadline_us,
            window,
            sink: Arc::clone(&f.sink),
            pass: p.pass,
            settled: p.settled,
            early_heard: p.early_heard,
        },
        f.arrived,
        deadline,
    ));
    Some(slot)
}

/// Admits a verification into stage 2's queue, or gives it back refused (a closed
/// stream's as `QueueFull`). Called under the scheduler lock.
fn admit_verification(v: &mut VerifyQueue, slot: Arc<Slot<VerifyJob>>) -> Result<(), Refused> {
    let (key, deadline) = (slot.job.key, slot.deadline);
    if let Admission::Reject { reason, .. } = v.edf.admit(key, deadline, v.estimate.cost()) {
        return Err(Refused { slot, reason });
    }
    // Open and admitted (its stream queue has room): the push succeeds.
    v.edf.push(key, deadline, slot).map_err(|slot| Refused {
        slot,
        reason: RejectReason::QueueFull,
    })
}

/// A verifier worker: picks stage 2's earliest-deadline verification, runs it, and
/// answers its verdict, or `DeadlineMissed` when it finished too late.
fn verify_worker<S>(sh: Arc<Shared<S>>, mut verifier: Box<dyn WindowVerifier>) {
    apply_to_current_thread(&sh.cfg.rt, Role::Verifier);
    let guard = Duration::from_micros(sh.cfg.guard_us as u64);
    loop {
        let picked = {
            let mut q = sh.lock();
            loop {
                if q.shutdown {
                    return;
                }
                if let Some(p) = q.verify.as_mut().and_then(|v| v.edf.pick()) {
                    break p;
                }
                q = sh.verify_work.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let slot = &picked.job;
        let job = &slot.job;
        let started = Instant::now();
        let queue_us = us(started
            .checked_duration_since(slot.arrived)
            .unwrap_or_default());
        // The early verification answered this trigger: the one at the end of its
        // utterance is dropped unrun.
        let settled = matches!(job.pass, Pass::Final(..)) && job.settled.load(Ordering::SeqCst);
        let outcome = if settled {
            slot.claim();
            None
        } else if slot.answered.load(Ordering::SeqCst) {
            None
        } else {
            let r = slot.run(verifier.cancel_token(), |token| {
                verifier.verify(&job.window, token)
            });
            let compute_us = match &r {
                Ok(out) => out.compute_us,
                Err(_) => us(started.elapsed()),
            };
            if let Some(v) = &sh.lock().verify {
                v.estimate.record(u64::from(compute_us));
            }
            let detected = |label: usize, margin: f32| {
                VerifyOutcome::Detected(Detection {
                    label: label as u8,
                    score: margin,
                    audio_ms: stream_time_ms(job.end_seq),
                })
            };
            match (job.pass, r) {
                (Pass::Early(theta, gap), Ok(out)) => {
                    sh.stats.record(Stage::Verifier, u64::from(out.compute_us));
                    let on_time = Instant::now() + guard <= slot.deadline;
                    match out.label {
                        Some(label)
                            if out.margin >= theta
                                && out.command_gap >= gap
                                && on_time
                                && slot.claim()
                                && job.answers_trigger() =>
                        {
                            Some((detected(label, out.margin), compute_us))
                        }
                        _ => {
                            // Silent: the verification at the end of the utterance
                            // answers; a command it heard above θ is kept for the
                            // early fallback.
                            if let Some(label) = out.label {
                                let _ = job.early_heard.set(EarlyHeard {
                                    label,
                                    margin: out.margin,
                                    command_gap: out.command_gap,
                                });
                            }
                            slot.claim();
                            None
                        }
                    }
                }
                (Pass::Early(..), Err(e)) => {
                    slot.claim();
                    log::debug!(
                        "early verification of stream {:?} trigger seq {}: {e}",
                        job.key,
                        job.trigger_seq
                    );
                    None
                }
                (Pass::Final(gap, fallback_gap), Ok(out))
                    if slot.claim() && job.answers_trigger() =>
                {
                    sh.stats.record(Stage::Verifier, u64::from(out.compute_us));
                    let early = job
                        .early_heard
                        .get()
                        .filter(|e| fallback_gap.is_some_and(|g| e.command_gap >= g));
                    let outcome = match (out.label, early) {
                        (Some(label), _) if out.command_gap >= gap => detected(label, out.margin),
                        (_, Some(e)) => detected(e.label, e.margin),
                        _ => VerifyOutcome::NoCommand {
                            best_label: out.best as u8,
                            margin: out.margin,
                        },
                    };
                    Some((outcome, compute_us))
                }
                (Pass::Utterance(gap), Ok(out)) if slot.claim() => {
                    sh.stats.record(Stage::Verifier, u64::from(out.compute_us));
                    // Silent unless a command (most utterances are not commands), and
                    // then a trigger just after it is verified and answered.
                    out.label
                        .filter(|_| out.command_gap >= gap && job.answers_trigger())
                        .map(|label| (detected(label, out.margin), compute_us))
                }
                (Pass::Final(..) | Pass::Utterance(..), Err(e))
                    if slot.claim() && job.answers_trigger() =>
                {
                    log::error!(
                        "verification of stream {:?} trigger seq {}: {e}",
                        job.key,
                        job.trigger_seq
                    );
                    Some((VerifyOutcome::Failed, compute_us))
                }
                _ => None,
            }
        };
        let detected = matches!(outcome, Some((VerifyOutcome::Detected(_), _)));
        let mut released = Ok(());
        if let Some(v) = &mut sh.lock().verify {
            v.edf.finish(picked.key, true, detected);
            if let Pass::Early(..) = job.pass {
                released = release_deferred(v, picked.key, job.trigger);
            }
        }
        sh.verify_work.notify_one();
        sh.timer.notify_one();
        if let Err(refused) = released {
            refused.answer(&sh);
        }
        if let Some((outcome, compute_us)) = outcome {
            let late = Instant::now() + guard > slot.deadline;
            let outcome = match outcome {
                VerifyOutcome::Detected(_) | VerifyOutcome::NoCommand { .. } if late => {
                    sh.counters.verify_misses.fetch_add(1, Ordering::Relaxed);
                    VerifyOutcome::DeadlineMissed
                }
                o => o,
            };
            slot.answer(&sh, outcome, queue_us, compute_us);
        }
    }
}
