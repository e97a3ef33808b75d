//! The scheduling policy (`outpost_runtime::edf`) on embassy-time's mock driver: time
//! moves only when a test advances it, so ordering, admission, expiry, cancellation and
//! state resets are checked exactly, with no sleeps and no flakiness.
//!
//! The mock clock is global, so tests take a lock and reset it first.

use std::sync::Mutex;

use embassy_time::{Duration, Instant, MockDriver};
use outpost_protocol::RejectReason;
use outpost_runtime::edf::{
    Admission, CostEstimate, Edf, EdfConfig, OpenError, StreamKey, PROBE_INTERVAL,
    PROBE_MIN_BUDGET, STREAM_QUEUE_CAPACITY,
};

static CLOCK: Mutex<()> = Mutex::new(());

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn us(v: u64) -> Duration {
    Duration::from_micros(v)
}

fn key(conn: u64, stream: u16) -> StreamKey {
    StreamKey { conn, stream }
}

/// Fresh clock at 0 and a policy with `workers` workers, capacity 8, guard 0.5 ms.
fn setup(workers: usize) -> (std::sync::MutexGuard<'static, ()>, Edf<&'static str>) {
    let guard = CLOCK.lock().unwrap_or_else(|p| p.into_inner());
    MockDriver::get().reset();
    let edf = Edf::new(EdfConfig {
        queue_capacity: 8,
        max_streams: 4,
        workers,
        guard: us(500),
    });
    (guard, edf)
}

fn advance(d: Duration) {
    MockDriver::get().advance(d);
}

/// Per-frame estimates in ms: typical, WCET, spread (standard deviation).
fn cost_ms(typical: u64, wcet: u64, spread: u64) -> CostEstimate {
    CostEstimate {
        typical: ms(typical),
        wcet: ms(wcet),
        spread: ms(spread),
    }
}

fn at(d: Duration) -> Instant {
    Instant::from_ticks(0) + d
}

#[test]
fn earliest_deadline_first_across_streams() {
    let (_g, mut e) = setup(1);
    for s in 1..=3 {
        e.open(key(1, s)).unwrap();
    }
    e.push(key(1, 1), at(ms(30)), "a").unwrap();
    e.push(key(1, 2), at(ms(10)), "b").unwrap();
    e.push(key(1, 3), at(ms(20)), "c").unwrap();
    let mut order = Vec::new();
    while let Some(p) = e.pick() {
        order.push(p.job);
        e.finish(p.key, true, false);
    }
    assert_eq!(order, ["b", "c", "a"]);
}

#[test]
fn order_is_kept_within_a_stream_and_a_later_shorter_deadline_raises_it() {
    let (_g, mut e) = setup(1);
    e.open(key(1, 1)).unwrap();
    e.open(key(1, 2)).unwrap();
    e.push(key(1, 1), at(ms(30)), "a1").unwrap();
    e.push(key(1, 1), at(ms(5)), "a2").unwrap(); // urgent, but behind a1 in its stream
    e.push(key(1, 2), at(ms(10)), "b1").unwrap();
    let p = e.pick().unwrap();
    assert_eq!(
        p.job, "a1",
        "stream 1 holds the earliest deadline; its oldest frame goes first"
    );
    // While stream 1 runs, its next frame waits; stream 2 goes to the next worker.
    assert_eq!(e.pick().unwrap().job, "b1");
    assert!(e.pick().is_none());
    e.finish(key(1, 1), true, false);
    assert_eq!(e.pick().unwrap().job, "a2");
}

#[test]
fn ties_go_to_the_lower_stream_key() {
    let (_g, mut e) = setup(1);
    e.open(key(2, 1)).unwrap();
    e.open(key(1, 9)).unwrap();
    e.push(key(2, 1), at(ms(10)), "late-key").unwrap();
    e.push(key(1, 9), at(ms(10)), "early-key").unwrap();
    assert_eq!(e.pick().unwrap().job, "early-key");
}

