//! The scheduling policy, without threads: earliest-deadline-first across streams with
//! order kept within a stream, admission control from worst-case compute estimates,
//! deadline expiry of queued and running frames, and stream-state resets.
//!
//! Time is read only through [`embassy_time::Instant::now`], so the policy is tested
//! deterministically on embassy-time's mock driver (crate `outpost-edf-tests`), while
//! the daemon links the `std` driver. Only one driver may be linked into a binary.
//!
//! Like embassy's executor, this is cooperative, not pre-emptive: a frame that is
//! running cannot be interrupted by a more urgent one. Admission therefore counts the
//! remaining time of running frames, and an overrunning frame is cut at its deadline by
//! the caller (ONNX Runtime `RunOptions::terminate`).

use std::collections::BTreeMap;

use heapless::Deque;

use embassy_time::{Duration, Instant};
use outpost_protocol::RejectReason;

/// Identifies a stream across connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    /// Connection id (unique per daemon run).
    pub conn: u64,
    /// Stream id chosen by the client.
    pub stream: u16,
}

/// Policy limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdfConfig {
    /// Frames queued (not yet running) over all streams; beyond it, `QueueFull`.
    pub queue_capacity: usize,
    /// Streams open over all connections.
    pub max_streams: usize,
    /// Workers running frames in parallel.
    pub workers: usize,
    /// How long before its deadline a frame is declared missed, leaving room to encode
    /// and write the answer.
    pub guard: Duration,
}

/// Admission decision for an arriving frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Queue it.
    Admit,
    /// Answer `Rejected` now.
    Reject {
        /// Why.
        reason: RejectReason,
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
}

/// Per-frame compute estimates used by admission control.
///
/// `typical` is what a frame usually costs (the daemon uses the mean compute over its
/// sliding window of measured frames), `wcet` what it costs at worst (the online p99.9
/// over the same window, the p99 while it holds fewer than 2 000 frames). Summing
/// `wcet` over every queued frame assumes all of them hit their p99.9 together, which
/// on a 2-core machine with a p99.9 about 3× the mean cut zero-rejection capacity to 7
/// real-time streams against a compute bound of 46 (`outpost-hil bench-load`,
/// hil-tests/README.md).
///
/// `spread` is the standard deviation of per-frame compute. The frames queued ahead
/// are charged their typical cost plus [`QUEUE_SPREAD_Z`] standard deviations of their
/// sum (`spread · √n` for n frames): the margin for the queue as a whole running long,
/// which the arriving frame's own WCET alone does not cover once the queue is deep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CostEstimate {
    /// Usual compute per frame.
    pub typical: Duration,
    /// Worst-case compute per frame (at least `typical`; a smaller value is raised).
    pub wcet: Duration,
    /// Standard deviation of compute per frame.
    pub spread: Duration,
}

impl CostEstimate {
    /// Both estimates the same and no spread: every frame charged `wcet` (the most
    /// conservative model).
    pub fn worst_case(wcet: Duration) -> Self {
        Self {
            typical: wcet,
            wcet,
            spread: Duration::from_ticks(0),
        }
    }
}

/// Standard deviations of the summed compute of the frames queued ahead that admission
/// adds to their typical cost. The sum of n frames' compute has a standard deviation of
/// `spread · √n` (independent frames); 3 of them cover 99.87 % of a normal sum. Without
/// this term a saturated daemon admits every frame right up to its deadline, and the
/// queue's ordinary variance becomes misses: 350 of 16 000 frames at 64 streams on a
/// 2-core VM, where the arriving frame's WCET (6.7 ms) left only 3.4 ms of margin over
/// its typical cost (`outpost-hil bench-load`, overload scenario).
pub const QUEUE_SPREAD_Z: f64 = 3.0;

