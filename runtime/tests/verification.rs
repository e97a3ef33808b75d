//! Stage 2 in the scheduler with a fake pipeline and a fake verifier: a trigger becomes
//! one `Verification` answer with the trigger frame's request id (the frame's own answer
//! carries no detection), on the audio window that ends at the trigger; a verifier that
//! stalls is answered `DeadlineMissed` by its deadline and cancelled while frames keep
//! their results; a full verification queue refuses at once; the close counts verified
//! commands; an early verification answers a confident command at the trigger frame and
//! is otherwise silent, leaving the answer to the verification at the end of the
//! utterance, or, as the early fallback, answers the early command when the end hears none;
//! an utterance stage 1 never fired on is verified where it ends, and answered only for a
//! command (or when it cannot be verified).
//!
//! Real threads and the std clock: outcomes are asserted, not durations (beyond a
//! generous bound on "by its deadline").

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outpost_protocol::{RejectReason, Response, Stage, Verification, VerifyOutcome};
use outpost_runtime::decision::Decided;
use outpost_runtime::pipeline::{stream_time_ms, CancelToken, FrameOutput};
use outpost_runtime::scheduler::{
    Counters, FrameJob, FrameProcessor, ResponseSink, Scheduler, SchedulerConfig, StreamKey,
    UtteranceVerify, VerifyConfig, VerifyOutput, WindowVerifier,
};
use outpost_runtime::stats::LatencyStats;
use outpost_runtime::RuntimeError;

/// Samples per frame.
const N: usize = 1280;
/// A frame whose first sample is this triggers stage 1 with label [`TRIGGER_LABEL`].
const TRIGGER: i16 = 1111;
const TRIGGER_LABEL: usize = 3;
/// The verifier accepts (label [`VERIFIED_LABEL`]) a window whose last frame has this as
/// its second sample, stalls 2 s (unless cancelled) on [`STALL`], and hears no command
/// otherwise.
const ACCEPT: i16 = 2222;
const STALL: i16 = 3333;
/// As [`ACCEPT`] but with a margin of [`WEAK_MARGIN`] nats, below [`EARLY_THETA`].
const WEAK: i16 = 5555;
const WEAK_MARGIN: f32 = 3.0;
/// As [`ACCEPT`] after 150 ms of compute.
const SLOW_ACCEPT: i16 = 6666;
/// As [`WEAK`] after 150 ms of compute.
const SLOW_WEAK: i16 = 7777;
/// Hears no command after 300 ms, cancelled or not (a run that stops late).
const STUBBORN: i16 = 8888;
/// As [`ACCEPT`] (margin 9 nats over `none`), but the runner-up command is within
/// [`CLOSE_GAP`] nats (`lights o…`: `on` and `off` alike).
const AMBIGUOUS: i16 = 9999;
const CLOSE_GAP: f32 = 1.0;
const EARLY_THETA: f32 = 4.0;
const EARLY_GAP: f32 = 4.0;
const VERIFIED_LABEL: usize = 2;
/// The fake verifier's window: 3 frames.
const WINDOW: usize = 3 * N;
/// A frame whose third sample is this is speech (VAD 0.9); others are silence (VAD 0).
const SPEECH: i16 = 4444;

#[derive(Default)]
struct Sink {
    frames: Mutex<Vec<(u32, u32, bool)>>,
    verifications: Mutex<Vec<(u32, Verification, Instant)>>,
    /// Request ids in the order answers were sent; `true` for a verification.
    order: Mutex<Vec<(u32, bool)>>,
}