#[test]
fn admission_charges_queued_work_and_the_remaining_time_of_running_frames() {
    let (_g, mut e) = setup(1);
    let wcet = ms(10);
    e.open(key(1, 1)).unwrap();
    e.open(key(1, 2)).unwrap();
    // Two frames of other streams: 10 + 10 + own 10 = 30 ms > 29.5 ms.
    e.push(key(1, 1), at(ms(30)), "x").unwrap();
    e.push(key(1, 1), at(ms(30)), "y").unwrap();
    assert!(matches!(
        e.admit(key(1, 2), at(ms(30)), CostEstimate::worst_case(wcet)),
        Admission::Reject {
            reason: RejectReason::WouldMissDeadline,
            ..
        }
    ));
    // One starts running; 6 ms later it has at most 4 ms left: 4 + 10 + 10 = 24 ms,
    // ending at 30 ms absolute, which is after the 29.5 ms cutoff of a deadline at 30.
    e.pick().unwrap();
    advance(ms(6));
    assert!(matches!(
        e.admit(key(1, 2), at(ms(30)), CostEstimate::worst_case(wcet)),
        Admission::Reject { .. }
    ));
    // A deadline at 36 ms: 6 + 24 = 30 <= 35.5: admitted.
    assert_eq!(
        e.admit(key(1, 2), at(ms(36)), CostEstimate::worst_case(wcet)),
        Admission::Admit
    );
}

#[test]
fn admission_charges_queued_frames_their_typical_cost_and_its_own_the_wcet() {
    let (_g, mut e) = setup(2);
    let cost = cost_ms(3, 9, 0);
    for s in 1..=4 {
        e.open(key(1, s)).unwrap();
    }
    // Nothing ahead and a worker free: it starts at once, charged its typical 3 ms.
    assert_eq!(e.admit(key(1, 4), at(ms(4)), cost), Admission::Admit);
    assert!(matches!(
        e.admit(key(1, 4), at(ms(3)), cost),
        Admission::Reject { .. }
    ));
    // Six frames of other streams ahead: 6 x 3 / 2 workers = 9, + own 9 = 18 ms.
    // Charging each the WCET would give 6 x 9 / 2 + 9 = 36 ms.
    for s in 1..=3 {
        e.push(key(1, s), at(ms(10)), "q").unwrap();
        e.push(key(1, s), at(ms(10)), "q").unwrap();
    }
    assert_eq!(e.admit(key(1, 4), at(ms(19)), cost), Admission::Admit);
    assert!(matches!(
        e.admit(key(1, 4), at(ms(18)), cost),
        Admission::Reject {
            reason: RejectReason::WouldMissDeadline,
            ..
        }
    ));
    // The worst-case model refuses the same frame even with a 35 ms deadline.
    assert!(matches!(
        e.admit(key(1, 4), at(ms(36)), CostEstimate::worst_case(ms(9))),
        Admission::Reject { .. }
    ));
}

#[test]
fn the_queued_frames_are_charged_three_standard_deviations_of_their_sum() {
    let (_g, mut e) = setup(2);
    let cost = cost_ms(3, 9, 1);
    for s in 1..=4 {
        e.open(key(1, s)).unwrap();
    }
    // Nothing ahead: no margin, it starts at once at its typical 3 ms (cut-off:
    // deadline - 0.5 ms guard).
    assert_eq!(e.admit(key(1, 4), at(ms(4)), cost), Admission::Admit);
    // Three frames of other streams ahead: (3 x 3 + 3 x 1 x sqrt(3)) / 2 workers
    // = 7.1 ms, + own 9 = 16.1 ms; without the margin 4.5 + 9 = 13.5 ms.
    for s in 1..=3 {
        e.push(key(1, s), at(ms(10)), "q").unwrap();
    }
    assert_eq!(e.admit(key(1, 4), at(ms(17)), cost), Admission::Admit);
    assert!(matches!(
        e.admit(key(1, 4), at(ms(16)), cost),
        Admission::Reject {
            reason: RejectReason::WouldMissDeadline,
            ..
        }
    ));
    let no_spread = CostEstimate {
        spread: ms(0),
        ..cost
    };
    assert_eq!(e.admit(key(1, 4), at(ms(14)), no_spread), Admission::Admit);
    // One more queued in its own stream: four ahead, (4 x 3 + 3 x 1 x 2) / 2 = 9 ms,
    // + own 9 = 18 ms; its own stream alone (3 + 3 x 1 + 9 = 15 ms) is less.
    e.push(key(1, 4), at(ms(10)), "own").unwrap();
    assert_eq!(e.admit(key(1, 4), at(ms(19)), cost), Admission::Admit);
    assert!(matches!(
        e.admit(key(1, 4), at(ms(18)), cost),
        Admission::Reject { .. }
    ));
}

