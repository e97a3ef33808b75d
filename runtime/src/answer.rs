//! The answer contract of an audio frame (docs/DESIGN.md §4): exactly one answer, stamped
//! and checked against the frame's deadline at the moment of its write.
//!
//! The scheduler decides *what* a frame's answer is ([`FrameAnswer`]); the transport's
//! writer decides *when* it leaves, and calls [`FrameAnswer::written_at`] right before
//! the write: a result that would leave after its deadline goes out as
//! `DeadlineMissed`, `total_us` / `elapsed_us` are the times of the write, and every
//! answer written after its deadline is counted ([`Counters::late_writes`]). All times
//! are embassy-time [`Instant`]s, the scheduler's one clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use embassy_time::{Duration, Instant};
use outpost_protocol::{FrameResult, Response, Stage, Verification, VerifyOutcome};

use crate::stats::LatencyStats;

/// Where a frame's single answer goes (one per connection). Implementations must not
/// block: encode and hand the bytes to the connection's writer.
pub trait ResponseSink: Send + Sync {
    /// Sends `response` for `request_id`.
    fn send(&self, request_id: u32, response: &Response<'_>);

    /// Sends the answer to an audio frame, which is due by `due.deadline`.
    ///
    /// A sink that writes on another thread must call [`FrameAnswer::written_at`]
    /// right before the write, not here: that is where a result that became late on
    /// the way is turned into `DeadlineMissed` and the answer is counted. The default
    /// writes at once.
    fn send_frame_answer(&self, request_id: u32, answer: FrameAnswer, due: Due) {
        self.send(request_id, &answer.written_at(&due, Instant::now()));
    }
}

/// When an audio frame's answer is due, and where its write is accounted.
#[derive(Debug, Clone)]
pub struct Due {
    /// When the transport read the frame's last byte.
    pub arrived: Instant,
    /// `arrived` plus the frame's deadline: the first byte of the answer must be
    /// written by then (docs/DESIGN.md §4).
    pub deadline: Instant,
    /// The frame's deadline in µs, as reported in `DeadlineMissed`.
    pub deadline_us: u32,
    counters: Arc<Counters>,
    stats: Arc<LatencyStats>,
}

impl Due {
    /// A frame that arrived at `arrived` with a deadline of `deadline_us` µs; its answer
    /// is counted in `counters` and its total latency recorded in `stats`.
    pub fn new(
        arrived: Instant,
        deadline_us: u32,
        counters: Arc<Counters>,
        stats: Arc<LatencyStats>,
    ) -> Self {
        Self {
            arrived,
            deadline: arrived + Duration::from_micros(u64::from(deadline_us)),
            deadline_us,
            counters,
            stats,
        }
    }
}

/// The answer to an audio frame before it is written: its final form and time stamps
/// depend on when the write happens ([`FrameAnswer::written_at`]).
#[derive(Debug, Clone, Copy)]
pub enum FrameAnswer {
    /// The result; `timing.total_us` is set at the write.
    Result(FrameResult),
    /// `DeadlineMissed` (already counted as a miss); `elapsed_us` is set at the write.
    Missed {
        /// Stream id.
        stream_id: u16,
        /// Frame sequence number.
        seq: u32,
    },
    /// Stage 2's answer about a trigger, due by the verification deadline (`Due` of
    /// the trigger frame's arrival and the verification deadline); `timing.total_us`
    /// is set at the write.
    Verification(Verification),
}

impl FrameAnswer {
    /// The response to write at `now`, which should be the moment of the write.
    ///
    /// * A result written by `due.deadline` goes out with `total_us` = `now` −
    ///   `arrived` and is counted in [`Counters::frames`] (and `detections`); its
    ///   total is recorded as [`Stage::Total`].
    /// * A result written after the deadline becomes `DeadlineMissed` and is counted
    ///   in [`Counters::deadline_misses`]: never a late result passed off as on time.
    /// * `elapsed_us` of a miss is `now` − `arrived`.
    /// * Any answer written after the deadline also counts in
    ///   [`Counters::late_writes`].
    /// * A verification is written as is when on time (a verdict counts in
    ///   [`Counters::verifications`], a detected command in `detections`; its total is
    ///   recorded as [`Stage::VerifyTotal`]); written late, its outcome becomes
    ///   [`VerifyOutcome::DeadlineMissed`], counted in [`Counters::verify_misses`].
    pub fn written_at(self, due: &Due, now: Instant) -> Response<'static> {
        let elapsed_us = now
            .checked_duration_since(due.arrived)
            .unwrap_or_default()
            .as_micros()
            .min(u64::from(u32::MAX)) as u32;
        let late = now > due.deadline;
        let c = &due.counters;
        if late {
            c.late_writes.fetch_add(1, Ordering::Relaxed);
        }
        let (stream_id, seq) = match self {
            FrameAnswer::Verification(mut v) => {
                v.timing.total_us = elapsed_us;
                match v.outcome {
                    VerifyOutcome::Detected(_) | VerifyOutcome::NoCommand { .. } if late => {
                        v.outcome = VerifyOutcome::DeadlineMissed;
                        c.verify_misses.fetch_add(1, Ordering::Relaxed);
                    }
                    VerifyOutcome::Detected(_) | VerifyOutcome::NoCommand { .. } => {
                        c.verifications.fetch_add(1, Ordering::Relaxed);
                        let detected = matches!(v.outcome, VerifyOutcome::Detected(_));
                        c.detections
                            .fetch_add(u64::from(detected), Ordering::Relaxed);
                        due.stats.record(Stage::VerifyTotal, u64::from(elapsed_us));
                    }
                    _ => {}
                }
                return Response::Verification(v);
            }
            FrameAnswer::Result(mut r) if !late => {
                r.timing.total_us = elapsed_us;
                c.frames.fetch_add(1, Ordering::Relaxed);
                c.detections
                    .fetch_add(u64::from(r.detection.is_some()), Ordering::Relaxed);
                due.stats.record(Stage::Total, u64::from(elapsed_us));
                return Response::Frame(r);
            }
            FrameAnswer::Result(r) => {
                c.deadline_misses.fetch_add(1, Ordering::Relaxed);
                (r.stream_id, r.seq)
            }
            FrameAnswer::Missed { stream_id, seq } => (stream_id, seq),
        };
        Response::DeadlineMissed {
            stream_id,
            seq,
            deadline_us: due.deadline_us,
            elapsed_us,
        }
    }
}