impl ResponseSink for Sink {
    fn send(&self, id: u32, r: &Response<'_>) {
        self.order
            .lock()
            .unwrap()
            .push((id, matches!(r, Response::Verification(_))));
        match r {
            Response::Frame(f) => {
                self.frames
                    .lock()
                    .unwrap()
                    .push((id, f.seq, f.detection.is_some()));
            }
            Response::Verification(v) => {
                self.verifications
                    .lock()
                    .unwrap()
                    .push((id, *v, Instant::now()));
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
}

struct Frames;

impl FrameProcessor for Frames {
    type State = ();
    fn new_stream(&self) {}
    fn cancel_token(&self) -> CancelToken {
        CancelToken::default()
    }
    fn process(
        &mut self,
        _: &mut (),
        pcm: &[i16],
        _: &CancelToken,
    ) -> Result<FrameOutput, RuntimeError> {
        std::thread::sleep(Duration::from_micros(500));
        Ok(FrameOutput {
            vad_prob: if pcm[2] == SPEECH { 0.9 } else { 0.0 },
            detection: (pcm[0] == TRIGGER).then_some(Decided {
                label: TRIGGER_LABEL,
                score: 1.0,
            }),
            audio_ms: 0,
            stage_us: [100, 100, 200, 100],
            scores: [0.0; 32],
            scores_len: 0,
        })
    }
}

/// Records every window it was given.
struct FakeVerifier {
    windows: Arc<Mutex<Vec<Vec<i16>>>>,
    cancelled: Arc<AtomicU32>,
}

impl WindowVerifier for FakeVerifier {
    fn window_samples(&self) -> usize {
        WINDOW
    }
    fn cancel_token(&self) -> CancelToken {
        CancelToken::default()
    }
    fn verify(
        &mut self,
        window: &[i16],
        cancel: &CancelToken,
    ) -> Result<VerifyOutput, RuntimeError> {
        self.windows.lock().unwrap().push(window.to_vec());
        let last = &window[window.len() - N..];
        if last[1] == STALL {
            let end = Instant::now() + Duration::from_secs(2);
            while Instant::now() < end {
                if cancel.is_cancelled() {
                    self.cancelled.fetch_add(1, Ordering::SeqCst);
                    return Err(RuntimeError::Inference {
                        stage: Stage::Verifier,
                        detail: "terminated".into(),
                    });
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if last[1] == SLOW_ACCEPT || last[1] == SLOW_WEAK {
            std::thread::sleep(Duration::from_millis(150));
        }
        if last[1] == STUBBORN {
            std::thread::sleep(Duration::from_millis(300));
        }
        let margin = match last[1] {
            ACCEPT | SLOW_ACCEPT | AMBIGUOUS => 9.0,
            WEAK | SLOW_WEAK => WEAK_MARGIN,
            _ => -1.5,
        };
        Ok(VerifyOutput {
            label: (margin > 0.0).then_some(VERIFIED_LABEL),
            best: VERIFIED_LABEL,
            margin,
            command_gap: if last[1] == AMBIGUOUS { CLOSE_GAP } else { 6.0 },
            compute_us: 5_000,
        })
    }
}

struct Rig {
    sched: Scheduler<()>,
    sink: Arc<Sink>,
    windows: Arc<Mutex<Vec<Vec<i16>>>>,
    cancelled: Arc<AtomicU32>,
    counters: Arc<Counters>,
}

fn rig(verify: VerifyConfig) -> Rig {
    let windows = Arc::new(Mutex::new(Vec::new()));
    let cancelled = Arc::new(AtomicU32::new(0));
    let counters = Arc::new(Counters::default());
    let verifier = FakeVerifier {
        windows: Arc::clone(&windows),
        cancelled: Arc::clone(&cancelled),
    };
    let sched = Scheduler::start_with_verifier(
        vec![Frames, Frames],
        vec![Box::new(verifier) as Box<dyn WindowVerifier>],
        Some(verify),
        SchedulerConfig::default(),
        Arc::new(LatencyStats::new()),
        Arc::clone(&counters),
    );
    Rig {
        sched,
        sink: Arc::new(Sink::default()),
        windows,
        cancelled,
        counters,
    }
}

fn config(deadline_ms: u32, queue_capacity: usize) -> VerifyConfig {
    VerifyConfig {
        deadline_us: deadline_ms * 1000,
        end_of_speech_vad: 0.5,
        max_wait_frames: 2,
        early_theta: None,
        early_command_gap: 0.0,
        early_fallback_gap: None,
        command_gap: 0.0,
        utterance: None,
        queue_capacity,
        initial_wcet_us: 5_000,
        initial_typical_us: 5_000,
        initial_spread_us: 0,
    }
}

/// Frame `seq` of a stream: every sample `seq`, except the markers.
fn pcm(seq: u32, first: i16, second: i16) -> Vec<i16> {
    let mut p = vec![seq as i16; N];
    p[0] = first;
    p[1] = second;
    p
}

/// As [`pcm`], a frame of speech.
fn speech(seq: u32, first: i16, second: i16) -> Vec<i16> {
    let mut p = pcm(seq, first, second);
    p[2] = SPEECH;
    p
}

impl Rig {
    /// Submits one frame and waits for its answer (one in flight, as a client does).
    fn frame(&self, key: StreamKey, seq: u32, first: i16, second: i16) {
        self.submit(key, seq, pcm(seq, first, second));
    }

    /// As [`Rig::frame`], a frame of speech.
    fn speech(&self, key: StreamKey, seq: u32, first: i16, second: i16) {
        self.submit(key, seq, speech(seq, first, second));
    }

    fn submit(&self, key: StreamKey, seq: u32, pcm: Vec<i16>) {
        let before = self.sink.frames.lock().unwrap().len();
        self.sched.submit(FrameJob {
            key,
            request_id: 1000 * key.stream as u32 + seq + 1,
            seq,
            pcm,
            arrived: embassy_time::Instant::now(),
            deadline_us: 30_000,
            sink: Arc::clone(&self.sink) as Arc<dyn ResponseSink>,
        });
        let until = Instant::now() + Duration::from_secs(5);
        while self.sink.frames.lock().unwrap().len() == before {
            assert!(Instant::now() < until, "frame {seq} unanswered");
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Waits until the verifier has started `n` verifications.
    fn wait_windows(&self, n: usize) {
        let until = Instant::now() + Duration::from_secs(5);
        while self.windows.lock().unwrap().len() < n {
            assert!(Instant::now() < until, "verification {n} never started");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Frames 0 (trigger, early verdict `early`) and 1 of speech, then frame 2 of silence
    /// (final verdict `last`): asserts nothing is answered before frame 2 ends the utterance,
    /// and that the one answer is the final window's detection (trigger 0, end 2).
    fn early_silent_then_final_detects(&self, key: StreamKey, early: i16, last: i16) {
        self.speech(key, 0, TRIGGER, early);
        self.speech(key, 1, 0, 0);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            self.sink.verifications.lock().unwrap().is_empty(),
            "no answer before the end of the utterance"
        );
        self.frame(key, 2, 0, last);
        let v = self.wait_verifications(1);
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].1.trigger_seq, v[0].1.end_seq), (0, 2));
        assert_eq!(detected_label(v[0].1.outcome), Some(VERIFIED_LABEL as u8));
    }

    fn wait_verifications(&self, n: usize) -> Vec<(u32, Verification, Instant)> {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.sink.verifications.lock().unwrap().clone();
            if v.len() >= n || Instant::now() > until {
                return v;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn key(stream: u16) -> StreamKey {
    StreamKey { conn: 1, stream }
}

#[test]
fn a_trigger_is_verified_on_the_window_ending_at_it_and_answered_with_its_request_id() {
    let r = rig(config(250, 8));
    let k = key(7);
    r.sched.open_stream(k).unwrap();
    for seq in 0..5 {
        r.frame(k, seq, 0, 0);
    }
    r.frame(k, 5, TRIGGER, ACCEPT);
    for seq in 6..8 {
        r.frame(k, seq, 0, 0);
    }
    let v = r.wait_verifications(1);
    assert_eq!(v.len(), 1, "one verification per trigger");
    let (id, ver, _) = v[0];
    assert_eq!(id, 7006, "the trigger frame's request id");
    assert_eq!(ver.trigger_seq, 5);
    assert_eq!(
        ver.end_seq, 5,
        "silence on the trigger frame: speech has ended"
    );
    assert_eq!(ver.trigger_label, TRIGGER_LABEL as u8);
    assert_eq!(ver.deadline_us, 250_000);
    match ver.outcome {
        VerifyOutcome::Detected(d) => {
            assert_eq!(d.label, VERIFIED_LABEL as u8);
            assert_eq!(d.score, 9.0, "the margin in nats");
            assert_eq!(d.audio_ms, stream_time_ms(5));
        }
        other => panic!("expected a detection, got {other:?}"),
    }
    assert_eq!(ver.timing.compute_us, 5_000);
    assert!(ver.timing.total_us > 0, "stamped at the write");
    // The frame answers carry no detection, the trigger's included.
    let frames = r.sink.frames.lock().unwrap().clone();
    assert_eq!(frames.len(), 8);
    assert!(
        frames.iter().all(|(_, _, detected)| !detected),
        "{frames:?}"
    );
    // The window: frames 3, 4 and 5, in order, the trigger frame last.
    let w = r.windows.lock().unwrap()[0].clone();
    assert_eq!(w.len(), WINDOW);
    assert_eq!(w[..N], pcm(3, 0, 0)[..]);
    assert_eq!(w[N..2 * N], pcm(4, 0, 0)[..]);
    assert_eq!(w[2 * N..], pcm(5, TRIGGER, ACCEPT)[..]);
    assert_eq!(r.sched.close_stream(k), Some((8, 1)), "verified commands");
    assert_eq!(r.counters.verifications.load(Ordering::Relaxed), 1);
    assert_eq!(r.counters.detections.load(Ordering::Relaxed), 1);
}

#[test]
fn a_trigger_the_verifier_rejects_is_answered_no_command_and_a_short_stream_gives_a_short_window() {
    let r = rig(config(250, 8));
    let k = key(2);
    r.sched.open_stream(k).unwrap();
    r.frame(k, 0, 0, 0);
    r.frame(k, 1, TRIGGER, 0);
    let v = r.wait_verifications(1);
    assert_eq!(v.len(), 1);
    assert!(
        matches!(
            v[0].1.outcome,
            VerifyOutcome::NoCommand { best_label, margin } if best_label == VERIFIED_LABEL as u8 && margin == -1.5
        ),
        "{:?}",
        v[0].1
    );
    assert_eq!(r.windows.lock().unwrap()[0].len(), 2 * N);
    assert_eq!(r.sched.close_stream(k), Some((2, 0)));
    assert_eq!(r.counters.detections.load(Ordering::Relaxed), 0);
}

#[test]
fn a_stalled_verification_is_cancelled_and_answered_missed_by_its_deadline_while_frames_flow() {
    let r = rig(config(100, 8));
    let (a, b) = (key(1), key(2));
    r.sched.open_stream(a).unwrap();
    r.sched.open_stream(b).unwrap();
    let triggered = Instant::now();
    r.frame(a, 0, TRIGGER, STALL);
    // Stream b keeps streaming while the verifier stalls: every frame a result.
    for seq in 0..40 {
        r.frame(b, seq, 0, 0);
    }
    let v = r.wait_verifications(1);
    assert_eq!(v.len(), 1);
    let (_, ver, at) = v[0];
    assert_eq!(ver.outcome, VerifyOutcome::DeadlineMissed);
    assert!(
        at.duration_since(triggered) < Duration::from_millis(1_000),
        "answered by its 100 ms deadline, not after the 2 s stall ({:?})",
        at.duration_since(triggered)
    );
    let frames = r.sink.frames.lock().unwrap().clone();
    assert_eq!(frames.len(), 41, "every frame answered with a result");
    // The run was cancelled; the next trigger is verified normally.
    let until = Instant::now() + Duration::from_secs(3);
    while r.cancelled.load(Ordering::SeqCst) == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(r.cancelled.load(Ordering::SeqCst), 1);
    r.frame(a, 1, TRIGGER, ACCEPT);
    let v = r.wait_verifications(2);
    assert!(
        matches!(v[1].1.outcome, VerifyOutcome::Detected(_)),
        "{v:?}"
    );
    assert_eq!(r.counters.verify_misses.load(Ordering::Relaxed), 1);
    assert_eq!(r.counters.verifications.load(Ordering::Relaxed), 1);
}

#[test]
fn a_full_verification_queue_refuses_at_once_and_every_trigger_gets_one_answer() {
    let r = rig(config(400, 1));
    let k = key(4);
    r.sched.open_stream(k).unwrap();
    // The first stalls the verifier, the second waits in the queue, the rest are refused.
    r.frame(k, 0, TRIGGER, STALL);
    std::thread::sleep(Duration::from_millis(20));
    for seq in 1..5 {
        r.frame(k, seq, TRIGGER, ACCEPT);
    }
    let v = r.wait_verifications(5);
    assert_eq!(v.len(), 5, "{v:?}");
    let refused = v
        .iter()
        .filter(|(_, ver, _)| ver.outcome == VerifyOutcome::Rejected(RejectReason::QueueFull))
        .count();
    assert!(refused >= 2, "{v:?}");
    assert_eq!(
        r.counters.verify_rejections.load(Ordering::Relaxed),
        refused as u64
    );
    let mut seqs: Vec<u32> = v.iter().map(|(_, ver, _)| ver.trigger_seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [0, 1, 2, 3, 4], "exactly one answer per trigger");
    // A refusal goes out after its trigger frame's own answer.
    let order = r.sink.order.lock().unwrap().clone();
    for (id, ver, _) in &v {
        if matches!(ver.outcome, VerifyOutcome::Rejected(_)) {
            let frame_at = order
                .iter()
                .position(|&(i, is_v)| i == *id && !is_v)
                .unwrap();
            let verdict_at = order
                .iter()
                .position(|&(i, is_v)| i == *id && is_v)
                .unwrap();
            assert!(frame_at < verdict_at, "request {id}: {order:?}");
        }
    }
}

#[test]
fn a_trigger_waits_for_the_end_of_its_utterance_or_the_longest_wait() {
    let r = rig(config(250, 8));
    let k = key(3);
    r.sched.open_stream(k).unwrap();
    // Stage 1 fires while the command is still being spoken (frames 2..=4 speech): the
    // window ends with frame 5, the first without speech.
    r.speech(k, 0, 0, 0);
    r.speech(k, 1, 0, 0);
    r.speech(k, 2, TRIGGER, 0);
    r.speech(k, 3, 0, 0);
    assert!(
        r.sink.verifications.lock().unwrap().is_empty(),
        "no verification while the utterance goes on"
    );
    r.speech(k, 4, 0, ACCEPT);
    // Still speech, and 2 frames waited: the longest wait ends here (max_wait_frames 2).
    let v = r.wait_verifications(1);
    assert_eq!(v.len(), 1, "verified at the longest wait");
    assert_eq!((v[0].1.trigger_seq, v[0].1.end_seq), (2, 4));
    assert_eq!(v[0].0, 3003, "the trigger frame's request id");
    let w = r.windows.lock().unwrap()[0].clone();
    assert_eq!(
        w[2 * N..],
        speech(4, 0, ACCEPT)[..],
        "the window ends with frame 4"
    );
    match v[0].1.outcome {
        VerifyOutcome::Detected(d) => assert_eq!(d.audio_ms, stream_time_ms(4)),
        other => panic!("{other:?}"),
    }
    // Next utterance: the speech ends one frame after the trigger.
    r.speech(k, 10, TRIGGER, 0);
    r.frame(k, 11, 0, ACCEPT);
    let v = r.wait_verifications(2);
    assert_eq!(v.len(), 2);
    assert_eq!((v[1].1.trigger_seq, v[1].1.end_seq), (10, 11));
    assert!(matches!(v[1].1.outcome, VerifyOutcome::Detected(_)));
}

fn early(deadline_ms: u32) -> VerifyConfig {
    VerifyConfig {
        early_theta: Some(EARLY_THETA),
        early_command_gap: EARLY_GAP,
        ..config(deadline_ms, 8)
    }
}

fn detected_label(outcome: VerifyOutcome) -> Option<u8> {
    match outcome {
        VerifyOutcome::Detected(d) => Some(d.label),
        _ => None,
    }
}

#[test]
fn an_early_verification_answers_a_confident_command_at_its_trigger_and_the_end_goes_unverified() {
    let r = rig(early(250));
    let k = key(5);
    r.sched.open_stream(k).unwrap();
    r.speech(k, 0, 0, 0);
    // Stage 1 fires while the VAD still hears speech: verified at once on the window
    // ending with the trigger frame.
    r.speech(k, 1, TRIGGER, ACCEPT);
    let v = r.wait_verifications(1);
    assert_eq!(v.len(), 1, "answered before the end of the utterance");
    assert_eq!((v[0].1.trigger_seq, v[0].1.end_seq), (1, 1));
    assert_eq!(v[0].0, 5002, "the trigger frame's request id");
    match v[0].1.outcome {
        VerifyOutcome::Detected(d) => {
            assert_eq!(d.label, VERIFIED_LABEL as u8);
            assert_eq!(d.score, 9.0);
            assert_eq!(d.audio_ms, stream_time_ms(1));
        }
        other => panic!("expected a detection, got {other:?}"),
    }
    r.speech(k, 2, 0, 0);
    r.frame(k, 3, 0, ACCEPT); // the utterance ends here
    r.frame(k, 4, 0, 0);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        r.sink.verifications.lock().unwrap().len(),
        1,
        "one answer per trigger"
    );
    let windows = r.windows.lock().unwrap().clone();
    assert_eq!(windows.len(), 1, "the end of the utterance is not verified");
    assert_eq!(windows[0].len(), 2 * N, "frames 0 and 1");
    assert_eq!(windows[0][N..], speech(1, TRIGGER, ACCEPT)[..]);
    assert_eq!(r.sched.close_stream(k), Some((5, 1)));
    assert_eq!(r.counters.verifications.load(Ordering::Relaxed), 1);
    assert_eq!(r.counters.verify_misses.load(Ordering::Relaxed), 0);
}

#[test]
fn an_early_verdict_below_early_theta_or_none_is_silent_and_the_end_of_the_utterance_answers() {
    let r = rig(early(250));
    let k = key(6);
    r.sched.open_stream(k).unwrap();
    // A command early, but by less than early_theta: the end of the utterance decides.
    r.early_silent_then_final_detects(k, WEAK, WEAK);
    // `none` early: the end of the utterance answers, here `none` too.
    r.speech(k, 10, TRIGGER, 0);
    r.frame(k, 11, 0, 0);
    let v = r.wait_verifications(2);
    assert_eq!(v.len(), 2);
    assert_eq!((v[1].1.trigger_seq, v[1].1.end_seq), (10, 11));
    assert!(
        matches!(v[1].1.outcome, VerifyOutcome::NoCommand { .. }),
        "{v:?}"
    );
    // A trigger frame that ends its utterance is verified once, as without early.
    r.frame(k, 20, TRIGGER, ACCEPT);
    let v = r.wait_verifications(3);
    assert_eq!((v[2].1.trigger_seq, v[2].1.end_seq), (20, 20));
    assert_eq!(
        r.windows.lock().unwrap().len(),
        5,
        "2 + 2 verifications, then 1"
    );
    assert_eq!(r.sink.verifications.lock().unwrap().len(), 3);
    assert_eq!(r.sched.close_stream(k), Some((6, 2)));
}

#[test]
fn an_early_verdict_close_to_another_command_is_silent_and_the_end_of_the_utterance_answers() {
    let r = rig(early(250));
    let k = key(7);
    r.sched.open_stream(k).unwrap();
    // 9 nats over `none` early, but another command within CLOSE_GAP: wait.
    r.early_silent_then_final_detects(k, AMBIGUOUS, ACCEPT);
    // The final window answers even when ambiguous: its command gap is 0 here.
    r.speech(k, 10, TRIGGER, 0);
    r.frame(k, 11, 0, AMBIGUOUS);
    let v = r.wait_verifications(2);
    assert_eq!((v[1].1.trigger_seq, v[1].1.end_seq), (10, 11));
    assert_eq!(detected_label(v[1].1.outcome), Some(VERIFIED_LABEL as u8));
    assert_eq!(r.windows.lock().unwrap().len(), 4, "2 + 2 verifications");
    assert_eq!(r.sched.close_stream(k), Some((5, 2)));
}

/// Early fallback gap: above [`CLOSE_GAP`], below the fake verifier's usual 6 nats.
const FALLBACK_GAP: f32 = 3.0;

#[test]
fn a_silent_early_command_clear_of_the_others_is_detected_when_the_end_hears_none() {
    let r = rig(VerifyConfig {
        early_fallback_gap: Some(FALLBACK_GAP),
        ..early(250)
    });
    let k = key(10);
    r.sched.open_stream(k).unwrap();
    // Early: a command above θ but below early_theta, 6 nats clear of the next: silent.
    r.speech(k, 0, TRIGGER, WEAK);
    r.speech(k, 1, 0, 0);
    std::thread::sleep(Duration::from_millis(50));
    assert!(r.sink.verifications.lock().unwrap().is_empty());
    // The end of the utterance hears none: the early command is detected.
    r.frame(k, 2, 0, 0);
    let v = r.wait_verifications(1);
    assert_eq!((v[0].1.trigger_seq, v[0].1.end_seq), (0, 2));
    match v[0].1.outcome {
        VerifyOutcome::Detected(d) => {
            assert_eq!(d.label, VERIFIED_LABEL as u8);
            assert_eq!(d.score, WEAK_MARGIN, "the early window's margin");
        }
        other => panic!("expected the early command, got {other:?}"),
    }
    // Early within CLOSE_GAP of another command, none at the end: no command.
    r.speech(k, 10, TRIGGER, AMBIGUOUS);
    r.frame(k, 11, 0, 0);
    let v = r.wait_verifications(2);
    assert_eq!((v[1].1.trigger_seq, v[1].1.end_seq), (10, 11));
    assert!(
        matches!(v[1].1.outcome, VerifyOutcome::NoCommand { .. }),
        "{v:?}"
    );
    // A command at the end of the utterance is its verdict, not the early one's.
    r.speech(k, 20, TRIGGER, WEAK);
    r.frame(k, 21, 0, ACCEPT);
    let v = r.wait_verifications(3);
    assert_eq!(
        v[2].1.outcome,
        VerifyOutcome::Detected(outpost_protocol::Detection {
            label: VERIFIED_LABEL as u8,
            score: 9.0,
            audio_ms: stream_time_ms(21),
        })
    );
    assert_eq!(
        r.windows.lock().unwrap().len(),
        6,
        "2 + 2 + 2 verifications"
    );
    assert_eq!(r.sched.close_stream(k), Some((7, 2)));

    // Without the fallback the first utterance is no command.
    let r = rig(early(250));
    r.sched.open_stream(k).unwrap();
    r.speech(k, 0, TRIGGER, WEAK);
    r.frame(k, 1, 0, 0);
    let v = r.wait_verifications(1);
    assert!(
        matches!(v[0].1.outcome, VerifyOutcome::NoCommand { .. }),
        "{v:?}"
    );
}

#[test]
fn a_final_verdict_within_the_command_gap_of_another_command_is_no_command() {
    let r = rig(VerifyConfig {
        command_gap: 2.0 * CLOSE_GAP,
        ..config(250, 8)
    });
    let k = key(9);
    r.sched.open_stream(k).unwrap();
    // 9 nats over `none`, but another command within CLOSE_GAP < command_gap.
    r.speech(k, 0, TRIGGER, 0);
    r.frame(k, 1, 0, AMBIGUOUS);
    let v = r.wait_verifications(1);
    assert_eq!((v[0].1.trigger_seq, v[0].1.end_seq), (0, 1));
    match v[0].1.outcome {
        VerifyOutcome::NoCommand { best_label, margin } => {
            assert_eq!(best_label, VERIFIED_LABEL as u8);
            assert_eq!(margin, 9.0);
        }
        other => panic!("expected no command, got {other:?}"),
    }
    // A clear command (6 nats over the next) is detected under the same gap.
    r.speech(k, 10, TRIGGER, 0);
    r.frame(k, 11, 0, ACCEPT);
    let v = r.wait_verifications(2);
    assert_eq!((v[1].1.trigger_seq, v[1].1.end_seq), (10, 11));
    assert_eq!(detected_label(v[1].1.outcome), Some(VERIFIED_LABEL as u8));
    assert_eq!(r.counters.verifications.load(Ordering::Relaxed), 2);
}

#[test]
fn an_early_verification_that_misses_its_deadline_is_silent_and_the_end_of_the_utterance_answers() {
    let r = rig(early(100));
    let k = key(8);
    r.sched.open_stream(k).unwrap();
    r.speech(k, 0, TRIGGER, STALL);
    // Real time: the next frame comes after the early verification's deadline.
    let until = Instant::now() + Duration::from_secs(3);
    while r.cancelled.load(Ordering::SeqCst) == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        r.cancelled.load(Ordering::SeqCst),
        1,
        "cancelled at its deadline"
    );
    assert!(r.sink.verifications.lock().unwrap().is_empty(), "silently");
    r.frame(k, 1, 0, ACCEPT);
    let v = r.wait_verifications(1);
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].1.trigger_seq, v[0].1.end_seq), (0, 1));
    assert_eq!(detected_label(v[0].1.outcome), Some(VERIFIED_LABEL as u8));
    assert_eq!(r.counters.verify_misses.load(Ordering::Relaxed), 0);
}

/// Early verification, a one-place verification queue, streams 1 and 2 open.
fn one_place_two_streams() -> (Rig, StreamKey, StreamKey) {
    let r = rig(VerifyConfig {
        early_theta: Some(EARLY_THETA),
        ..config(1000, 1)
    });
    let (a, b) = (key(1), key(2));
    r.sched.open_stream(a).unwrap();
    r.sched.open_stream(b).unwrap();
    (r, a, b)
}

/// The verification answered with request id `id`.
fn answer_of(v: &[(u32, Verification, Instant)], id: u32) -> Option<Verification> {
    v.iter().find(|(i, _, _)| *i == id).map(|(_, ver, _)| *ver)
}

#[test]
fn an_utterance_that_ends_while_its_early_verification_runs_waits_for_the_early_verdict() {
    let (r, a, b) = one_place_two_streams();
    // A's early verification takes the verifier for 150 ms (and accepts) ...
    r.speech(a, 0, TRIGGER, SLOW_ACCEPT);
    r.wait_windows(1);
    // ... B's verification fills the one-place queue ...
    r.frame(b, 0, TRIGGER, ACCEPT);
    // ... and A's utterance ends: its verification waits for the early verdict instead
    // of being refused at once (a refusal would have answered A before its command).
    r.frame(a, 1, 0, 0);
    let v = r.wait_verifications(2);
    std::thread::sleep(Duration::from_millis(300));
    let v_all = r.sink.verifications.lock().unwrap().clone();
    assert_eq!(v_all.len(), 2, "one answer per trigger: {v_all:?}");
    let of = |id: u32| answer_of(&v, id);
    let va = of(1001).expect("A answered");
    assert_eq!(
        (va.trigger_seq, va.end_seq),
        (0, 0),
        "the early window answers"
    );
    assert_eq!(detected_label(va.outcome), Some(VERIFIED_LABEL as u8));
    assert_eq!(
        detected_label(of(2001).unwrap().outcome),
        Some(VERIFIED_LABEL as u8)
    );
    assert_eq!(r.counters.verify_rejections.load(Ordering::Relaxed), 0);
    assert_eq!(
        r.windows.lock().unwrap().len(),
        2,
        "the end of A's utterance goes unverified"
    );
}

#[test]
fn a_deferred_verification_runs_when_the_early_verdict_is_silent() {
    let r = rig(early(1000));
    let k = key(3);
    r.sched.open_stream(k).unwrap();
    // The early verification runs 150 ms and hears a command below early_theta; the
    // utterance ends meanwhile.
    r.speech(k, 0, TRIGGER, SLOW_WEAK);
    r.frame(k, 1, 0, ACCEPT);
    let v = r.wait_verifications(1);
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].1.trigger_seq, v[0].1.end_seq), (0, 1));
    assert_eq!(detected_label(v[0].1.outcome), Some(VERIFIED_LABEL as u8));
    let windows = r.windows.lock().unwrap().clone();
    assert_eq!(windows.len(), 2, "early, then the end of the utterance");
    assert_eq!(windows[1][windows[1].len() - N..], pcm(1, 0, ACCEPT)[..]);
    assert_eq!(r.counters.verify_rejections.load(Ordering::Relaxed), 0);
    assert_eq!(r.sched.close_stream(k), Some((2, 1)));
}

#[test]
fn a_deferred_verification_is_admitted_when_the_early_one_ends_and_can_be_refused_then() {
    let (r, a, b) = one_place_two_streams();
    // A's early verification runs 150 ms and stays silent; A's utterance ends meanwhile
    // (deferred, so not refused yet) ...
    r.speech(a, 0, TRIGGER, SLOW_WEAK);
    r.wait_windows(1);
    r.frame(a, 1, 0, ACCEPT);
    // ... B's verification takes the one place in the queue ...
    r.frame(b, 0, TRIGGER, ACCEPT);
    // ... so when A's early verification ends, A's is refused, and B's runs.
    let v = r.wait_verifications(2);
    assert_eq!(v.len(), 2, "{v:?}");
    let of = |id: u32| answer_of(&v, id);
    let va = of(1001).expect("A answered");
    assert_eq!((va.trigger_seq, va.end_seq), (0, 1));
    assert_eq!(va.outcome, VerifyOutcome::Rejected(RejectReason::QueueFull));
    assert_eq!(
        detected_label(of(2001).unwrap().outcome),
        Some(VERIFIED_LABEL as u8)
    );
    assert_eq!(r.counters.verify_rejections.load(Ordering::Relaxed), 1);
    assert_eq!(r.windows.lock().unwrap().len(), 2, "A early, B");
}

#[test]
fn a_deferred_verification_goes_on_when_the_early_one_is_cancelled_at_its_deadline() {
    let r = rig(early(100));
    let k = key(4);
    r.sched.open_stream(k).unwrap();
    // The early verification runs 300 ms whatever its cancellation; the utterance ends
    // 60 ms after the trigger, as a real-time client sends it, while it runs ...
    r.speech(k, 0, TRIGGER, STUBBORN);
    r.wait_windows(1);
    std::thread::sleep(Duration::from_millis(60));
    r.frame(k, 1, 0, ACCEPT);
    // ... so its verification waits for the early one's deadline (100 ms), is admitted
    // then, and cannot run before its own (160 ms): the timer answers it on time, not
    // a refusal once the early run has stopped, 140 ms after that deadline.
    let v = r.wait_verifications(1);
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].1.trigger_seq, v[0].1.end_seq), (0, 1));
    assert_eq!(v[0].1.outcome, VerifyOutcome::DeadlineMissed);
    assert_eq!(r.counters.verify_misses.load(Ordering::Relaxed), 1);
    assert_eq!(r.counters.verify_rejections.load(Ordering::Relaxed), 0);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(r.sink.verifications.lock().unwrap().len(), 1);
}