#[test]
fn a_running_frame_past_its_typical_cost_is_charged_up_to_the_wcet() {
    let (_g, mut e) = setup(1);
    let cost = cost_ms(3, 9, 0);
    e.open(key(1, 1)).unwrap();
    e.open(key(1, 2)).unwrap();
    e.push(key(1, 1), at(ms(100)), "r").unwrap();
    e.pick().unwrap();
    // 1 ms in: 2 ms typical left + own 9 = 11 ms from now, 12 ms absolute.
    advance(ms(1));
    assert_eq!(e.admit(key(1, 2), at(ms(13)), cost), Admission::Admit);
    assert!(matches!(
        e.admit(key(1, 2), at(ms(12)), cost),
        Admission::Reject { .. }
    ));
    // 5 ms in, past typical: up to 9 - 5 = 4 ms left + own 9 = 13 ms from now, 18 ms
    // absolute.
    advance(ms(4));
    assert_eq!(e.admit(key(1, 2), at(ms(19)), cost), Admission::Admit);
    assert!(matches!(
        e.admit(key(1, 2), at(ms(18)), cost),
        Admission::Reject { .. }
    ));
}

#[test]
fn a_wcet_below_typical_is_raised_to_it() {
    let (_g, mut e) = setup(1);
    e.open(key(1, 1)).unwrap();
    let cost = cost_ms(5, 1, 0);
    // One frame queued ahead in its own stream: 5 ms typical + own WCET raised to 5 ms.
    e.push(key(1, 1), at(ms(100)), "ahead").unwrap();
    assert!(matches!(
        e.admit(key(1, 1), at(ms(10)), cost),
        Admission::Reject { .. }
    ));
    assert_eq!(e.admit(key(1, 1), at(ms(11)), cost), Admission::Admit);
}

#[test]
fn a_wcet_above_the_budget_refuses_only_frames_that_would_wait() {
    // One stalled frame made the WCET 40 ms, past a 30 ms deadline; the usual frame
    // still costs 3 ms.
    let (_g, mut e) = setup(1);
    let cost = cost_ms(3, 40, 0);
    e.open(key(1, 1)).unwrap();
    e.open(key(1, 2)).unwrap();
    // Idle: it would start at once, delays no one, and is charged its typical 3 ms.
    assert_eq!(e.admit(key(1, 2), at(ms(30)), cost), Admission::Admit);
    // A frame of another stream with an earlier deadline is queued ahead: it would
    // wait, so its own WCET counts and it is refused.
    e.push(key(1, 1), at(ms(20)), "ahead").unwrap();
    assert!(matches!(
        e.admit(key(1, 2), at(ms(30)), cost),
        Admission::Reject {
            reason: RejectReason::WouldMissDeadline,
            ..
        }
    ));
    // The frame ahead runs on the only worker: still refused.
    e.pick().unwrap();
    assert!(matches!(
        e.admit(key(1, 2), at(ms(30)), cost),
        Admission::Reject { .. }
    ));
    // It finished; idle again, admitted again.
    advance(ms(3));
    e.finish(key(1, 1), true, false);
    assert_eq!(e.admit(key(1, 2), at(ms(33)), cost), Admission::Admit);
}