/// `QUEUE_SPREAD_Z` standard deviations of the sum of `n` frames' compute.
fn queue_margin(spread: Duration, n: usize) -> Duration {
    if n == 0 {
        return Duration::from_ticks(0);
    }
    Duration::from_micros((spread.as_micros() as f64 * QUEUE_SPREAD_Z * (n as f64).sqrt()) as u64)
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

/// A frame handed to a worker by [`Edf::pick`].
#[derive(Debug)]
pub struct Picked<J> {
    /// Its stream.
    pub key: StreamKey,
    /// Its deadline.
    pub deadline: Instant,
    /// The frame.
    pub job: J,
    /// The stream's state must start afresh (a frame of it was missed or failed).
    pub reset_state: bool,
}

/// Frames one stream may have queued (not yet running): 16 frames are 1.28 s of audio,
/// far past any deadline the daemon accepts, so a full stream queue only ever means a
/// client sending faster than real time. A fixed-capacity [`heapless::Deque`]: a stream's
/// queue never grows, past it the answer is `Rejected { QueueFull }`.
pub const STREAM_QUEUE_CAPACITY: usize = 16;

#[derive(Debug)]
struct Queued<J> {
    deadline: Instant,
    job: J,
}

#[derive(Debug)]
struct Running<J> {
    since: Instant,
    deadline: Instant,
    job: J,
    overrun_reported: bool,
}

#[derive(Debug)]
struct StreamQ<J> {
    pending: Deque<Queued<J>, STREAM_QUEUE_CAPACITY>,
    running: Option<Running<J>>,
    closed: bool,
    reset: bool,
    frames: u32,
    detections: u32,
}

/// The EDF queue over all streams. `J` is the caller's frame handle.
#[derive(Debug)]
pub struct Edf<J> {
    cfg: EdfConfig,
    streams: BTreeMap<StreamKey, StreamQ<J>>,
    queued: usize,
    running: usize,
    /// When the last frame started running, or when the queue was made.
    last_start: Instant,
}

/// How long admission may go without starting a frame (counted from the queue's
/// creation before the first) before an arriving frame that would start at once is
/// admitted whatever the estimates say (a probe).
///
/// The estimates only change when frames run, so an estimate above the deadline budget
/// (a typical cost inflated by a sustained stall, say) would otherwise refuse every
/// frame for ever on an idle daemon: one probe per interval keeps them measuring, so
/// admission reopens once the device is fast again. A probe that does overrun is cut
/// and answered `DeadlineMissed` by its deadline like any other frame. Only a frame with
/// at least [`PROBE_MIN_BUDGET`] left before its cut-off is a probe.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The least time before its cut-off (deadline − guard) a frame must have to be a probe:
/// the model stages' share of docs/DESIGN.md §4's latency budget (VAD 1 + mel 2 + embedding 6 +
/// head 1 ms). A run cut sooner could not show whether the pipeline is back within its
/// budget, and its truncated time would pull the estimates down.
pub const PROBE_MIN_BUDGET: Duration = Duration::from_millis(10);

impl<J: Clone> Edf<J> {
    /// An empty queue.
    pub fn new(cfg: EdfConfig) -> Self {
        Self {
            cfg: EdfConfig {
                workers: cfg.workers.max(1),
                ..cfg
            },
            streams: BTreeMap::new(),
            queued: 0,
            running: 0,
            last_start: Instant::now(),
        }
    }

    /// Frames queued, not running.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Frames running.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Open streams.
    pub fn open_streams(&self) -> usize {
        self.streams.values().filter(|s| !s.closed).count()
    }

    /// Whether `key` is open.
    pub fn is_open(&self, key: StreamKey) -> bool {
        self.streams.get(&key).is_some_and(|s| !s.closed)
    }

    /// Opens a stream.
    ///
    /// # Errors
    /// [`OpenError`] when the id is in use or the bound is reached.
    pub fn open(&mut self, key: StreamKey) -> Result<(), OpenError> {
        if self.is_open(key) {
            return Err(OpenError::Exists);
        }
        if let Some(s) = self.streams.get_mut(&key) {
            // Closed, but its last frames are still queued or running: they stay (and
            // are answered); the new stream starts its counts and state afresh.
            s.closed = false;
            s.reset = true;
            s.frames = 0;
            s.detections = 0;
            return Ok(());
        }
        if self.streams.len() >= self.cfg.max_streams {
            return Err(OpenError::TooMany {
                max: self.cfg.max_streams,
            });
        }
        self.streams.insert(
            key,
            StreamQ {
                pending: Deque::new(),
                running: None,
                closed: false,
                reset: true,
                frames: 0,
                detections: 0,
            },
        );
        Ok(())
    }

    /// Closes a stream: its queued frames still run; it disappears when idle. Returns
    /// `(frames, detections)` so far, or `None` if it was not open.
    pub fn close(&mut self, key: StreamKey) -> Option<(u32, u32)> {
        let s = self.streams.get_mut(&key).filter(|s| !s.closed)?;
        let counts = (s.frames, s.detections);
        s.closed = true;
        self.remove_if_done(key);
        Some(counts)
    }

    /// Forgets every stream of a connection that went away; returns its queued frames
    /// (nobody is left to answer).
    pub fn drop_connection(&mut self, conn: u64) -> Vec<J> {
        let keys: Vec<StreamKey> = self
            .streams
            .keys()
            .filter(|k| k.conn == conn)
            .copied()
            .collect();
        let mut dropped = Vec::new();
        for k in keys {
            if let Some(s) = self.streams.get_mut(&k) {
                self.queued -= s.pending.len();
                while let Some(q) = s.pending.pop_front() {
                    dropped.push(q.job);
                }
                s.closed = true;
            }
            self.remove_if_done(k);
        }
        dropped
    }

    fn remove_if_done(&mut self, key: StreamKey) {
        if self
            .streams
            .get(&key)
            .is_some_and(|s| s.closed && s.pending.is_empty() && s.running.is_none())
        {
            self.streams.remove(&key);
        }
    }

    /// Decides at arrival whether a frame of `key` with `deadline` can finish in time.
    ///
    /// The work ahead of it is what runs now plus the queued frames with an earlier or
    /// equal deadline, each charged `cost.typical`, shared by the workers (charging every
    /// one of them the WCET would count a p99.9 event once per queued frame and refuse
    /// most of the capacity, see [`CostEstimate`]). A running frame has `typical - spent`
    /// left, or `wcet - spent` once it is past `typical`. What is ahead in its own stream
    /// runs serially before it whatever the number of workers. The queued frames
    /// together are charged [`QUEUE_SPREAD_Z`] standard deviations of their sum on top
    /// (see [`CostEstimate`]). Its own compute is charged the full `cost.wcet`.
    /// The predicted end must be at or before `deadline - guard`; a frame admitted and
    /// still unanswered then is answered `DeadlineMissed` by the caller.
    ///
    /// A frame that would start at once (a worker free, no frame queued anywhere, none
    /// running in its own stream) delays no admitted frame, and rejecting it protects
    /// nothing. It is charged `cost.typical` alone (frames running on other workers do
    /// not delay it), and when no frame has started for [`PROBE_INTERVAL`] it is
    /// admitted whatever the estimates say if [`PROBE_MIN_BUDGET`] fits before its
    /// cut-off. Without this, one stalled frame among the first few hundred (a p99.9
    /// over them is the worst frame) raised the WCET above the budget and every later
    /// frame was refused: refused frames never run, so the estimate never came down (a
    /// CI run on a loaded 2-core VM refused 20 clips' frames in a row).
    pub fn admit(&self, key: StreamKey, deadline: Instant, cost: CostEstimate) -> Admission {
        let now = Instant::now();
        let CostEstimate {
            typical,
            wcet,
            spread,
        } = cost;
        let wcet = wcet.max(typical);
        let stream_full = self.streams.get(&key).is_some_and(|s| s.pending.is_full());
        if self.queued >= self.cfg.queue_capacity || stream_full {
            return Admission::Reject {
                reason: RejectReason::QueueFull,
                retry_after: wcet,
            };
        }
        let zero = Duration::from_ticks(0);
        let remaining = |r: &Option<Running<J>>| {
            r.as_ref().map_or(zero, |r| {
                let spent = now.checked_duration_since(r.since).unwrap_or_default();
                typical
                    .checked_sub(spent)
                    .or_else(|| wcet.checked_sub(spent))
                    .unwrap_or_default()
            })
        };
        let mut shared = zero;
        let mut shared_n = 0;
        let mut own = zero;
        for (k, s) in &self.streams {
            let running = remaining(&s.running);
            shared += running;
            let ahead = if *k == key {
                s.pending.len()
            } else {
                s.pending.iter().filter(|q| q.deadline <= deadline).count()
            };
            shared += typical * ahead as u32;
            shared_n += ahead;
            if *k == key {
                own = running + typical * ahead as u32 + queue_margin(spread, ahead);
            }
        }
        shared += queue_margin(spread, shared_n);
        let own_running = self.streams.get(&key).is_some_and(|s| s.running.is_some());
        let starts_now = self.queued == 0 && !own_running && self.running < self.cfg.workers;
        let probe = starts_now
            && now
                .checked_duration_since(self.last_start)
                .is_some_and(|d| d >= PROBE_INTERVAL);
        let predicted = if starts_now {
            typical
        } else {
            (shared / self.cfg.workers as u32).max(own) + wcet
        };
        let finish = now + predicted;
        let cutoff = deadline.checked_sub(self.cfg.guard);
        match cutoff {
            Some(c) if finish <= c => Admission::Admit,
            Some(c) if probe && now + PROBE_MIN_BUDGET <= c => Admission::Admit,
            _ => Admission::Reject {
                reason: RejectReason::WouldMissDeadline,
                retry_after: finish
                    .checked_duration_since(deadline)
                    .unwrap_or_default()
                    .max(Duration::from_micros(1)),
            },
        }
    }

    /// Queues a frame (after [`Edf::admit`]).
    ///
    /// # Errors
    /// Gives the frame back when the stream is not open or its queue is full
    /// ([`STREAM_QUEUE_CAPACITY`]; [`Edf::admit`] refuses such a frame first).
    pub fn push(&mut self, key: StreamKey, deadline: Instant, job: J) -> Result<(), J> {
        match self.streams.get_mut(&key).filter(|s| !s.closed) {
            Some(s) => match s.pending.push_back(Queued { deadline, job }) {
                Ok(()) => {
                    self.queued += 1;
                    Ok(())
                }
                Err(q) => Err(q.job),
            },
            None => Err(job),
        }
    }

    /// The next frame to run: among streams with nothing running, the one whose queued
    /// frames hold the earliest deadline (a later frame's shorter deadline raises its
    /// whole stream), its oldest frame. Ties go to the lower stream key.
    pub fn pick(&mut self) -> Option<Picked<J>> {
        let key = self
            .streams
            .iter()
            .filter(|(_, s)| s.running.is_none() && !s.pending.is_empty())
            .min_by_key(|(k, s)| (s.pending.iter().map(|q| q.deadline).min(), **k))
            .map(|(k, _)| *k)?;
        let s = self.streams.get_mut(&key)?;
        let q = s.pending.pop_front()?;
        let reset_state = std::mem::replace(&mut s.reset, false);
        s.running = Some(Running {
            since: Instant::now(),
            deadline: q.deadline,
            job: q.job.clone(),
            overrun_reported: false,
        });
        self.queued -= 1;
        self.running += 1;
        self.last_start = Instant::now();
        Some(Picked {
            key,
            deadline: q.deadline,
            job: q.job,
            reset_state,
        })
    }

    /// A worker finished the running frame of `key`. `consistent` is false when the
    /// frame was cancelled, failed or answered by the deadline timer: the stream's state
    /// then restarts with its next frame.
    pub fn finish(&mut self, key: StreamKey, consistent: bool, detected: bool) {
        if let Some(s) = self.streams.get_mut(&key) {
            if s.running.take().is_some() {
                self.running -= 1;
            }
            s.frames += 1;
            s.detections += u32::from(detected);
            if !consistent {
                s.reset = true;
            }
        }
        self.remove_if_done(key);
    }

    /// Removes and returns the queued frames whose deadline minus the guard has passed:
    /// the caller answers them `DeadlineMissed`. Their streams restart their state.
    pub fn take_expired(&mut self) -> Vec<(StreamKey, J)> {
        let now = Instant::now();
        let guard = self.cfg.guard;
        let mut out = Vec::new();
        for (k, s) in &mut self.streams {
            let before = s.pending.len();
            for _ in 0..before {
                let Some(q) = s.pending.pop_front() else {
                    break;
                };
                if fire_at(q.deadline, guard) <= now {
                    out.push((*k, q.job));
                } else if let Err(q) = s.pending.push_back(q) {
                    // Cannot happen: one slot was just freed.
                    out.push((*k, q.job));
                }
            }
            if s.pending.len() != before {
                s.reset = true;
            }
        }
        self.queued -= out.len();
        let keys: Vec<StreamKey> = out.iter().map(|(k, _)| *k).collect();
        for k in keys {
            self.remove_if_done(k);
        }
        out
    }

    /// Running frames past their deadline minus the guard, each reported once: the
    /// caller answers `DeadlineMissed` and cancels the run.
    pub fn take_overrunning(&mut self) -> Vec<(StreamKey, J)> {
        let now = Instant::now();
        let guard = self.cfg.guard;
        let mut out = Vec::new();
        for (k, s) in &mut self.streams {
            if let Some(r) = &mut s.running {
                if !r.overrun_reported && fire_at(r.deadline, guard) <= now {
                    r.overrun_reported = true;
                    out.push((*k, r.job.clone()));
                }
            }
        }
        out
    }

    /// When the next queued or running frame reaches its deadline minus the guard.
    pub fn next_expiry(&self) -> Option<Instant> {
        let guard = self.cfg.guard;
        self.streams
            .values()
            .flat_map(|s| {
                s.pending.iter().map(|q| q.deadline).chain(
                    s.running
                        .iter()
                        .filter(|r| !r.overrun_reported)
                        .map(|r| r.deadline),
                )
            })
            .map(|d| fire_at(d, guard))
            .min()
    }

    /// Empties the queue (shutdown): every queued frame, for the caller to answer.
    pub fn drain_queued(&mut self) -> Vec<(StreamKey, J)> {
        let mut out = Vec::new();
        for (k, s) in &mut self.streams {
            while let Some(q) = s.pending.pop_front() {
                out.push((*k, q.job));
            }
        }
        self.queued = 0;
        out
    }
}

fn fire_at(deadline: Instant, guard: Duration) -> Instant {
    deadline.checked_sub(guard).unwrap_or(deadline)
}
