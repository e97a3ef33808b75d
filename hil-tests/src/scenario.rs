//! Scenarios: `handshake`, `commands`, `faults`, `concurrency`, and the on-device
//! checks of [`crate::device_checks`]. Each returns a
//! [`ScenarioResult`] (pass, fail or skip, with the reason and details); none panics
//! on device misbehaviour.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use outpost_protocol::{FRAME_SAMPLES, PROTOCOL_VERSION, SAMPLE_RATE_HZ};
use serde::Serialize;
use serde_json::json;

use crate::clips::{self, Clip};
use crate::device::Device;
use crate::device_checks;
use crate::faults::{self, FaultKind};
use crate::session::{AnswerKind, FrameRecord, HelloInfo, Session, SessionError};
use crate::stats::{LatencySeries, LatencySummary};

/// Client name sent in `Hello`.
pub const CLIENT_NAME: &str = "outpost-hil";

/// Names of all scenarios, in the default run order.
/// The protocol scenarios come first, then the on-device checks
/// ([`crate::device_checks::DEVICE_SCENARIOS`]), which a simulated device skips.
pub const ALL_SCENARIOS: [&str; 8] = [
    "handshake",
    "commands",
    "faults",
    "concurrency",
    "no-inet-listeners",
    "unix-sockets",
    "units-active",
    "watchdog",
];

/// Result of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// All checks passed.
    Pass,
    /// At least one check failed.
    Fail,
    /// Not run (the reason says why); never counted as a pass.
    Skip,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        })
    }
}

/// What a scenario found.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// Scenario name.
    pub name: String,
    /// Pass, fail or skip.
    pub outcome: Outcome,
    /// One line for the summary table.
    pub summary: String,
    /// Every check and observation, one per line.
    pub details: Vec<String>,
    /// Wall time of the scenario in ms.
    pub duration_ms: u64,
    /// Latency summaries measured by the scenario (µs).
    pub latency: Vec<LatencySummary>,
    /// Scenario-specific data for the JSON report.
    pub data: serde_json::Value,
}

impl ScenarioResult {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            outcome: Outcome::Pass,
            summary: String::new(),
            details: Vec::new(),
            duration_ms: 0,
            latency: Vec::new(),
            data: serde_json::Value::Null,
        }
    }

    pub(crate) fn check(&mut self, ok: bool, what: impl Into<String>) -> bool {
        let what = what.into();
        if ok {
            self.details.push(format!("ok: {what}"));
        } else {
            self.details.push(format!("FAILED: {what}"));
            self.outcome = Outcome::Fail;
        }
        ok
    }

    pub(crate) fn note(&mut self, what: impl Into<String>) {
        self.details.push(format!("note: {}", what.into()));
    }

    pub(crate) fn fail(&mut self, what: impl Into<String>) {
        self.check(false, what);
    }

    pub(crate) fn skip(mut self, reason: impl Into<String>) -> Self {
        self.outcome = Outcome::Skip;
        self.summary = format!("skipped: {}", reason.into());
        self
    }
}

/// The rig's state across scenarios: the device, its primary session (a serial port is
/// opened once and kept, as a field device would), the clips and the latencies seen.
#[derive(Debug)]
pub struct Rig<'d> {
    /// The device under test.
    pub device: &'d Device,
    primary: Option<Session>,
    /// Clips for `commands` / `concurrency` (may be empty).
    pub clips: Vec<Clip>,
    /// Where the clips came from, or why there are none.
    pub clips_source: String,
    /// Labels from the last handshake.
    pub hello: Option<HelloInfo>,
    /// Per-frame client round trip in µs (commands scenario).
    pub rtt: LatencySeries,
    /// Per-frame server `timing.total_us` (commands scenario).
    pub server_total: LatencySeries,
    /// Per-frame server `timing.compute_us` (commands scenario).
    pub server_compute: LatencySeries,
    /// Parallel clients in `concurrency`.
    pub clients: usize,
    answer_timeout: Duration,
}