#[test]
fn an_idle_queue_admits_one_probe_per_interval_whatever_the_estimates() {
    // Even the typical cost (40 ms) is past the 30 ms budget: nothing would ever run
    // and the estimates would never be measured again.
    let (_g, mut e) = setup(1);
    let cost = CostEstimate::worst_case(ms(40));
    e.open(key(1, 1)).unwrap();
    let refused = |e: &Edf<&'static str>, deadline| {
        matches!(
            e.admit(key(1, 1), deadline, cost),
            Admission::Reject {
                reason: RejectReason::WouldMissDeadline,
                ..
            }
        )
    };
    // Within the first interval after the queue was made: refused.
    advance(PROBE_INTERVAL - ms(1));
    assert!(refused(&e, Instant::now() + ms(30)));
    // A full interval without a start: one probe is admitted.
    advance(ms(1));
    let d = Instant::now() + ms(30);
    assert_eq!(e.admit(key(1, 1), d, cost), Admission::Admit);
    e.push(key(1, 1), d, "probe").unwrap();
    // Not while the probe is queued or running (it would wait behind it).
    assert!(refused(&e, Instant::now() + ms(30)));
    e.pick().unwrap();
    advance(ms(5));
    assert!(refused(&e, Instant::now() + ms(30)));
    e.finish(key(1, 1), true, false);
    // Idle again, but the last start is 5 ms old: refused until the interval is up.
    assert!(refused(&e, Instant::now() + ms(30)));
    advance(PROBE_INTERVAL - ms(5));
    assert_eq!(
        e.admit(key(1, 1), Instant::now() + ms(30), cost),
        Admission::Admit
    );
    // A probe needs PROBE_MIN_BUDGET before its cut-off (deadline - 0.5 ms guard).
    assert!(refused(&e, Instant::now() + PROBE_MIN_BUDGET + us(400)));
    assert_eq!(
        e.admit(key(1, 1), Instant::now() + PROBE_MIN_BUDGET + us(500), cost),
        Admission::Admit
    );
}

#[test]
fn a_frame_on_a_free_worker_is_charged_its_typical_cost_alone() {
    let (_g, mut e) = setup(2);
    let cost = cost_ms(3, 9, 0);
    e.open(key(1, 1)).unwrap();
    e.open(key(1, 2)).unwrap();
    e.push(key(1, 1), at(ms(100)), "r").unwrap();
    e.pick().unwrap();
    // Stream 1 runs on one worker; a frame of stream 2 starts on the other at once:
    // 3 ms, not (3 ms left of the running frame) / 2 workers + its 9 ms WCET.
    assert_eq!(e.admit(key(1, 2), at(ms(4)), cost), Admission::Admit);
    assert!(matches!(
        e.admit(key(1, 2), at(ms(3)), cost),
        Admission::Reject { .. }
    ));
    // A frame of stream 1 waits for its own running frame, worker free or not:
    // 3 ms left + its 9 ms WCET.
    assert_eq!(e.admit(key(1, 1), at(ms(13)), cost), Admission::Admit);
    assert!(matches!(
        e.admit(key(1, 1), at(ms(12)), cost),
        Admission::Reject { .. }
    ));
    // Any frame queued, even one with a later deadline: it no longer starts at once.
    e.push(key(1, 1), at(ms(100)), "later").unwrap();
    assert!(matches!(
        e.admit(key(1, 2), at(ms(10)), cost),
        Admission::Reject { .. }
    ));
}

#[test]
fn frames_later_than_the_arrival_do_not_count_against_it() {
    let (_g, mut e) = setup(1);
    e.open(key(1, 1)).unwrap();
    e.open(key(1, 2)).unwrap();
    for _ in 0..5 {
        e.push(key(1, 1), at(ms(100)), "later").unwrap();
    }
    // Only its own 10 ms: the queued frames of stream 1 have later deadlines.
    assert_eq!(
        e.admit(key(1, 2), at(ms(30)), CostEstimate::worst_case(ms(10))),
        Admission::Admit
    );
}

