//! Tallies: every frame written matched with its answers by request id, counted
//! (results, misses, rejections by reason, errors, late, unanswered, duplicates,
//! stray) and summarised as latency percentiles, per group of streams.

use std::collections::HashMap;
use std::time::Instant;

use outpost_protocol::{RejectReason, VerifyOutcome};
use serde::Serialize;

use crate::session::{Answer, AnswerKind};
use crate::stats::{LatencySeries, LatencySummary};

/// Counts and latencies of a group of streams (one transport, or all).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TallySummary {
    /// `all`, `socket` or `pty`.
    pub group: String,
    /// Streams.
    pub streams: usize,
    /// Connections.
    pub conns: usize,
    /// Frames written.
    pub frames: u64,
    /// Frames with exactly one answer.
    pub answered_once: u64,
    /// Frames with no answer within the drain timeout (invariant).
    pub unanswered: u64,
    /// Frames with more than one answer (invariant).
    pub duplicates: u64,
    /// Answers carrying a request id the rig never sent (incl. id 0 errors).
    pub stray: u64,
    /// Answered with a result.
    pub results: u64,
    /// Answered `DeadlineMissed`.
    pub misses: u64,
    /// Answered `Rejected { QueueFull }`.
    pub rejected_queue_full: u64,
    /// Answered `Rejected { WouldMissDeadline }`.
    pub rejected_would_miss: u64,
    /// Answered `Rejected` for another reason.
    pub rejected_other: u64,
    /// Answered `Error` (or damaged / undecodable).
    pub errors: u64,
    /// Answers read later than deadline + allowance after the frame was written (invariant).
    pub late: u64,
    /// Answers whose own daemon timing (`Frame` `total_us`, `DeadlineMissed`
    /// `elapsed_us`, both stamped at the write) exceeds the deadline: written late by
    /// the daemon's own clock (a result that late arrives as `DeadlineMissed`).
    pub late_by_daemon_clock: u64,
    /// Client latency (last byte written → answer read) of every answer.
    pub client: LatencySummary,
    /// Client latency of the results only.
    pub client_results: LatencySummary,
    /// Server `timing.total_us` of the results.
    pub server_total: LatencySummary,
    /// Server `timing.compute_us` of the results.
    pub server_compute: LatencySummary,
    /// Stage 2 (a bundle with a verifier): `Verification` answers, which follow a
    /// trigger frame's own answer with the same request id (not counted as duplicates).
    pub verifications: u64,
    /// Of those, a verified command.
    pub verified_commands: u64,
    /// Of those, `DeadlineMissed`.
    pub verify_misses: u64,
    /// Of those, `Rejected` (stage 2's admission control) or `Failed`.
    pub verify_refused: u64,
    /// Server `timing.total_us` of the verifications (end of the utterance's frame →
    /// write).
    pub verify_total: LatencySummary,
    /// First few problems (late, unanswered, duplicate, error answers).
    pub problems: Vec<String>,
}

impl TallySummary {
    /// All rejections.
    pub fn rejections(&self) -> u64 {
        self.rejected_queue_full + self.rejected_would_miss + self.rejected_other
    }
}

/// A group's counts while its connections are tallied; [`Tally::finish`] summarises.
pub(super) struct Tally {
    pub(super) s: TallySummary,
    client: LatencySeries,
    client_results: LatencySeries,
    server_total: LatencySeries,
    server_compute: LatencySeries,
    verify_total: LatencySeries,
}

impl Tally {
    /// An empty tally for `group` (`all`, `socket` or `pty`).
    pub(super) fn new(group: &str) -> Self {
        Self {
            s: TallySummary {
                group: group.to_owned(),
                ..Default::default()
            },
            client: LatencySeries::new(format!("{group} client")),
            client_results: LatencySeries::new(format!("{group} client (results)")),
            server_total: LatencySeries::new(format!("{group} server total")),
            server_compute: LatencySeries::new(format!("{group} server compute")),
            verify_total: LatencySeries::new(format!("{group} verify total")),
        }
    }