#[test]
fn closing_a_stream_admits_its_deferred_verification() {
    let r = rig(early(1000));
    let k = key(5);
    r.sched.open_stream(k).unwrap();
    r.speech(k, 0, TRIGGER, SLOW_WEAK);
    r.wait_windows(1);
    r.frame(k, 1, 0, ACCEPT);
    // Closed while the early verification runs: the deferred one is queued behind it,
    // runs once it ends, and answers the trigger.
    assert_eq!(r.sched.close_stream(k), Some((2, 0)));
    let v = r.wait_verifications(1);
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].1.trigger_seq, v[0].1.end_seq), (0, 1));
    assert_eq!(detected_label(v[0].1.outcome), Some(VERIFIED_LABEL as u8));
    assert_eq!(r.windows.lock().unwrap().len(), 2);
}

#[test]
fn shutdown_answers_a_trigger_whose_verification_is_deferred_once() {
    let mut r = rig(early(1000));
    let k = key(6);
    r.sched.open_stream(k).unwrap();
    r.speech(k, 0, TRIGGER, STALL);
    r.wait_windows(1);
    r.frame(k, 1, 0, ACCEPT);
    r.sched.shutdown();
    let v = r.sink.verifications.lock().unwrap().clone();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(
        v[0].1.outcome,
        VerifyOutcome::Rejected(RejectReason::ShuttingDown)
    );
    assert_eq!(v[0].0, 6001);
}