#[test]
fn one_streams_frames_are_serial_even_with_idle_workers() {
    let (_g, mut e) = setup(4);
    e.open(key(1, 1)).unwrap();
    e.push(key(1, 1), at(ms(30)), "1").unwrap();
    e.push(key(1, 1), at(ms(30)), "2").unwrap();
    // 10 + 10 ahead in its own stream + 10 = 30 > 29.5, although 4 workers are idle.
    assert!(matches!(
        e.admit(key(1, 1), at(ms(30)), CostEstimate::worst_case(ms(10))),
        Admission::Reject { .. }
    ));
    assert_eq!(
        e.admit(key(1, 1), at(ms(31)), CostEstimate::worst_case(ms(10))),
        Admission::Admit
    );
}

#[test]
fn a_full_queue_refuses_with_queue_full() {
    let (_g, mut e) = setup(1);
    e.open(key(1, 1)).unwrap();
    for _ in 0..8 {
        e.push(key(1, 1), at(ms(1000)), "f").unwrap();
    }
    assert_eq!(
        e.admit(key(1, 1), at(ms(1000)), CostEstimate::worst_case(us(1))),
        Admission::Reject {
            reason: RejectReason::QueueFull,
            retry_after: us(1)
        }
    );
}

#[test]
fn one_streams_queue_is_bounded_even_when_the_global_queue_has_room() {
    let (_g, _) = setup(1);
    let mut e: Edf<u32> = Edf::new(EdfConfig {
        queue_capacity: 64,
        max_streams: 4,
        workers: 1,
        guard: us(500),
    });
    e.open(key(1, 1)).unwrap();
    e.open(key(1, 2)).unwrap();
    for i in 0..STREAM_QUEUE_CAPACITY as u32 {
        e.push(key(1, 1), at(ms(1000)), i).unwrap();
    }
    assert_eq!(
        e.admit(key(1, 1), at(ms(1000)), CostEstimate::worst_case(us(1))),
        Admission::Reject {
            reason: RejectReason::QueueFull,
            retry_after: us(1)
        }
    );
    assert_eq!(e.push(key(1, 1), at(ms(1000)), 99), Err(99), "given back");
    // Another stream still has room.
    assert_eq!(
        e.admit(key(1, 2), at(ms(1000)), CostEstimate::worst_case(us(1))),
        Admission::Admit
    );
    // The queue keeps its order.
    let order: Vec<u32> = std::iter::from_fn(|| {
        let p = e.pick()?;
        e.finish(p.key, true, false);
        Some(p.job)
    })
    .collect();
    assert_eq!(order, (0..STREAM_QUEUE_CAPACITY as u32).collect::<Vec<_>>());
}

#[test]
fn a_queued_frame_expires_at_its_deadline_minus_the_guard_and_resets_its_stream() {
    let (_g, mut e) = setup(1);
    e.open(key(1, 1)).unwrap();
    let first = e.push(key(1, 1), at(ms(30)), "first");
    assert!(first.is_ok());
    // A fresh stream starts with fresh state.
    // (Consume that flag with a frame that completes.)
    e.push(key(1, 1), at(ms(60)), "second").unwrap();
    assert_eq!(e.next_expiry(), Some(at(ms(30) - us(500))));
    advance(ms(29));
    assert!(e.take_expired().is_empty());
    advance(us(600)); // 29.6 ms: past 29.5
    assert_eq!(e.take_expired(), vec![(key(1, 1), "first")]);
    assert!(e.take_expired().is_empty(), "reported once");
    let p = e.pick().unwrap();
    assert_eq!(p.job, "second");
    assert!(
        p.reset_state,
        "the stream missed a frame: its state restarts"
    );
}