impl<'d> Rig<'d> {
    /// A rig for `device` with the given clips.
    pub fn new(device: &'d Device, clips: Vec<Clip>, clips_source: String) -> Self {
        Self {
            clients: device.config.scenarios.clients,
            answer_timeout: Duration::from_millis(device.config.scenarios.answer_timeout_ms),
            device,
            primary: None,
            clips,
            clips_source,
            hello: None,
            rtt: LatencySeries::new("client round trip"),
            server_total: LatencySeries::new("server total"),
            server_compute: LatencySeries::new("server compute"),
        }
    }

    /// The primary session, opened (and resynchronised) on first use.
    ///
    /// # Errors
    /// [`SessionError`] when the link cannot be opened or the device does not answer a Ping.
    pub fn primary(&mut self) -> Result<&mut Session, SessionError> {
        if self.primary.is_none() {
            let link = self.device.open_primary()?;
            let mut s = Session::new(link, self.answer_timeout)?;
            let stale = s.sync()?;
            if !stale.is_empty() {
                log::info!("{}: discarded {} stale answers", s.link(), stale.len());
            }
            self.primary = Some(s);
        }
        Ok(self.primary.as_mut().expect("just opened"))
    }

    /// Drops the primary session (after an error, so the next use reopens and resyncs).
    pub fn reset_primary(&mut self) {
        self.primary = None;
    }

    /// A new socket session, if the device has a socket.
    ///
    /// # Errors
    /// [`SessionError`] when the socket cannot be connected.
    pub fn socket_session(&self) -> Option<Result<Session, SessionError>> {
        self.device.open_socket().map(|r| {
            r.map_err(SessionError::from)
                .and_then(|link| Session::new(link, self.answer_timeout))
        })
    }

    /// Runs one scenario by name.
    pub fn run(&mut self, name: &str) -> ScenarioResult {
        let t = Instant::now();
        let mut r = match name {
            "handshake" => self.handshake(),
            "commands" => self.commands(),
            "faults" => self.faults(),
            "concurrency" => self.concurrency(),
            n if device_checks::DEVICE_SCENARIOS.contains(&n) => {
                device_checks::run_device_scenario(n, &self.device.config)
            }
            other => ScenarioResult::new(other).skip(format!(
                "unknown scenario (known: {})",
                ALL_SCENARIOS.join(", ")
            )),
        };
        r.duration_ms = t.elapsed().as_millis() as u64;
        if r.outcome == Outcome::Fail {
            // A failed scenario may leave the link mid-conversation.
            self.reset_primary();
        }
        if r.summary.is_empty() {
            r.summary = r
                .details
                .iter()
                .find(|d| d.starts_with("FAILED"))
                .cloned()
                .unwrap_or_else(|| format!("{} checks", r.details.len()));
        }
        r
    }