/// The `none` label's index in the fake bundle.
const NONE_LABEL: u8 = 12;

/// Utterance-end verification on: 2 frames of speech at least, ended by 2 quiet frames.
fn utterances(deadline_ms: u32) -> VerifyConfig {
    VerifyConfig {
        utterance: Some(UtteranceVerify {
            min_speech_frames: 2,
            quiet_frames: 2,
            lead_frames: 1,
            late_trigger_frames: 2,
            none_label: NONE_LABEL,
        }),
        ..config(deadline_ms, 8)
    }
}

#[test]
fn an_utterance_stage_1_missed_is_verified_where_it_ends_and_answered_only_for_a_command() {
    let r = rig(utterances(250));
    let k = key(5);
    r.sched.open_stream(k).unwrap();
    // Speech 0..=2 with no trigger; the second quiet frame (4) ends it.
    for seq in 0..3 {
        r.speech(k, seq, 0, 0);
    }
    r.frame(k, 3, 0, 0);
    std::thread::sleep(Duration::from_millis(30));
    assert!(
        r.windows.lock().unwrap().is_empty(),
        "one quiet frame is a pause"
    );
    r.frame(k, 4, 0, ACCEPT);
    let v = r.wait_verifications(1);
    assert_eq!(v.len(), 1);
    let (id, ver, _) = v[0];
    assert_eq!(id, 5005, "the last frame's request id");
    assert_eq!((ver.trigger_seq, ver.end_seq), (4, 4));
    assert_eq!(ver.trigger_label, NONE_LABEL, "no stage-1 label: `none`");
    assert_eq!(detected_label(ver.outcome), Some(VERIFIED_LABEL as u8));
    assert_eq!(r.windows.lock().unwrap()[0][2 * N..], pcm(4, 0, ACCEPT)[..]);
    // Stage 1 firing in the quiet frames after it belongs to that utterance, which has
    // its answer: the trigger is not answered.
    r.frame(k, 5, TRIGGER, ACCEPT);
    r.frame(k, 6, 0, 0);
    // An utterance the verifier hears no command in: verified, silent.
    r.speech(k, 10, 0, 0);
    r.speech(k, 11, 0, 0);
    r.frame(k, 12, 0, 0);
    r.frame(k, 13, 0, 0);
    r.wait_windows(2);
    // One frame of speech is too short to verify; a one-frame dip does not end an
    // utterance, so 20..=24 is verified once, at 24.
    r.speech(k, 15, 0, 0);
    r.frame(k, 16, 0, 0);
    r.frame(k, 17, 0, 0);
    r.speech(k, 20, 0, 0);
    r.frame(k, 21, 0, ACCEPT);
    r.speech(k, 22, 0, 0);
    r.frame(k, 23, 0, 0);
    r.frame(k, 24, 0, ACCEPT);
    let v = r.wait_verifications(2);
    std::thread::sleep(Duration::from_millis(50));
    let v2 = r.sink.verifications.lock().unwrap().clone();
    assert_eq!(v2.len(), 2, "{v2:?}");
    assert_eq!((v[1].1.trigger_seq, v[1].1.end_seq), (24, 24));
    assert_eq!(
        r.windows.lock().unwrap().len(),
        3,
        "verified: 0..=4, 10..=13, 20..=24; the trigger on 5 not"
    );
    let frames = r.sink.frames.lock().unwrap().clone();
    assert!(frames.iter().all(|(_, _, d)| !d), "{frames:?}");
    assert_eq!(r.sched.close_stream(k), Some((19, 2)));
}