/// Counters for status, all monotonic.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames answered with a result, counted when the result is written (on time).
    pub frames: AtomicU64,
    /// Detections, counted with their frame (or, with a verifier, with their
    /// verification).
    pub detections: AtomicU64,
    /// Frames answered `DeadlineMissed`: by the deadline timer, by a worker that
    /// finished too late, or at the write (a result that became late on the way).
    pub deadline_misses: AtomicU64,
    /// Answers to audio frames whose first byte was written after the frame's
    /// deadline (a result this late goes out as `DeadlineMissed`): the promise of
    /// docs/DESIGN.md §4 broken, by a stalled host or a client that reads too slowly.
    pub late_writes: AtomicU64,
    /// Frames answered `Rejected`.
    pub rejections: AtomicU64,
    /// Frames whose run was cancelled at the deadline.
    pub cancellations: AtomicU64,
    /// Frames that failed in a model stage.
    pub failures: AtomicU64,
    /// Triggers answered with a verdict by their verification deadline.
    pub verifications: AtomicU64,
    /// Triggers answered `VerifyOutcome::DeadlineMissed` (by the deadline timer, a
    /// verifier that finished too late, or at the write).
    pub verify_misses: AtomicU64,
    /// Triggers refused by admission control (`VerifyOutcome::Rejected`).
    pub verify_rejections: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::{Detection, FrameResult, Timing};

    fn due(arrived: Instant) -> (Due, Arc<Counters>, Arc<LatencyStats>) {
        let counters = Arc::new(Counters::default());
        let stats = Arc::new(LatencyStats::new());
        let d = Due::new(arrived, 30_000, Arc::clone(&counters), Arc::clone(&stats));
        (d, counters, stats)
    }

    fn result(detected: bool) -> FrameAnswer {
        FrameAnswer::Result(FrameResult {
            stream_id: 3,
            seq: 9,
            vad_prob: 0.5,
            detection: detected.then_some(Detection {
                label: 1,
                score: 0.99,
                audio_ms: 800,
            }),
            timing: Timing {
                queue_us: 100,
                compute_us: 3_000,
                total_us: 0,
            },
        })
    }

    fn count(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    #[test]
    fn a_result_written_by_its_deadline_carries_the_write_time_and_counts_as_a_frame() {
        let t0 = Instant::from_ticks(1_000_000);
        let (d, c, stats) = due(t0);
        // Exactly at the deadline is on time.
        let r = result(true).written_at(&d, t0 + Duration::from_micros(30_000));
        match r {
            Response::Frame(f) => {
                assert_eq!(f.timing.total_us, 30_000);
                assert_eq!((f.timing.queue_us, f.timing.compute_us), (100, 3_000));
                assert!(f.detection.is_some());
            }
            other => panic!("expected a result, got {other:?}"),
        }
        assert_eq!((count(&c.frames), count(&c.detections)), (1, 1));
        assert_eq!((count(&c.deadline_misses), count(&c.late_writes)), (0, 0));
        let total = stats
            .snapshot()
            .into_iter()
            .find(|l| l.stage == Stage::Total)
            .expect("total recorded");
        assert_eq!(total.count, 1);
    }

    #[test]
    fn a_result_that_would_be_written_late_goes_out_as_a_deadline_miss() {
        let t0 = Instant::from_ticks(1_000_000);
        let (d, c, _) = due(t0);
        let r = result(true).written_at(&d, t0 + Duration::from_micros(30_001));
        assert_eq!(
            r,
            Response::DeadlineMissed {
                stream_id: 3,
                seq: 9,
                deadline_us: 30_000,
                elapsed_us: 30_001,
            }
        );
        assert_eq!((count(&c.frames), count(&c.detections)), (0, 0));
        assert_eq!((count(&c.deadline_misses), count(&c.late_writes)), (1, 1));
    }

    #[test]
    fn a_miss_is_stamped_at_the_write_and_counted_late_only_past_the_deadline() {
        let t0 = Instant::from_ticks(1_000_000);
        let (d, c, _) = due(t0);
        let miss = FrameAnswer::Missed {
            stream_id: 3,
            seq: 9,
        };
        let on_time = miss.written_at(&d, t0 + Duration::from_micros(28_500));
        assert!(matches!(
            on_time,
            Response::DeadlineMissed {
                elapsed_us: 28_500,
                ..
            }
        ));
        assert_eq!(count(&c.late_writes), 0);
        let late = miss.written_at(&d, t0 + Duration::from_micros(45_000));
        assert!(matches!(
            late,
            Response::DeadlineMissed {
                elapsed_us: 45_000,
                ..
            }
        ));
        // The miss itself was counted when it was decided, not again at the write.
        assert_eq!((count(&c.deadline_misses), count(&c.late_writes)), (0, 1));
    }
}