    /// `handshake`: Hello on the primary link (and the socket, if any) announces the
    /// expected labels including `none`, protocol v1, 16 kHz × 1280 samples and sane limits.
    pub fn handshake(&mut self) -> ScenarioResult {
        let mut r = ScenarioResult::new("handshake");
        let expect_labels = self.device.config.expect.labels;
        let hello = match self.primary().and_then(|s| {
            let h = s.hello(CLIENT_NAME)?;
            let rtt = s.ping()?;
            Ok((h, rtt))
        }) {
            Ok((h, rtt)) => {
                r.note(format!("Ping round trip {rtt} µs"));
                h
            }
            Err(e) => {
                r.fail(format!("handshake on primary link: {e}"));
                return r;
            }
        };
        r.check(
            hello.protocol_version == PROTOCOL_VERSION,
            format!(
                "protocol version {} (expected {PROTOCOL_VERSION})",
                hello.protocol_version
            ),
        );
        if hello.labels.is_empty() {
            if let Ok(st) = self.primary().and_then(|s| s.status()) {
                r.note(format!(
                    "device state {}: {}",
                    st.state,
                    if st.detail.is_empty() {
                        "(no detail)"
                    } else {
                        &st.detail
                    }
                ));
            }
        }
        r.check(
            hello.labels.len() == expect_labels,
            format!(
                "{} labels (expected {expect_labels}): {:?}",
                hello.labels.len(),
                hello.labels
            ),
        );
        r.check(
            hello
                .labels
                .iter()
                .any(|l| clips::normalise_label(l) == "none"),
            "labels include `none`",
        );
        let mut uniq = hello.labels.clone();
        uniq.sort();
        uniq.dedup();
        r.check(
            uniq.len() == hello.labels.len() && hello.labels.iter().all(|l| !l.is_empty()),
            "labels are unique and non-empty",
        );
        r.check(
            hello.sample_rate_hz == SAMPLE_RATE_HZ
                && usize::from(hello.frame_samples) == FRAME_SAMPLES,
            format!(
                "audio format {} Hz × {} samples (expected {SAMPLE_RATE_HZ} × {FRAME_SAMPLES})",
                hello.sample_rate_hz, hello.frame_samples
            ),
        );
        r.check(
            hello.max_streams >= 1,
            format!("max_streams {} (expected ≥ 1)", hello.max_streams),
        );
        r.check(
            hello.default_deadline_us > 0 && hello.default_deadline_us <= hello.max_deadline_us,
            format!(
                "default deadline {} µs within (0, max {} µs]",
                hello.default_deadline_us, hello.max_deadline_us
            ),
        );
        if hello.default_deadline_us != outpost_protocol::DEFAULT_DEADLINE_US {
            r.note(format!(
                "default deadline is {} µs, docs/DESIGN.md §4 default is {} µs",
                hello.default_deadline_us,
                outpost_protocol::DEFAULT_DEADLINE_US
            ));
        }
        let audio_wire = faults::audio_frame(1, 1, 0, outpost_protocol::FRAME_AUDIO_BYTES).len();
        r.check(
            usize::from(hello.max_frame_bytes) >= audio_wire,
            format!(
                "max_frame_bytes {} ≥ one audio frame on the wire ({audio_wire} bytes)",
                hello.max_frame_bytes
            ),
        );
        if let Some(sock) = self.socket_session() {
            match sock.and_then(|mut s| s.hello(CLIENT_NAME)) {
                Ok(h2) => {
                    r.check(
                        h2.labels == hello.labels && h2.bundle_name == hello.bundle_name,
                        "socket handshake announces the same bundle and labels",
                    );
                }
                Err(e) => r.fail(format!("handshake on socket: {e}")),
            }
        }
        r.summary = format!(
            "bundle {} v{}, {} labels, deadline {} µs",
            hello.bundle_name,
            hello.bundle_version,
            hello.labels.len(),
            hello.default_deadline_us
        );
        r.data = serde_json::to_value(&hello).unwrap_or_default();
        self.hello = Some(hello);
        r
    }

    fn labels(&mut self) -> Result<Vec<String>, SessionError> {
        if let Some(h) = &self.hello {
            return Ok(h.labels.clone());
        }
        let h = self.primary()?.hello(CLIENT_NAME)?;
        let labels = h.labels.clone();
        self.hello = Some(h);
        Ok(labels)
    }

