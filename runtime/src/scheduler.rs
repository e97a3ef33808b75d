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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use embassy_time::{Duration, Instant};

use outpost_protocol::{Detection, FrameResult, RejectReason, Response, Stage, Timing, WireError};

pub use crate::answer::{Counters, Due, FrameAnswer, ResponseSink};
use crate::edf::{Admission, Edf, EdfConfig};
pub use crate::edf::{OpenError, StreamKey};
use crate::estimator::ComputeEstimator;
use crate::pipeline::{stream_time_ms, CancelToken, FrameOutput, MODEL_STAGES};
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

/// A frame in flight: shared by the queue, the worker and the deadline timer.
struct Slot {
    job: FrameJob,
    arrived: Instant,
    deadline: Instant,
    answered: AtomicBool,
    /// The running frame's cancel token, published by the worker when it starts.
    cancel: Mutex<Option<Arc<CancelToken>>>,
}

impl Slot {
    /// Claims the right to answer; `true` for exactly one caller.
    fn claim(&self) -> bool {
        !self.answered.swap(true, Ordering::SeqCst)
    }

    /// Cancels the frame's run, if one is in progress.
    fn cancel(&self) {
        if let Some(t) = self.cancel.lock().ok().and_then(|g| g.clone()) {
            t.cancel();
        }
    }

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

/// Everything behind the scheduler lock: the policy and the streams' states.
struct Queue<S> {
    edf: Edf<Arc<Slot>>,
    states: HashMap<StreamKey, Box<S>>,
    shutdown: bool,
}

struct Shared<S> {
    queue: Mutex<Queue<S>>,
    /// Workers wait here for frames.
    work: Condvar,
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
        let edf = Edf::new(EdfConfig {
            queue_capacity: cfg.queue_capacity,
            max_streams: cfg.max_streams,
            workers: processors.len().max(1),
            guard: Duration::from_micros(cfg.guard_us as u64),
        });
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                edf,
                states: HashMap::new(),
                shutdown: false,
            }),
            work: Condvar::new(),
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
            if q.edf.queued() == 0 && q.edf.running() == 0 {
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
        q.states.remove(&key);
        Ok(())
    }

    /// Closes a stream; returns `(frames, detections)`, or `None` if it was not open.
    /// Frames already queued are still processed and answered.
    pub fn close_stream(&self, key: StreamKey) -> Option<(u32, u32)> {
        let mut q = self.shared.lock();
        let counts = q.edf.close(key)?;
        if !q.edf.is_open(key) {
            q.states.remove(&key);
        }
        Some(counts)
    }

    /// Drops every stream of a connection that went away; queued frames are discarded
    /// unanswered (there is no one to answer).
    pub fn drop_connection(&self, conn: u64) {
        let mut q = self.shared.lock();
        for s in q.edf.drop_connection(conn) {
            s.answered.store(true, Ordering::SeqCst);
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
        let slot = Arc::new(Slot {
            job,
            arrived,
            deadline,
            answered: AtomicBool::new(false),
            cancel: Mutex::new(None),
        });
        let pushed = q.edf.push(key, deadline, slot).is_ok();
        drop(q);
        debug_assert!(pushed, "stream checked open under the same lock");
        sh.work.notify_one();
        sh.timer.notify_one();
    }

    /// Stops the threads (queued frames are answered `Rejected { ShuttingDown }`).
    pub fn shutdown(&mut self) {
        let queued = {
            let mut q = self.shared.lock();
            q.shutdown = true;
            q.edf.drain_queued()
        };
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
        if expired.is_empty() && overrun.is_empty() {
            let wait = q.edf.next_expiry().map_or(TIMER_HEARTBEAT, |at| {
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
        drop(q);
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
        // Expired frames never reached a worker: wake workers in case a stream is now
        // idle with nothing queued, and let the next queued frames run.
        sh.work.notify_all();
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
        let (answer, consistent) = if slot.answered.load(Ordering::SeqCst) {
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
        // client may send the moment it reads this answer) finds it idle.
        let detected = matches!(&answer, Answer::Frame(o) if o.detection.is_some());
        {
            let mut q = sh.lock();
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
    }
}

/// Runs one frame with a cancel token published on the slot, so the deadline timer
/// can terminate it.
fn run_frame<P: FrameProcessor>(
    proc_: &mut P,
    state: &mut P::State,
    slot: &Slot,
) -> Result<FrameOutput, RuntimeError> {
    let token = Arc::new(proc_.cancel_token());
    if let Ok(mut g) = slot.cancel.lock() {
        *g = Some(Arc::clone(&token));
    }
    if slot.answered.load(Ordering::SeqCst) {
        // The timer fired between the pick and the publication.
        token.cancel();
    }
    let r = proc_.process(state, &slot.job.pcm, &token);
    if let Ok(mut g) = slot.cancel.lock() {
        *g = None;
    }
    r
}