#[test]
fn an_utterance_stage_1_fired_on_is_verified_once_for_its_trigger() {
    let r = rig(utterances(250));
    let k = key(6);
    r.sched.open_stream(k).unwrap();
    // The trigger inside the utterance.
    r.speech(k, 0, 0, 0);
    r.speech(k, 1, TRIGGER, 0);
    r.frame(k, 2, 0, ACCEPT);
    r.frame(k, 3, 0, ACCEPT);
    r.frame(k, 4, 0, ACCEPT);
    // The trigger in the first quiet frame, after the speech.
    r.speech(k, 10, 0, 0);
    r.speech(k, 11, 0, 0);
    r.frame(k, 12, TRIGGER, ACCEPT);
    r.frame(k, 13, 0, ACCEPT);
    r.frame(k, 14, 0, ACCEPT);
    let v = r.wait_verifications(2);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(r.sink.verifications.lock().unwrap().len(), 2);
    assert_eq!((v[0].1.trigger_seq, v[0].1.end_seq), (1, 2));
    assert_eq!((v[1].1.trigger_seq, v[1].1.end_seq), (12, 12));
    assert!(v
        .iter()
        .all(|(_, ver, _)| ver.trigger_label == TRIGGER_LABEL as u8));
    assert_eq!(
        r.windows.lock().unwrap().len(),
        2,
        "no utterance-end verification"
    );
}