    /// `commands`: streams every clip (one stream per clip, with 1 s of trailing
    /// silence); each must yield exactly one detection, of the expected label.
    /// Records per-frame client round trip and server timing.
    pub fn commands(&mut self) -> ScenarioResult {
        let mut r = ScenarioResult::new("commands");
        if self.clips.is_empty() {
            let why = format!("no clips ({})", self.clips_source);
            return r.skip(why);
        }
        let labels = match self.labels() {
            Ok(l) => l,
            Err(e) => {
                r.fail(format!("handshake: {e}"));
                return r;
            }
        };
        let min_acc = self.device.config.scenarios.commands_min_accuracy;
        let clips = self.clips.clone();
        let mut rows = Vec::new();
        let mut passed = 0usize;
        let mut rtt = LatencySeries::new("client round trip");
        let mut total = LatencySeries::new("server total");
        let mut compute = LatencySeries::new("server compute");
        for (i, clip) in clips.iter().enumerate() {
            let frames = match clips::clip_frames(clip) {
                Ok(f) => f,
                Err(e) => {
                    r.fail(e.to_string());
                    continue;
                }
            };
            let stream_id = (i % 60_000) as u16 + 1;
            let session = match self.primary() {
                Ok(s) => s,
                Err(e) => {
                    r.fail(format!("primary link: {e}"));
                    break;
                }
            };
            let run = (|| -> Result<(Vec<FrameRecord>, (u32, u32)), SessionError> {
                session.open_stream(stream_id)?;
                let recs = session.stream(stream_id, &frames)?;
                let closed = session.close_stream(stream_id)?;
                Ok((recs, closed))
            })();
            let (recs, (dev_frames, dev_detections)) = match run {
                Ok(x) => x,
                Err(e) => {
                    r.fail(format!("{}: {e}", clip.path.display()));
                    self.reset_primary();
                    continue;
                }
            };
            let mut detections = Vec::new();
            let mut other = AnswerTally::default();
            for rec in &recs {
                match &rec.answer {
                    AnswerKind::Frame(f) => {
                        rtt.record(rec.rtt_us);
                        total.record(u64::from(f.timing.total_us));
                        compute.record(u64::from(f.timing.compute_us));
                        if let Some(d) = f.detection {
                            let name = labels
                                .get(usize::from(d.label))
                                .cloned()
                                .unwrap_or_else(|| format!("#{} (out of range)", d.label));
                            detections.push((name, d.score, d.audio_ms));
                        }
                    }
                    a => other.add(rec.seq, a),
                }
            }
            let other = other.lines();
            let expected = clips::normalise_label(&clip.label);
            let ok = detections.len() == 1 && clips::normalise_label(&detections[0].0) == expected;
            if ok {
                passed += 1;
            }
            let detected: Vec<String> = detections
                .iter()
                .map(|(n, s, ms)| format!("{n} ({s:.2} @ {ms} ms)"))
                .collect();
            let line = format!(
                "{} [{}] expected `{}`, detected [{}]{}",
                clip.path.file_name().unwrap_or_default().to_string_lossy(),
                clip.voice,
                clip.label,
                detected.join(", "),
                if other.is_empty() {
                    String::new()
                } else {
                    format!("; non-result answers: {}", other.join("; "))
                }
            );
            r.details
                .push(format!("{}: {line}", if ok { "ok" } else { "MISS" }));
            if dev_detections as usize != detections.len() {
                r.note(format!(
                    "stream {stream_id}: device counted {dev_detections} detections, {} were sent",
                    detections.len()
                ));
            }
            rows.push(json!({
                "path": clip.path, "voice": clip.voice, "expected": clip.label,
                "detections": detected, "pass": ok, "frames": recs.len(),
                "device_frames": dev_frames, "non_result_answers": other,
            }));
        }
        let n = clips.len();
        let acc = passed as f64 / n as f64;
        r.check(
            acc >= min_acc,
            format!(
                "{passed}/{n} clips recognised exactly once with the expected label ({:.1} %, required {:.1} %)",
                acc * 100.0,
                min_acc * 100.0
            ),
        );
        r.summary = format!(
            "{passed}/{n} clips correct ({:.1} %); rtt p99 {} µs",
            acc * 100.0,
            rtt.summary().p99_us
        );
        r.latency = vec![rtt.summary(), total.summary(), compute.summary()];
        self.rtt.extend(&rtt);
        self.server_total.extend(&total);
        self.server_compute.extend(&compute);
        r.data = json!({ "clips": rows, "accuracy": acc, "min_accuracy": min_acc });
        r
    }

