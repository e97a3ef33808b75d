//! The deadline scheduler: every submitted frame gets exactly one answer, never later
//! than its deadline (DESIGN.md §4).
//!
//! * **EDF across streams, FIFO within a stream.** Workers pick, among streams that
//!   are not already being processed, the one whose queued frames hold the earliest
//!   deadline, and take that stream's oldest frame (per-stream VAD and feature state
//!   demand order).
//! * **Admission control.** At arrival a frame is refused with
//!   [`Response::Rejected`] when the queue is at its bound, or when the work queued
//!   ahead of it plus its own worst-case compute (online p99.9 of measured compute,
//!   seeded by warm-up) cannot finish by its deadline.
//! * **Deadline timer.** A timer thread fires `guard` before each deadline; a frame not
//!   answered by then is answered [`Response::DeadlineMissed`], its ONNX Runtime run is
//!   terminated (`RunOptions::terminate`) and its stream's state is reset before the
//!   stream's next frame. ONNX Runtime calls cannot be pre-empted, so this is
//!   cooperative: the worker stops at the next operator boundary.
//! * **Exactly once.** Worker and timer race for one atomic flag per frame; the loser
//!   stays silent. A worker that finishes after the deadline answers `DeadlineMissed`,
//!   never a late result.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ort::session::RunOptions;
use outpost_protocol::{Detection, FrameResult, RejectReason, Response, Stage, Timing, WireError};

use crate::pipeline::{Engine, FrameOutput, StreamState, MODEL_STAGES};
use crate::rt::{apply_to_current_thread, Role, RtConfig};
use crate::stats::LatencyStats;
use crate::RuntimeError;

/// Where a frame's single answer goes (one per connection). Implementations must not
/// block: encode and hand the bytes to the connection's writer.
pub trait ResponseSink: Send + Sync {
    /// Sends `response` for `request_id`.
    fn send(&self, request_id: u32, response: &Response<'_>);
}

/// Cancels one frame's work from another thread.
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

impl FrameProcessor for Engine {
    type State = StreamState;

    fn new_stream(&self) -> StreamState {
        Engine::new_stream(self)
    }

    fn cancel_token(&self) -> CancelToken {
        match RunOptions::new() {
            Ok(r) => CancelToken::with_run_options(r),
            Err(e) => {
                log::warn!("no RunOptions for cancellation: {e}");
                CancelToken::default()
            }
        }
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

/// Scheduler limits.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Frames queued (not yet started) over all streams; beyond it, `QueueFull`.
    pub queue_capacity: usize,
    /// Streams open over all clients.
    pub max_streams: usize,
    /// Time before the deadline at which an unanswered frame is answered
    /// `DeadlineMissed`, leaving room to encode and write the answer, in µs.
    pub guard_us: u32,
    /// Worst-case compute per frame assumed before any measurement, in µs.
    pub initial_wcet_us: u32,
    /// Real-time scheduling of the timer and worker threads.
    pub rt: RtConfig,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 64,
            max_streams: 64,
            guard_us: 500,
            initial_wcet_us: 10_000,
            rt: RtConfig::off(),
        }
    }
}

/// Identifies a stream across connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    /// Connection id (unique per daemon run).
    pub conn: u64,
    /// Stream id chosen by the client.
    pub stream: u16,
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
    /// When the transport read the frame's last byte.
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

/// A frame in flight: shared by the queue, the worker and the deadline timer.
struct Slot {
    job: FrameJob,
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

    fn elapsed_us(&self, now: Instant) -> u32 {
        us(now.saturating_duration_since(self.job.arrived))
    }

    fn miss(&self, now: Instant) {
        self.job.sink.send(
            self.job.request_id,
            &Response::DeadlineMissed {
                stream_id: self.job.key.stream,
                seq: self.job.seq,
                deadline_us: self.job.deadline_us,
                elapsed_us: self.elapsed_us(now),
            },
        );
    }
}