#[test]
fn an_overrunning_frame_is_reported_once_and_its_stream_restarts() {
    let (_g, mut e) = setup(1);
    e.open(key(1, 1)).unwrap();
    e.push(key(1, 1), at(ms(30)), "slow").unwrap();
    let p = e.pick().unwrap();
    assert!(p.reset_state, "first frame of a stream starts fresh");
    e.push(key(1, 1), at(ms(110)), "next").unwrap();
    advance(ms(29) + us(499));
    assert!(e.take_overrunning().is_empty());
    advance(us(1));
    assert_eq!(
        e.take_overrunning(),
        vec![(key(1, 1), "slow")],
        "cancel at 29.5 ms"
    );
    assert!(e.take_overrunning().is_empty(), "reported once");
    // The worker comes back with a cancelled (inconsistent) run.
    e.finish(key(1, 1), false, false);
    let p = e.pick().unwrap();
    assert_eq!(p.job, "next");
    assert!(p.reset_state);
    // A frame that completes keeps the state for the one after.
    e.finish(key(1, 1), true, false);
    e.push(key(1, 1), at(ms(200)), "after").unwrap();
    assert!(!e.pick().unwrap().reset_state);
}

#[test]
fn streams_are_bounded_and_ids_unique() {
    let (_g, mut e) = setup(1);
    for s in 1..=4 {
        e.open(key(1, s)).unwrap();
    }
    assert_eq!(e.open(key(1, 1)), Err(OpenError::Exists));
    assert_eq!(e.open(key(2, 1)), Err(OpenError::TooMany { max: 4 }));
    assert!(e.push(key(9, 9), at(ms(30)), "nobody").is_err());
}

#[test]
fn a_closed_stream_finishes_its_queue_and_a_dropped_connection_returns_its_frames() {
    let (_g, mut e) = setup(1);
    e.open(key(1, 1)).unwrap();
    e.open(key(2, 1)).unwrap();
    e.push(key(1, 1), at(ms(30)), "closing").unwrap();
    e.push(key(2, 1), at(ms(30)), "gone-1").unwrap();
    e.push(key(2, 1), at(ms(40)), "gone-2").unwrap();
    assert_eq!(e.close(key(1, 1)), Some((0, 0)));
    assert!(!e.is_open(key(1, 1)));
    assert_eq!(e.drop_connection(2), vec!["gone-1", "gone-2"]);
    assert_eq!(e.queued(), 1);
    let p = e.pick().unwrap();
    assert_eq!(
        p.job, "closing",
        "queued frames of a closed stream still run"
    );
    e.finish(p.key, true, true);
    assert_eq!(e.open_streams(), 0);
    assert_eq!(e.open(key(1, 1)), Ok(()), "the id is free again");
}

#[test]
fn a_stream_reopened_while_its_last_frames_run_keeps_them_and_the_counts_stay_true() {
    let (_g, mut edf) = setup(1);
    let k = key(1, 1);
    edf.open(k).unwrap();
    edf.push(k, at(ms(30)), "old-0").unwrap();
    edf.push(k, at(ms(40)), "old-1").unwrap();
    let p = edf.pick().unwrap();
    assert_eq!(p.job, "old-0");
    assert_eq!(edf.close(k), Some((0, 0)));
    // Reopened before its closed self went idle: the queued and running frames stay.
    edf.open(k).unwrap();
    assert!(edf.is_open(k));
    assert_eq!((edf.queued(), edf.running()), (1, 1));
    edf.push(k, at(ms(50)), "new-0").unwrap();
    edf.finish(k, true, false);
    let next = edf.pick().unwrap();
    assert_eq!(next.job, "old-1");
    assert!(next.reset_state, "the new stream starts from fresh state");
    edf.finish(k, true, false);
    assert_eq!(edf.pick().unwrap().job, "new-0");
    edf.finish(k, true, true);
    assert_eq!((edf.queued(), edf.running()), (0, 0));
    // Frames finished since the reopen: the old stream's last two, then the new one.
    assert_eq!(edf.close(k), Some((3, 1)));
    assert_eq!(edf.open_streams(), 0);
}