    /// Audio for background streams: the first clip with silence, or a synthetic tone.
    fn background_audio(&self) -> Vec<Vec<u8>> {
        self.clips
            .iter()
            .find_map(|c| clips::clip_frames(c).ok())
            .unwrap_or_else(|| {
                clips::to_frames(&clips::synth_tone_noise(1.5), clips::TAIL_SILENCE_FRAMES)
            })
    }

    /// `faults`: on the primary link sends a corrupted-CRC frame, a truncated frame, a
    /// 9000-byte frame, a version-2 envelope, audio of the wrong length and an
    /// out-of-order seq; each must be answered by its explicit `Error`, and a Ping
    /// afterwards by its Pong. Meanwhile a socket connection streams audio and must keep
    /// receiving `Frame` results.
    pub fn faults(&mut self) -> ScenarioResult {
        let mut r = ScenarioResult::new("faults");
        let audio = self.background_audio();
        let bg_session = match self.socket_session() {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                r.fail(format!("second connection: {e}"));
                None
            }
            None => {
                r.note(
                    "device has no second link (socket): isolation from other clients not checked",
                );
                None
            }
        };
        let stop = AtomicBool::new(false);
        let results = AtomicU64::new(0);
        let bg_report: Mutex<Option<BackgroundStats>> = Mutex::new(None);
        let timeout = self.answer_timeout;
        let has_bg = bg_session.is_some();
        let mut during = 0u64;
        std::thread::scope(|scope| {
            if let Some(mut bg) = bg_session {
                let (audio, stop, results, bg_report) = (&audio, &stop, &results, &bg_report);
                scope.spawn(move || {
                    let stats = background_stream(&mut bg, audio, stop, results);
                    *bg_report.lock().unwrap_or_else(|p| p.into_inner()) = Some(stats);
                });
                // Faults start only once the second connection is getting results.
                let t = Instant::now();
                while results.load(Ordering::SeqCst) == 0
                    && t.elapsed() < timeout
                    && bg_report.lock().map(|g| g.is_none()).unwrap_or(false)
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            let before = results.load(Ordering::SeqCst);
            self.fault_sequence(&mut r, &audio, timeout);
            // The second connection must get results after the faults too.
            let t = Instant::now();
            while has_bg
                && results.load(Ordering::SeqCst) < before + 3
                && t.elapsed() < timeout
                && bg_report.lock().map(|g| g.is_none()).unwrap_or(false)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            during = results.load(Ordering::SeqCst) - before;
            stop.store(true, Ordering::SeqCst);
        });
        if let Some(bg) = bg_report.into_inner().unwrap_or_else(|p| p.into_inner()) {
            r.check(
                bg.error.is_none() && during > 0 && bg.other.is_empty(),
                format!(
                    "second connection kept streaming: {during} Frame results during and after the faults ({} in all), {} other answers{}{}",
                    bg.results,
                    bg.other.len(),
                    bg.other
                        .first()
                        .map(|o| format!(" (first: {o})"))
                        .unwrap_or_default(),
                    bg.error.map(|e| format!("; error: {e}")).unwrap_or_default()
                ),
            );
        }
        let good = FaultKind::ALL
            .iter()
            .filter(|k| {
                let prefix = format!("{}:", k.name());
                let mine: Vec<&String> = r.details.iter().filter(|d| d.contains(&prefix)).collect();
                mine.len() >= 2 && mine.iter().all(|d| d.starts_with("ok"))
            })
            .count();
        r.summary = format!(
            "{good} of {} faults answered explicitly and recovered{}",
            FaultKind::ALL.len(),
            if r.details
                .iter()
                .any(|d| d.starts_with("FAILED: second connection"))
            {
                "; second connection disturbed"
            } else {
                ""
            }
        );
        r
    }