#[test]
fn an_utterance_verification_that_misses_its_deadline_is_answered_so() {
    let r = rig(utterances(100));
    let k = key(8);
    r.sched.open_stream(k).unwrap();
    r.speech(k, 0, 0, 0);
    r.speech(k, 1, 0, 0);
    r.frame(k, 2, 0, 0);
    r.frame(k, 3, 0, STALL);
    let v = r.wait_verifications(1);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].1.outcome, VerifyOutcome::DeadlineMissed);
    assert_eq!(v[0].1.trigger_label, NONE_LABEL);
    assert_eq!(r.counters.verify_misses.load(Ordering::Relaxed), 1);
}

#[test]
fn a_trigger_just_after_an_utterance_verified_silent_is_verified_and_answered() {
    let r = rig(utterances(250));
    let k = key(9);
    r.sched.open_stream(k).unwrap();
    r.speech(k, 0, 0, 0);
    r.speech(k, 1, 0, 0);
    r.frame(k, 2, 0, 0);
    // Ends the utterance: no command heard, nothing answered.
    r.frame(k, 3, 0, 0);
    r.wait_windows(1);
    // Stage 1 fires late, in the quiet frames after it: its own window, its own answer.
    r.frame(k, 4, TRIGGER, ACCEPT);
    let v = r.wait_verifications(1);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].0, 9005, "the trigger frame's request id");
    assert_eq!((v[0].1.trigger_seq, v[0].1.end_seq), (4, 4));
    assert_eq!(v[0].1.trigger_label, TRIGGER_LABEL as u8);
    assert_eq!(detected_label(v[0].1.outcome), Some(VERIFIED_LABEL as u8));
    assert_eq!(r.windows.lock().unwrap().len(), 2);
}