    fn problem(&mut self, p: String) {
        if self.s.problems.len() < 8 {
            self.s.problems.push(p);
        }
    }

    /// The counts, and the percentiles of the latencies recorded.
    pub(super) fn finish(mut self) -> TallySummary {
        self.s.client = self.client.summary();
        self.s.client_results = self.client_results.summary();
        self.s.server_total = self.server_total.summary();
        self.s.server_compute = self.server_compute.summary();
        self.s.verify_total = self.verify_total.summary();
        self.s
    }
}

/// A frame as written.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sent {
    /// Request id.
    pub(super) id: u32,
    /// Stream id.
    pub(super) stream: u16,
    /// Sequence number in the stream.
    pub(super) seq: u32,
    /// When the frame's last byte was written (and flushed).
    pub(super) written: Instant,
}

/// Matches one connection's frames with its answers into `tallies` (every tally in the
/// slice gets the same records: e.g. the run's total and its transport's group).
pub(super) fn tally_conn(
    sent: &[Sent],
    got: &[Answer],
    deadline_us: u64,
    late_after_us: u64,
    desc: &str,
    tallies: &mut [&mut Tally],
) {
    let mut by_id: HashMap<u32, Vec<&Answer>> = HashMap::new();
    for g in got {
        if let AnswerKind::Verification(v) = &g.kind {
            for t in tallies.iter_mut() {
                t.s.verifications += 1;
                match v.outcome {
                    VerifyOutcome::Detected(_) => t.s.verified_commands += 1,
                    VerifyOutcome::NoCommand { .. } => {}
                    VerifyOutcome::DeadlineMissed => t.s.verify_misses += 1,
                    VerifyOutcome::Rejected(_) | VerifyOutcome::Failed => t.s.verify_refused += 1,
                }
                t.verify_total.record(u64::from(v.timing.total_us));
            }
            continue;
        }
        by_id.entry(g.request_id).or_default().push(g);
    }
    for s in sent {
        let answers = by_id.remove(&s.id).unwrap_or_default();
        for t in tallies.iter_mut() {
            t.s.frames += 1;
            match answers.len() {
                0 => {
                    t.s.unanswered += 1;
                    t.problem(format!(
                        "{desc} stream {} seq {}: no answer",
                        s.stream, s.seq
                    ));
                }
                1 => t.s.answered_once += 1,
                k => {
                    t.s.duplicates += 1;
                    t.problem(format!(
                        "{desc} stream {} seq {}: {k} answers",
                        s.stream, s.seq
                    ));
                }
            }
        }
        let Some(a) = answers.first() else { continue };
        let lat_us = a
            .received_at
            .saturating_duration_since(s.written)
            .as_micros() as u64;
        let daemon_us = match &a.kind {
            AnswerKind::Frame(f) => u64::from(f.timing.total_us),
            AnswerKind::DeadlineMissed { elapsed_us, .. } => u64::from(*elapsed_us),
            _ => 0,
        };
        for t in tallies.iter_mut() {
            t.client.record(lat_us);
            if daemon_us > deadline_us {
                t.s.late_by_daemon_clock += 1;
            }
            match &a.kind {
                AnswerKind::Frame(f) => {
                    t.s.results += 1;
                    t.client_results.record(lat_us);
                    t.server_total.record(u64::from(f.timing.total_us));
                    t.server_compute.record(u64::from(f.timing.compute_us));
                }
                AnswerKind::DeadlineMissed { .. } => t.s.misses += 1,
                AnswerKind::Rejected { reason, .. } => match reason {
                    RejectReason::QueueFull => t.s.rejected_queue_full += 1,
                    RejectReason::WouldMissDeadline => t.s.rejected_would_miss += 1,
                    _ => t.s.rejected_other += 1,
                },
                other => {
                    t.s.errors += 1;
                    t.problem(format!(
                        "{desc} stream {} seq {}: {}",
                        s.stream,
                        s.seq,
                        other.describe()
                    ));
                }
            }
            if lat_us > late_after_us {
                t.s.late += 1;
                t.problem(format!(
                    "{desc} stream {} seq {}: LATE {} µs ({})",
                    s.stream,
                    s.seq,
                    lat_us,
                    a.kind.describe()
                ));
            }
        }
    }
    // Whatever is left carries an id the rig never sent as audio.
    for (id, answers) in by_id {
        for t in tallies.iter_mut() {
            t.s.stray += answers.len() as u64;
            t.problem(format!(
                "{desc}: stray answer id {id}: {}",
                answers[0].kind.describe()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn got(request_id: u32, received_at: Instant, kind: AnswerKind) -> Answer {
        Answer {
            request_id,
            kind,
            received_at,
        }
    }

    #[test]
    fn tally_counts_late_unanswered_duplicates_and_stray() {
        let t0 = Instant::now();
        let sent: Vec<Sent> = (0..5)
            .map(|i| Sent {
                id: 10 + i,
                stream: 1,
                seq: i,
                written: t0,
            })
            .collect();
        let miss = AnswerKind::DeadlineMissed {
            stream_id: 1,
            seq: 0,
            elapsed_us: 29_500,
        };
        let rej = AnswerKind::Rejected {
            stream_id: 1,
            seq: 1,
            reason: RejectReason::WouldMissDeadline,
        };
        let answers = vec![
            got(10, t0 + Duration::from_millis(29), miss.clone()),
            got(11, t0 + Duration::from_micros(100), rej.clone()),
            // 12: late (33 ms > 30 + 2).
            got(12, t0 + Duration::from_millis(33), miss.clone()),
            // 13: twice.
            got(13, t0 + Duration::from_millis(1), rej.clone()),
            got(13, t0 + Duration::from_millis(2), rej),
            // 14: none. 99: stray.
            got(99, t0, miss),
        ];
        let mut all = Tally::new("all");
        tally_conn(&sent, &answers, 30_000, 32_000, "test", &mut [&mut all]);
        let s = all.finish();
        assert_eq!(s.frames, 5);
        assert_eq!(s.answered_once, 3);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.unanswered, 1);
        assert_eq!(s.stray, 1);
        assert_eq!(s.misses, 2);
        assert_eq!(s.rejected_would_miss, 2);
        assert_eq!(s.late, 1);
        assert_eq!(s.client.count, 4);
        assert_eq!(s.client.max_us, 33_000);
    }

    #[test]
    fn a_verification_after_its_trigger_frame_is_tallied_apart_not_as_a_duplicate() {
        let t0 = Instant::now();
        let sent = [Sent {
            id: 7,
            stream: 1,
            seq: 3,
            written: t0,
        }];
        let frame = AnswerKind::Rejected {
            stream_id: 1,
            seq: 3,
            reason: RejectReason::QueueFull,
        };
        let verification = |outcome| {
            AnswerKind::Verification(outpost_protocol::Verification {
                stream_id: 1,
                trigger_seq: 3,
                trigger_label: 0,
                end_seq: 4,
                outcome,
                deadline_us: 250_000,
                timing: outpost_protocol::Timing {
                    queue_us: 10,
                    compute_us: 80_000,
                    total_us: 90_000,
                },
            })
        };
        let answers = vec![
            got(7, t0 + Duration::from_millis(1), frame),
            got(
                7,
                t0 + Duration::from_millis(170),
                verification(VerifyOutcome::NoCommand {
                    best_label: 0,
                    margin: -1.0,
                }),
            ),
            got(7, t0, verification(VerifyOutcome::DeadlineMissed)),
        ];
        let mut all = Tally::new("all");
        tally_conn(&sent, &answers, 30_000, 32_000, "test", &mut [&mut all]);
        let s = all.finish();
        assert_eq!((s.answered_once, s.duplicates, s.late), (1, 0, 0));
        assert_eq!(
            (s.verifications, s.verify_misses, s.verified_commands),
            (2, 1, 0)
        );
        assert_eq!(s.verify_total.max_us, 90_000);
    }
}