fn us(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// Counters for status, all monotonic.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames answered with a result.
    pub frames: AtomicU64,
    /// Detections.
    pub detections: AtomicU64,
    /// Frames answered `DeadlineMissed`.
    pub deadline_misses: AtomicU64,
    /// Frames answered `Rejected`.
    pub rejections: AtomicU64,
    /// Frames whose run was cancelled at the deadline.
    pub cancellations: AtomicU64,
    /// Frames that failed in a model stage.
    pub failures: AtomicU64,
}

struct StreamEntry<S> {
    pending: VecDeque<Arc<Slot>>,
    /// `None` while a worker holds it, or when it must be (re)created.
    state: Option<Box<S>>,
    /// When a worker started this stream's current frame; `None` when idle.
    running_since: Option<Instant>,
    closed: bool,
    frames: u32,
    detections: u32,
}

struct Queue<S> {
    streams: HashMap<StreamKey, StreamEntry<S>>,
    queued: usize,
    busy_workers: usize,
    shutdown: bool,
}

struct TimerEntry {
    fire_at: Instant,
    slot: Arc<Slot>,
}

impl PartialEq for TimerEntry {
    fn eq(&self, o: &Self) -> bool {
        self.fire_at == o.fire_at
    }
}
impl Eq for TimerEntry {}
impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for TimerEntry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.fire_at.cmp(&self.fire_at) // min-heap
    }
}

struct Timer {
    heap: Mutex<(BinaryHeap<TimerEntry>, bool)>,
    cv: Condvar,
}

struct Shared<S> {
    queue: Mutex<Queue<S>>,
    cv: Condvar,
    timer: Timer,
    cfg: SchedulerConfig,
    workers: usize,
    stats: Arc<LatencyStats>,
    counters: Arc<Counters>,
    /// Current worst-case compute estimate per frame, in µs.
    wcet_us: AtomicU64,
    /// Measured compute per frame (all model stages), µs: the WCET source.
    compute: Mutex<hdrhistogram::Histogram<u64>>,
}

impl<S> Shared<S> {
    /// Records one frame's compute and refreshes the worst-case estimate (online
    /// p99.9) every 32 frames once 100 frames were seen; until then the warm-up seed
    /// stands.
    fn record_compute(&self, us: u64) {
        let Ok(mut h) = self.compute.lock() else {
            return;
        };
        h.saturating_record(us.max(1));
        let n = h.len();
        if n >= 100 && n % 32 == 0 {
            self.wcet_us
                .store(h.value_at_quantile(0.999), Ordering::Relaxed);
        }
    }
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The stream id is already open on this connection.
    Exists,
    /// The daemon-wide stream bound is reached.
    TooMany {
        /// The bound.
        max: usize,
    },
}

/// Handle to the running scheduler. Dropping it stops the threads.
pub struct Scheduler<S: Send + 'static> {
    shared: Arc<Shared<S>>,
    threads: Vec<JoinHandle<()>>,
}