#[test]
fn an_utterance_is_verified_on_its_own_audio_the_one_before_zeroed() {
    let r = rig(VerifyConfig {
        utterance: Some(UtteranceVerify {
            min_speech_frames: 1,
            quiet_frames: 1,
            lead_frames: 0,
            late_trigger_frames: 2,
            none_label: NONE_LABEL,
        }),
        ..config(250, 8)
    });
    let k = key(10);
    r.sched.open_stream(k).unwrap();
    // Frame 0 is another sound (not speech to the VAD), 1 the utterance, 2 ends it.
    r.frame(k, 0, 0, 0);
    r.speech(k, 1, 0, 0);
    r.frame(k, 2, 0, ACCEPT);
    let v = r.wait_verifications(1);
    assert_eq!((v[0].1.trigger_seq, v[0].1.end_seq), (2, 2));
    let w = r.windows.lock().unwrap()[0].clone();
    assert_eq!(w.len(), WINDOW);
    assert!(w[..N].iter().all(|&x| x == 0), "frame 0 zeroed");
    assert_eq!(w[N..2 * N], speech(1, 0, 0)[..]);
    assert_eq!(w[2 * N..], pcm(2, 0, ACCEPT)[..]);
}

#[test]
fn a_trigger_a_few_quiet_frames_after_an_utterance_that_was_answered_is_not() {
    let r = rig(utterances(250));
    let k = key(11);
    r.sched.open_stream(k).unwrap();
    r.speech(k, 0, 0, 0);
    r.speech(k, 1, 0, 0);
    r.frame(k, 2, 0, 0);
    r.frame(k, 3, 0, ACCEPT);
    let v = r.wait_verifications(1);
    assert_eq!(v[0].1.trigger_label, NONE_LABEL);
    // One quiet frame, then stage 1 fires: still the same utterance (late_trigger_frames 2).
    r.frame(k, 4, 0, 0);
    r.frame(k, 5, TRIGGER, ACCEPT);
    r.frame(k, 6, 0, 0);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(r.sink.verifications.lock().unwrap().len(), 1, "one answer");
    // Past the late frames, a trigger is a new event of its own.
    r.frame(k, 7, 0, 0);
    r.frame(k, 8, TRIGGER, ACCEPT);
    let v = r.wait_verifications(2);
    assert_eq!(v.len(), 2);
    assert_eq!(
        (v[1].1.trigger_seq, v[1].1.trigger_label),
        (8, TRIGGER_LABEL as u8)
    );
}