    fn fault_sequence(&mut self, r: &mut ScenarioResult, audio: &[Vec<u8>], timeout: Duration) {
        const STREAM: u16 = 0x0F17;
        let s = match self.primary() {
            Ok(s) => s,
            Err(e) => {
                r.fail(format!("primary link: {e}"));
                return;
            }
        };
        let setup = (|| -> Result<(), SessionError> {
            s.open_stream(STREAM)?;
            s.audio(STREAM, 0, &audio[0])?;
            s.audio(STREAM, 1, &audio[1 % audio.len()])?;
            Ok(())
        })();
        if let Err(e) = setup {
            r.fail(format!("opening the fault stream: {e}"));
            return;
        }
        for (k, kind) in FaultKind::ALL.into_iter().enumerate() {
            let id = 0xFA00_0000 + k as u32;
            let bytes = match kind {
                FaultKind::BadCrc => faults::bad_crc_frame(id, 0xBAD),
                FaultKind::Truncated => faults::truncated_frame(id, 0xBAD),
                FaultKind::Oversized => faults::oversized_frame(),
                FaultKind::UnknownVersion => faults::version_frame(1, id, 0xBAD),
                FaultKind::BadAudioLength => {
                    faults::audio_frame(id, STREAM, 2, faults::SHORT_PCM_BYTES)
                }
                FaultKind::OutOfOrder => {
                    faults::audio_frame(id, STREAM, 1, outpost_protocol::FRAME_AUDIO_BYTES)
                }
            };
            let res = (|| -> Result<(Option<AnswerKind>, Vec<String>), SessionError> {
                s.send_raw(&bytes)?;
                let end = Instant::now() + timeout;
                let mut unexpected = Vec::new();
                while let Some(a) = s.next_answer(end.saturating_duration_since(Instant::now()))? {
                    match &a.kind {
                        AnswerKind::Error(_) => {
                            if a.request_id != 0 && a.request_id != id {
                                unexpected.push(format!(
                                    "error carries request id {:#x}, sent {id:#x}",
                                    a.request_id
                                ));
                            }
                            return Ok((Some(a.kind), unexpected));
                        }
                        other => unexpected.push(format!(
                            "request {:#x}: {}",
                            a.request_id,
                            other.describe()
                        )),
                    }
                    if Instant::now() >= end {
                        break;
                    }
                }
                Ok((None, unexpected))
            })();
            match res {
                Ok((Some(AnswerKind::Error(e)), unexpected)) => {
                    r.check(
                        kind.accepts(&e),
                        format!(
                            "{}: answered Error({e:?}), expected {}",
                            kind.name(),
                            kind.expected()
                        ),
                    );
                    for u in unexpected {
                        r.fail(format!(
                            "{}: unexpected answer before the error: {u}",
                            kind.name()
                        ));
                    }
                }
                Ok((_, unexpected)) => r.fail(format!(
                    "{}: no Error answer within {} ms (expected {}){}",
                    kind.name(),
                    timeout.as_millis(),
                    kind.expected(),
                    if unexpected.is_empty() {
                        String::new()
                    } else {
                        format!("; got instead: {}", unexpected.join("; "))
                    }
                )),
                Err(e) => {
                    r.fail(format!("{}: {e}", kind.name()));
                    return;
                }
            }
            match s.ping() {
                Ok(us) => {
                    r.check(
                        true,
                        format!("{}: Ping answered after it ({us} µs)", kind.name()),
                    );
                }
                Err(e) => {
                    r.fail(format!(
                        "{}: connection did not recover, Ping: {e}",
                        kind.name()
                    ));
                    return;
                }
            }
        }
        if let Err(e) = s.close_stream(STREAM) {
            r.fail(format!("closing the fault stream: {e}"));
        }
    }