impl<S: Send + 'static> std::fmt::Debug for Scheduler<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("workers", &self.shared.workers)
            .finish_non_exhaustive()
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
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                streams: HashMap::new(),
                queued: 0,
                busy_workers: 0,
                shutdown: false,
            }),
            cv: Condvar::new(),
            timer: Timer {
                heap: Mutex::new((BinaryHeap::new(), false)),
                cv: Condvar::new(),
            },
            workers: processors.len().max(1),
            wcet_us: AtomicU64::new(cfg.initial_wcet_us as u64),
            compute: Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds"),
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
        self.shared.wcet_us.load(Ordering::Relaxed)
    }

    /// Seeds the worst-case estimate (e.g. from warm-up), in µs.
    pub fn seed_wcet_us(&self, v: u64) {
        self.shared.wcet_us.store(v, Ordering::Relaxed);
    }

    /// Open streams over all connections.
    pub fn open_streams(&self) -> usize {
        self.shared
            .queue
            .lock()
            .map(|q| q.streams.len())
            .unwrap_or(0)
    }

    /// Whether a stream is open.
    pub fn is_open(&self, key: StreamKey) -> bool {
        self.shared
            .queue
            .lock()
            .map(|q| q.streams.get(&key).is_some_and(|e| !e.closed))
            .unwrap_or(false)
    }

    /// Waits until no frame is queued or running, at most `timeout` (used before a
    /// replaced scheduler is dropped, so its frames are answered, not refused).
    pub fn drain(&self, timeout: Duration) {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            let idle = self
                .shared
                .queue
                .lock()
                .map(|q| q.queued == 0 && q.busy_workers == 0)
                .unwrap_or(true);
            if idle {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Opens a stream.
    ///
    /// # Errors
    /// [`OpenError`] when the id is in use or the stream bound is reached.
    pub fn open_stream(&self, key: StreamKey) -> Result<(), OpenError> {
        let mut q = self.shared.queue.lock().expect("scheduler lock");
        if q.streams.get(&key).is_some_and(|e| !e.closed) {
            return Err(OpenError::Exists);
        }
        if q.streams.len() >= self.shared.cfg.max_streams {
            return Err(OpenError::TooMany {
                max: self.shared.cfg.max_streams,
            });
        }
        q.streams.insert(
            key,
            StreamEntry {
                pending: VecDeque::new(),
                state: None,
                running_since: None,
                closed: false,
                frames: 0,
                detections: 0,
            },
        );
        Ok(())
    }

    /// Closes a stream; returns `(frames, detections)`, or `None` if it was not open.
    /// Frames already queued are still processed and answered.
    pub fn close_stream(&self, key: StreamKey) -> Option<(u32, u32)> {
        let mut q = self.shared.queue.lock().expect("scheduler lock");
        let e = q.streams.get_mut(&key)?;
        if e.closed {
            return None;
        }
        let counts = (e.frames, e.detections);
        if e.running_since.is_some() || !e.pending.is_empty() {
            // Let queued frames finish (they are answered); the last worker removes it.
            e.closed = true;
        } else {
            q.streams.remove(&key);
        }
        Some(counts)
    }

    /// Drops every stream of a connection that went away; queued frames are discarded
    /// unanswered (there is no one to answer).
    pub fn drop_connection(&self, conn: u64) {
        let mut q = self.shared.queue.lock().expect("scheduler lock");
        let keys: Vec<StreamKey> = q
            .streams
            .keys()
            .filter(|k| k.conn == conn)
            .copied()
            .collect();
        for k in keys {
            let Some(e) = q.streams.get_mut(&k) else {
                continue;
            };
            let dropped = e.pending.len();
            for s in e.pending.drain(..) {
                s.answered.store(true, Ordering::SeqCst);
            }
            let busy = e.running_since.is_some();
            e.closed = true;
            q.queued -= dropped;
            if !busy {
                q.streams.remove(&k);
            }
        }
    }

    /// Submits a frame. Exactly one answer goes to `job.sink`: a result, or
    /// `Rejected` (now), or `DeadlineMissed` (by the deadline), or an error.
    pub fn submit(&self, job: FrameJob) {
        let sh = &self.shared;
        let now = Instant::now();
        let deadline = job.arrived + Duration::from_micros(job.deadline_us as u64);
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
        let mut q = sh.queue.lock().expect("scheduler lock");
        if q.shutdown {
            drop(q);
            return reject(&job, RejectReason::ShuttingDown, 0);
        }
        if q.streams.get(&job.key).is_none_or(|e| e.closed) {
            drop(q);
            return job.sink.send(
                job.request_id,
                &Response::Error(WireError::UnknownStream {
                    stream_id: job.key.stream,
                }),
            );
        }
        if q.queued >= sh.cfg.queue_capacity {
            drop(q);
            let wcet = sh.wcet_us.load(Ordering::Relaxed) as u32;
            return reject(&job, RejectReason::QueueFull, wcet);
        }
        // Work that runs before this frame, at the worst-case compute per frame: the
        // rest of the frames in progress and the queued frames with an earlier or equal
        // deadline, shared by the workers; and, serially, what is ahead of it in its own
        // stream (one stream's frames never run in parallel).
        let wcet = sh.wcet_us.load(Ordering::Relaxed);
        let remaining = |since: Option<Instant>| {
            since.map_or(0, |t| {
                wcet.saturating_sub(now.saturating_duration_since(t).as_micros() as u64)
            })
        };
        let mut shared_work = 0u64;
        let mut own_work = 0u64;
        for (k, e) in &q.streams {
            let running = remaining(e.running_since);
            shared_work += running;
            if *k == job.key {
                own_work = running + e.pending.len() as u64 * wcet;
                shared_work += e.pending.len() as u64 * wcet;
            } else {
                shared_work +=
                    e.pending.iter().filter(|s| s.deadline <= deadline).count() as u64 * wcet;
            }
        }
        let predicted_us = (shared_work / sh.workers as u64).max(own_work) + wcet;
        let finish = now + Duration::from_micros(predicted_us);
        let cutoff = deadline.checked_sub(Duration::from_micros(sh.cfg.guard_us as u64));
        if cutoff.is_none_or(|c| finish > c) {
            drop(q);
            let retry =
                (predicted_us.saturating_sub(job.deadline_us as u64)).min(u32::MAX as u64) as u32;
            return reject(&job, RejectReason::WouldMissDeadline, retry.max(1));
        }
        let slot = Arc::new(Slot {
            cancel: Mutex::new(None),
            job,
            deadline,
            answered: AtomicBool::new(false),
        });
        q.streams
            .get_mut(&slot.job.key)
            .expect("checked above")
            .pending
            .push_back(Arc::clone(&slot));
        q.queued += 1;
        drop(q);
        sh.cv.notify_one();
        let fire_at = deadline
            .checked_sub(Duration::from_micros(sh.cfg.guard_us as u64))
            .unwrap_or(deadline);
        let mut t = sh.timer.heap.lock().expect("timer lock");
        t.0.push(TimerEntry { fire_at, slot });
        drop(t);
        sh.timer.cv.notify_one();
    }

    /// Stops the threads (queued frames are answered `Rejected { ShuttingDown }`).
    pub fn shutdown(&mut self) {
        {
            let mut q = self.shared.queue.lock().expect("scheduler lock");
            q.shutdown = true;
            for e in q.streams.values_mut() {
                for s in e.pending.drain(..) {
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
            }
            q.queued = 0;
        }
        self.shared.cv.notify_all();
        self.shared.timer.heap.lock().expect("timer lock").1 = true;
        self.shared.timer.cv.notify_all();
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

fn timer_loop<S>(sh: Arc<Shared<S>>) {
    apply_to_current_thread(&sh.cfg.rt, Role::DeadlineTimer);
    let mut guard = sh.timer.heap.lock().expect("timer lock");
    loop {
        if guard.1 {
            return;
        }
        let now = Instant::now();
        // Drop entries already answered.
        while guard
            .0
            .peek()
            .is_some_and(|e| e.slot.answered.load(Ordering::SeqCst))
        {
            guard.0.pop();
        }
        match guard.0.peek() {
            None => {
                guard = sh.timer.cv.wait(guard).expect("timer lock");
            }
            Some(e) if e.fire_at <= now => {
                let e = guard.0.pop().expect("peeked");
                drop(guard);
                if e.slot.claim() {
                    e.slot.cancel();
                    sh.counters.deadline_misses.fetch_add(1, Ordering::Relaxed);
                    sh.counters.cancellations.fetch_add(1, Ordering::Relaxed);
                    e.slot.miss(Instant::now());
                    log::debug!(
                        "deadline miss: stream {:?} seq {} ({} µs deadline)",
                        e.slot.job.key,
                        e.slot.job.seq,
                        e.slot.job.deadline_us
                    );
                }
                guard = sh.timer.heap.lock().expect("timer lock");
            }
            Some(e) => {
                let wait = e.fire_at - now;
                guard = sh.timer.cv.wait_timeout(guard, wait).expect("timer lock").0;
            }
        }
    }
}

/// Picks the stream to serve next: not busy, has frames, earliest deadline among its
/// queued frames (a later frame's shorter deadline raises the whole stream).
fn pick<S>(q: &Queue<S>) -> Option<StreamKey> {
    q.streams
        .iter()
        .filter(|(_, e)| e.running_since.is_none() && !e.pending.is_empty())
        .min_by_key(|(k, e)| (e.pending.iter().map(|s| s.deadline).min(), **k))
        .map(|(k, _)| *k)
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
        RuntimeError::Inference { stage, .. } => match stage.as_str() {
            "vad" => Stage::Vad,
            "mel" => Stage::Mel,
            "embedding" => Stage::Embedding,
            _ => Stage::Head,
        },
        _ => Stage::Total,
    }
}

fn worker<P: FrameProcessor>(sh: Arc<Shared<P::State>>, mut proc_: P) {
    apply_to_current_thread(&sh.cfg.rt, Role::Worker);
    loop {
        let (key, slot, state, started) = {
            let mut q = sh.queue.lock().expect("scheduler lock");
            loop {
                if q.shutdown {
                    return;
                }
                if let Some(k) = pick(&q) {
                    let started = Instant::now();
                    let e = q.streams.get_mut(&k).expect("picked");
                    let slot = e.pending.pop_front().expect("non-empty");
                    e.running_since = Some(started);
                    let state = e.state.take();
                    q.queued -= 1;
                    q.busy_workers += 1;
                    break (k, slot, state, started);
                }
                q = sh.cv.wait(q).expect("scheduler lock");
            }
        };
        let mut state = state.unwrap_or_else(|| Box::new(proc_.new_stream()));
        let queue_us = us(started.saturating_duration_since(slot.job.arrived));

        // Compute, then claim the right to answer. State is kept when the frame ran to
        // completion (late or not); it is reset when the run was cancelled, failed, or
        // never ran (missed while queued), so the next frame starts consistent.
        let (answer, keep_state) = if slot.answered.load(Ordering::SeqCst) {
            (Answer::None, false)
        } else {
            match run_frame(&mut proc_, &mut state, &slot) {
                Ok(out) => {
                    let compute_us: u64 = out.stage_us.iter().map(|&v| v as u64).sum();
                    sh.record_compute(compute_us);
                    if !slot.claim() {
                        (Answer::None, false)
                    } else if Instant::now() < slot.deadline {
                        (Answer::Frame(out), true)
                    } else {
                        (Answer::Late, true)
                    }
                }
                Err(e) => {
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
            let mut q = sh.queue.lock().expect("scheduler lock");
            q.busy_workers -= 1;
            if let Some(e) = q.streams.get_mut(&key) {
                e.running_since = None;
                e.frames += 1;
                e.detections += u32::from(detected);
                e.state = keep_state.then_some(state);
                if e.closed && e.pending.is_empty() {
                    q.streams.remove(&key);
                }
            }
        }
        sh.cv.notify_one();

        let job = &slot.job;
        match answer {
            Answer::None => {}
            Answer::Frame(out) => {
                let total_us = us(Instant::now().saturating_duration_since(job.arrived));
                let compute_us = out.stage_us.iter().sum();
                job.sink.send(
                    job.request_id,
                    &Response::Frame(FrameResult {
                        stream_id: job.key.stream,
                        seq: job.seq,
                        vad_prob: out.vad_prob,
                        detection: out.detection.map(|d| Detection {
                            label: d.label as u8,
                            score: d.score,
                            audio_ms: out.audio_ms,
                        }),
                        timing: Timing {
                            queue_us,
                            compute_us,
                            total_us,
                        },
                    }),
                );
                sh.counters.frames.fetch_add(1, Ordering::Relaxed);
                sh.counters
                    .detections
                    .fetch_add(u64::from(detected), Ordering::Relaxed);
                sh.stats.record(Stage::Queue, queue_us as u64);
                for (st, v) in MODEL_STAGES.iter().zip(out.stage_us) {
                    sh.stats.record(*st, v as u64);
                }
                sh.stats.record(Stage::Total, total_us as u64);
            }
            Answer::Late => {
                sh.counters.deadline_misses.fetch_add(1, Ordering::Relaxed);
                slot.miss(Instant::now());
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