    /// `concurrency`: N clients in parallel (the primary link plus N−1 socket
    /// connections, or N socket connections), each streaming a clip; every frame must
    /// be answered exactly once, with its own seq, and nothing else may arrive.
    pub fn concurrency(&mut self) -> ScenarioResult {
        let mut r = ScenarioResult::new("concurrency");
        let n = self.clients.max(1);
        if !self.device.has_socket() && n > 1 {
            return r.skip(format!(
                "{n} clients need a socket; the device has only its serial link"
            ));
        }
        let use_primary = self.device.primary_is_serial();
        let mut sessions = Vec::new();
        if use_primary {
            match self.primary() {
                Ok(_) => sessions.push(self.primary.take().expect("opened")),
                Err(e) => {
                    r.fail(format!("primary link: {e}"));
                    return r;
                }
            }
        }
        while sessions.len() < n {
            match self.socket_session() {
                Some(Ok(s)) => sessions.push(s),
                Some(Err(e)) => {
                    r.fail(format!("client {}: {e}", sessions.len()));
                    break;
                }
                None => break,
            }
        }
        let audio: Vec<Vec<Vec<u8>>> = (0..sessions.len())
            .map(|i| {
                if self.clips.is_empty() {
                    clips::to_frames(&clips::synth_tone_noise(1.5), clips::TAIL_SILENCE_FRAMES)
                } else {
                    clips::clip_frames(&self.clips[i % self.clips.len()]).unwrap_or_else(|_| {
                        clips::to_frames(&clips::synth_tone_noise(1.5), clips::TAIL_SILENCE_FRAMES)
                    })
                }
            })
            .collect();
        let barrier = Barrier::new(sessions.len());
        let outcomes: Vec<(Session, ClientOutcome)> = std::thread::scope(|scope| {
            let handles: Vec<_> = sessions
                .into_iter()
                .zip(&audio)
                .map(|(mut s, frames)| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        let o = concurrent_client(&mut s, frames, barrier);
                        (s, o)
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let mut all_rtt = LatencySeries::new("concurrency client round trip");
        let mut rows = Vec::new();
        let (mut results, mut misses, mut rejections) = (0, 0, 0);
        for (i, (s, o)) in outcomes.into_iter().enumerate() {
            let link = s.link().to_owned();
            if i == 0 && use_primary {
                self.primary = Some(s);
            }
            all_rtt.extend(&o.rtt);
            results += o.results;
            misses += o.misses;
            rejections += o.rejections;
            r.check(
                o.problems.is_empty(),
                format!(
                    "client {i} ({link}): {} frames, {} results, {} deadline misses, {} rejections{}",
                    o.sent,
                    o.results,
                    o.misses,
                    o.rejections,
                    if o.problems.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", o.problems.join("; "))
                    }
                ),
            );
            rows.push(json!({
                "client": i, "link": link, "frames": o.sent, "results": o.results,
                "deadline_misses": o.misses, "rejections": o.rejections,
                "problems": o.problems, "rtt": o.rtt.summary(),
            }));
        }
        r.summary = format!(
            "{n} clients, {} frames each answered once: {results} results, {misses} deadline misses, {rejections} rejections; rtt p99 {} µs",
            all_rtt.len(),
            all_rtt.summary().p99_us,
        );
        r.latency = vec![all_rtt.summary()];
        r.data = json!({ "clients": rows });
        r
    }
}

/// Counts non-result answers by kind, keeping the first seq of each.
#[derive(Debug, Default)]
struct AnswerTally {
    kinds: Vec<(String, u32, usize)>, // (kind, first seq, count)
}

impl AnswerTally {
    fn add(&mut self, seq: u32, a: &AnswerKind) {
        let kind = match a {
            AnswerKind::Rejected { reason, .. } => format!("Rejected({reason:?})"),
            AnswerKind::DeadlineMissed { .. } => "DeadlineMissed".to_owned(),
            other => other.describe(),
        };
        match self.kinds.iter_mut().find(|(k, _, _)| *k == kind) {
            Some(e) => e.2 += 1,
            None => self.kinds.push((kind, seq, 1)),
        }
    }

    fn lines(&self) -> Vec<String> {
        self.kinds
            .iter()
            .map(|(k, seq, n)| format!("{n} × {k} (first at seq {seq})"))
            .collect()
    }
}

#[derive(Debug, Default)]
struct BackgroundStats {
    results: u64,
    other: Vec<String>,
    error: Option<String>,
}

/// Streams `audio` in a loop on its own stream until `stop`, counting answers.
fn background_stream(
    s: &mut Session,
    audio: &[Vec<u8>],
    stop: &AtomicBool,
    results: &AtomicU64,
) -> BackgroundStats {
    const STREAM: u16 = 0x0B6;
    let mut st = BackgroundStats::default();
    if let Err(e) = s.open_stream(STREAM) {
        st.error = Some(format!("open stream: {e}"));
        return st;
    }
    let mut seq = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let pcm = &audio[seq as usize % audio.len()];
        match s.audio(STREAM, seq, pcm) {
            Ok(rec) => match rec.answer {
                AnswerKind::Frame(_) => {
                    st.results += 1;
                    results.fetch_add(1, Ordering::SeqCst);
                }
                other => st.other.push(format!("seq {seq}: {}", other.describe())),
            },
            Err(e) => {
                st.error = Some(e.to_string());
                return st;
            }
        }
        seq += 1;
    }
    if let Err(e) = s.close_stream(STREAM) {
        st.error = Some(format!("close stream: {e}"));
    }
    st
}

#[derive(Debug)]
struct ClientOutcome {
    sent: usize,
    results: usize,
    misses: usize,
    rejections: usize,
    problems: Vec<String>,
    rtt: LatencySeries,
}

fn concurrent_client(s: &mut Session, frames: &[Vec<u8>], barrier: &Barrier) -> ClientOutcome {
    const STREAM: u16 = 7;
    let mut o = ClientOutcome {
        sent: 0,
        results: 0,
        misses: 0,
        rejections: 0,
        problems: Vec::new(),
        rtt: LatencySeries::new("client round trip"),
    };
    let opened = s.open_stream(STREAM);
    barrier.wait();
    if let Err(e) = opened {
        o.problems.push(format!("open stream: {e}"));
        return o;
    }
    for (seq, pcm) in frames.iter().enumerate() {
        let seq = seq as u32;
        o.sent += 1;
        match s.audio(STREAM, seq, pcm) {
            Ok(rec) => {
                o.rtt.record(rec.rtt_us);
                match rec.answer {
                    AnswerKind::Frame(f) if f.seq == seq && f.stream_id == STREAM => o.results += 1,
                    AnswerKind::Frame(f) => o.problems.push(format!(
                        "seq {seq} answered with a result for stream {} seq {}",
                        f.stream_id, f.seq
                    )),
                    AnswerKind::DeadlineMissed { seq: q, .. } if q == seq => o.misses += 1,
                    AnswerKind::Rejected { seq: q, .. } if q == seq => o.rejections += 1,
                    other => o.problems.push(format!("seq {seq}: {}", other.describe())),
                }
            }
            Err(e) => {
                o.problems.push(format!("seq {seq}: {e}"));
                return o;
            }
        }
    }
    if let Err(e) = s.close_stream(STREAM) {
        o.problems.push(format!("close stream: {e}"));
    }
    // Anything that arrived besides the one answer per request is a duplicate or stray.
    match s.ping() {
        Ok(_) => {
            for a in s.stray.drain(..) {
                o.problems.push(format!(
                    "extra answer for request {:#x}: {}",
                    a.request_id,
                    a.kind.describe()
                ));
            }
        }
        Err(e) => o.problems.push(format!("final Ping: {e}")),
    }
    o
}
