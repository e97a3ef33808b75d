//! The `outpost` client: stream a WAV (or raw s16le from stdin) to a device over a
//! serial port / PTY or the Unix socket, print detections and a latency summary;
//! read status.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use outpost_protocol::client::{Client, Received};
use outpost_protocol::{
    Audio, DeviceState, Hello, OpenStream, RejectReason, Request, Response, VerifyOutcome,
    FRAME_SAMPLES, SAMPLE_RATE_HZ,
};
use serde_json::json;

pub use crate::wav::{read_audio, LoadedAudio, WavFormat};

/// Where the device is.
#[derive(Debug, Clone)]
pub enum Target {
    /// Serial device or PTY slave path, with baud rate.
    Serial(String, u32),
    /// Unix socket path.
    Socket(PathBuf),
}

/// A connected client over either transport.
pub type AnyClient = Client<Box<dyn Read + Send>, Box<dyn Write + Send>>;

/// Connects; `poll` is the read timeout used to interleave sending and receiving.
///
/// # Errors
/// When the device or socket cannot be opened (names it).
pub fn connect(target: &Target, poll: Duration) -> Result<AnyClient> {
    match target {
        Target::Serial(dev, baud) => {
            let port = serialport::new(dev, *baud)
                .timeout(poll)
                .open_native()
                .with_context(|| format!("cannot open serial device {dev} at {baud} baud"))?;
            let w = port
                .try_clone_native()
                .with_context(|| format!("cannot clone {dev}"))?;
            let mut c: AnyClient = Client::new(Box::new(port), Box::new(w));
            // A previous user of the line may have left half a frame behind.
            c.resync()
                .with_context(|| format!("cannot write to {dev}"))?;
            Ok(c)
        }
        Target::Socket(p) => {
            let s = UnixStream::connect(p)
                .with_context(|| format!("cannot connect to {}", p.display()))?;
            s.set_read_timeout(Some(poll))?;
            let w = s.try_clone()?;
            Ok(Client::new(Box::new(s), Box::new(w)))
        }
    }
}

/// Options of `outpost send`.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Pace frames at real time (80 ms per frame) instead of as fast as answers come.
    pub realtime: bool,
    /// Per-frame deadline in µs (0 = device default).
    pub deadline_us: u32,
    /// Silence appended after the audio, in ms, so a command at the very end completes.
    pub tail_ms: u32,
    /// Print JSON lines instead of text.
    pub json: bool,
    /// Stream id to use.
    pub stream_id: u16,
}

/// One detection seen by the client.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenDetection {
    /// Label text.
    pub label: String,
    /// Stage 1: smoothed head score in [0, 1]. Verified (stage 2): the verifier's
    /// margin over `none`, in nats.
    pub score: f32,
    /// Stream time in ms.
    pub audio_ms: u32,
}

/// What a `send` run measured.
#[derive(Debug)]
pub struct SendSummary {
    /// Frames sent.
    pub frames: u32,
    /// Frames answered with a result.
    pub results: u32,
    /// Detections in order.
    pub detections: Vec<SeenDetection>,
    /// `DeadlineMissed` answers.
    pub deadline_misses: u32,
    /// `Rejected` answers.
    pub rejections: u32,
    /// `Error` answers.
    pub errors: u32,
    /// The reason of the last `Rejected` answer, if any.
    pub last_rejection: Option<RejectReason>,
    /// Client-side round trip per frame, µs.
    pub rtt_us: Histogram<u64>,
    /// Device-reported total per frame, µs.
    pub server_total_us: Histogram<u64>,
    /// Device-reported compute per frame, µs.
    pub server_compute_us: Histogram<u64>,
    /// Stage 2 (a bundle with a verifier): triggers answered with a verdict.
    pub verifications: u32,
    /// Stage 2: triggers the verifier heard as no command.
    pub not_commands: u32,
    /// Stage 2: triggers answered `DeadlineMissed`, `Rejected` or `Failed`.
    pub verify_failures: u32,
    /// Stage 2: device-reported total per verification (trigger frame's arrival to the
    /// write), µs.
    pub verify_total_us: Histogram<u64>,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds")
}

fn q(h: &Histogram<u64>) -> serde_json::Value {
    if h.is_empty() {
        return json!(null);
    }
    json!({"p50": h.value_at_quantile(0.5), "p99": h.value_at_quantile(0.99),
           "p999": h.value_at_quantile(0.999), "max": h.max()})
}

impl SendSummary {
    /// Why the run failed, or `None`: every frame was refused (e.g. `NoModel`, a device in
    /// safe mode), or any frame was answered with an error. `outpost send` then exits
    /// non-zero; deadline misses and some rejections alone are answers a loaded device
    /// may legitimately give and do not fail the run.
    pub fn failure(&self) -> Option<String> {
        if self.errors > 0 {
            return Some(format!(
                "{} of {} frames answered with an error",
                self.errors, self.frames
            ));
        }
        if self.frames > 0 && self.results == 0 && self.rejections == self.frames {
            let why = self
                .last_rejection
                .map_or(String::new(), |r| format!(": {r}"));
            return Some(format!("every frame was rejected{why}"));
        }
        None
    }

    /// The summary as the JSON object `outpost send --json` prints last.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "type": "summary",
            "ok": self.failure().is_none(),
            "failure": self.failure(),
            "frames": self.frames,
            "results": self.results,
            "detections": self.detections.len(),
            "deadline_misses": self.deadline_misses,
            "rejections": self.rejections,
            "errors": self.errors,
            "verifications": self.verifications,
            "not_commands": self.not_commands,
            "verify_failures": self.verify_failures,
            "latency_us": {
                "client_rtt": q(&self.rtt_us),
                "server_total": q(&self.server_total_us),
                "server_compute": q(&self.server_compute_us),
                "verify_total": q(&self.verify_total_us),
            }
        })
    }
}

/// Streams `pcm` as one stream and collects every answer. Exactly one answer per frame
/// is expected; a missing answer after 2 s is an error.
///
/// # Errors
/// Transport errors, a handshake failure, or an unanswered frame.
pub fn send(
    client: &mut AnyClient,
    pcm: &[i16],
    opts: &SendOptions,
    out: &mut dyn Write,
) -> Result<SendSummary> {
    let hello = client.call(&Request::Hello(Hello {
        client: "outpost-cli",
    }))?;
    let (labels, verify_deadline_us): (Vec<String>, u32) = match hello.decode().map(|e| e.body) {
        Ok(Response::Hello(h)) => (
            h.labels.iter().map(|s| s.to_string()).collect(),
            h.verify_deadline_us,
        ),
        Ok(Response::Error(e)) => bail!("handshake refused: {e}"),
        other => bail!("unexpected handshake answer: {other:?}"),
    };
    let open = client.call(&Request::OpenStream(OpenStream {
        stream_id: opts.stream_id,
        sample_rate_hz: SAMPLE_RATE_HZ,
        frame_samples: FRAME_SAMPLES as u16,
        deadline_us: opts.deadline_us,
    }))?;
    match open.decode().map(|e| e.body) {
        Ok(Response::StreamOpened { .. }) => {}
        Ok(Response::Error(e)) => bail!("stream refused: {e}"),
        other => bail!("unexpected answer to OpenStream: {other:?}"),
    }

    let mut audio = pcm.to_vec();
    let rem = audio.len() % FRAME_SAMPLES;
    if rem != 0 {
        audio.extend(std::iter::repeat_n(0, FRAME_SAMPLES - rem));
    }
    let tail_frames = (opts.tail_ms as usize * 16).div_ceil(FRAME_SAMPLES);
    audio.extend(std::iter::repeat_n(0, tail_frames * FRAME_SAMPLES));
    let frames: Vec<&[i16]> = audio.chunks_exact(FRAME_SAMPLES).collect();

    let mut s = SendSummary {
        frames: frames.len() as u32,
        results: 0,
        detections: Vec::new(),
        deadline_misses: 0,
        rejections: 0,
        errors: 0,
        last_rejection: None,
        rtt_us: hist(),
        server_total_us: hist(),
        server_compute_us: hist(),
        verifications: 0,
        not_commands: 0,
        verify_failures: 0,
        verify_total_us: hist(),
    };
    let label_of = |i: u8| {
        labels
            .get(usize::from(i))
            .cloned()
            .unwrap_or_else(|| format!("#{i}"))
    };
    // Answers are matched to frames by request id; anything else (e.g. an error about
    // bytes a previous user of a serial line left behind) is reported, not counted.
    let mut in_flight: HashMap<u32, (u32, Instant)> = HashMap::new();
    let mut answered = 0usize;
    let mut pcm_bytes = vec![0u8; FRAME_SAMPLES * 2];
    let start = Instant::now();
    let mut next = 0usize;
    let mut last_progress = Instant::now();
    // With a verifier, a trigger frame's verdict follows its frame answer (same request
    // id), up to the verification deadline later: wait that long after the last frame.
    let verify_wait =
        Duration::from_micros(u64::from(verify_deadline_us)) + Duration::from_millis(100);
    let mut all_answered_at: Option<Instant> = None;
    let mut frame_answered: HashMap<u32, u32> = HashMap::new();
    loop {
        if answered == frames.len() {
            let at = *all_answered_at.get_or_insert_with(Instant::now);
            if verify_deadline_us == 0 || at.elapsed() > verify_wait {
                break;
            }
        }
        // Send: real-time pacing, or one frame in flight (closed loop, measures latency).
        let due = if opts.realtime {
            next < frames.len() && start.elapsed() >= Duration::from_millis(80 * next as u64)
        } else {
            next < frames.len() && next == answered
        };
        if due {
            for (b, v) in pcm_bytes.chunks_exact_mut(2).zip(frames[next]) {
                b.copy_from_slice(&v.to_le_bytes());
            }
            let sent = Instant::now();
            let id = client.send(&Request::Audio(Audio {
                stream_id: opts.stream_id,
                seq: next as u32,
                deadline_us: opts.deadline_us,
                pcm: &pcm_bytes,
            }))?;
            in_flight.insert(id, (next as u32, sent));
            next += 1;
            continue;
        }
        let r = match client.recv() {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                if answered < frames.len() && last_progress.elapsed() > Duration::from_secs(2) {
                    bail!("no answer for frame {answered} within 2 s (device stopped answering)");
                }
                continue;
            }
            Err(e) => return Err(e).context("connection lost"),
        };
        let Received::Frame(f) = r else {
            writeln!(out, "damaged answer frame (ignored)")?;
            continue;
        };
        let env = match f.decode() {
            Ok(env) => env,
            Err(e) => {
                writeln!(out, "undecodable answer: {}", e.error)?;
                continue;
            }
        };
        if let Response::Verification(v) = env.body {
            // A verdict normally follows its trigger frame's answer, but may overtake it.
            let known = frame_answered.remove(&env.request_id).is_some()
                || in_flight.contains_key(&env.request_id);
            if !known {
                writeln!(
                    out,
                    "verification for an unknown frame (request {}) ignored",
                    env.request_id
                )?;
                continue;
            }
            s.verify_total_us
                .saturating_record(u64::from(v.timing.total_us.max(1)));
            let trigger = label_of(v.trigger_label);
            let ms = |us: u32| f64::from(us) / 1000.0;
            match v.outcome {
                VerifyOutcome::Detected(d) => {
                    s.verifications += 1;
                    let label = label_of(d.label);
                    if opts.json {
                        writeln!(
                            out,
                            "{}",
                            json!({"type": "detection", "command": label, "label_index": d.label,
                                   "margin_nats": d.score, "time_ms": d.audio_ms, "seq": v.trigger_seq,
                                   "end_seq": v.end_seq, "trigger": trigger, "verify_total_us": v.timing.total_us,
                                   "verify_compute_us": v.timing.compute_us})
                        )?;
                    } else {
                        writeln!(
                            out,
                            "{:>8.2} s  {label}  (verified: margin {:.1} nats, {:.0} ms after the utterance's last frame)",
                            d.audio_ms as f32 / 1000.0,
                            d.score,
                            ms(v.timing.total_us)
                        )?;
                    }
                    s.detections.push(SeenDetection {
                        label,
                        score: d.score,
                        audio_ms: d.audio_ms,
                    });
                }
                VerifyOutcome::NoCommand { best_label, margin } => {
                    s.verifications += 1;
                    s.not_commands += 1;
                    if opts.json {
                        writeln!(
                            out,
                            "{}",
                            json!({"type": "not_a_command", "trigger": trigger, "best": label_of(best_label),
                                   "margin_nats": margin, "seq": v.trigger_seq, "end_seq": v.end_seq,
                                   "verify_total_us": v.timing.total_us})
                        )?;
                    } else {
                        writeln!(
                            out,
                            "frame {}: trigger '{trigger}' not verified (best '{}', margin {margin:.1} nats)",
                            v.trigger_seq,
                            label_of(best_label)
                        )?;
                    }
                }
                other => {
                    s.verify_failures += 1;
                    if opts.json {
                        writeln!(
                            out,
                            "{}",
                            json!({"type": "verify_failed", "trigger": trigger, "outcome": format!("{other:?}"),
                                   "seq": v.trigger_seq, "verify_total_us": v.timing.total_us,
                                   "deadline_us": v.deadline_us})
                        )?;
                    } else {
                        let what = if trigger == "none" {
                            "the utterance ending here (no trigger)".to_string()
                        } else {
                            format!("trigger '{trigger}'")
                        };
                        writeln!(
                            out,
                            "frame {}: {what} not verified: {other:?} ({:.0} ms, deadline {:.0} ms)",
                            v.trigger_seq,
                            ms(v.timing.total_us),
                            ms(v.deadline_us)
                        )?;
                    }
                }
            }
            continue;
        }
        let Some((seq, sent)) = in_flight.remove(&env.request_id) else {
            if let Response::Error(e) = env.body {
                writeln!(out, "device reported an error not tied to a frame: {e}")?;
            }
            continue;
        };
        last_progress = Instant::now();
        answered += 1;
        if verify_deadline_us > 0 {
            frame_answered.insert(env.request_id, seq);
        }
        s.rtt_us
            .saturating_record(f.received_at.duration_since(sent).as_micros().max(1) as u64);
        match env.body {
            Response::Frame(fr) => {
                s.results += 1;
                s.server_total_us
                    .saturating_record(fr.timing.total_us.max(1) as u64);
                s.server_compute_us
                    .saturating_record(fr.timing.compute_us.max(1) as u64);
                if let Some(d) = fr.detection {
                    let label = label_of(d.label);
                    if opts.json {
                        writeln!(
                            out,
                            "{}",
                            json!({"type": "detection", "command": label, "label_index": d.label,
                                   "score": d.score, "time_ms": d.audio_ms, "seq": fr.seq})
                        )?;
                    } else {
                        writeln!(
                            out,
                            "{:>8.2} s  {label}  (score {:.2})",
                            d.audio_ms as f32 / 1000.0,
                            d.score
                        )?;
                    }
                    s.detections.push(SeenDetection {
                        label,
                        score: d.score,
                        audio_ms: d.audio_ms,
                    });
                }
            }
            Response::DeadlineMissed {
                elapsed_us,
                deadline_us,
                ..
            } => {
                s.deadline_misses += 1;
                if !opts.json {
                    writeln!(
                        out,
                        "frame {seq}: deadline missed ({elapsed_us} µs > {deadline_us} µs)"
                    )?;
                }
            }
            Response::Rejected { reason, .. } => {
                s.rejections += 1;
                s.last_rejection = Some(reason);
                if !opts.json {
                    writeln!(out, "frame {seq}: rejected ({reason})")?;
                }
            }
            Response::Error(e) => {
                s.errors += 1;
                writeln!(out, "frame {seq}: device error: {e}")?;
            }
            other => {
                s.errors += 1;
                writeln!(out, "frame {seq}: unexpected answer {other:?}")?;
            }
        }
    }
    let _ = client.call(&Request::CloseStream {
        stream_id: opts.stream_id,
    });
    Ok(s)
}

/// Prints the human summary of a `send` run.
///
/// # Errors
/// Write errors.
pub fn print_summary(s: &SendSummary, out: &mut dyn Write) -> io::Result<()> {
    let ms = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1000.0
        }
    };
    let max = |h: &Histogram<u64>| {
        if h.is_empty() {
            0.0
        } else {
            h.max() as f64 / 1000.0
        }
    };
    writeln!(
        out,
        "{} frames, {} results, {} detection(s), {} deadline miss(es), {} rejection(s), {} error(s)",
        s.frames,
        s.results,
        s.detections.len(),
        s.deadline_misses,
        s.rejections,
        s.errors
    )?;
    writeln!(out, "latency per frame      p50 ms   p99 ms   max ms")?;
    if !s.verify_total_us.is_empty() {
        writeln!(
            out,
            "stage 2: {} verdict(s), {} trigger(s) heard as no command, {} not verified in time or failed",
            s.verifications, s.not_commands, s.verify_failures
        )?;
    }
    for (name, h) in [
        ("client round trip", &s.rtt_us),
        ("device total", &s.server_total_us),
        ("device compute", &s.server_compute_us),
        ("trigger to verdict", &s.verify_total_us),
    ] {
        if h.is_empty() {
            continue;
        }
        writeln!(
            out,
            "  {name:<19} {:>7.2}  {:>7.2}  {:>7.2}",
            ms(h, 0.5),
            ms(h, 0.99),
            max(h)
        )?;
    }
    Ok(())
}

/// Fetches and prints status (text table, or one JSON object).
///
/// # Errors
/// Transport errors or an unexpected answer.
pub fn status(client: &mut AnyClient, json_out: bool, out: &mut dyn Write) -> Result<()> {
    let f = client.call(&Request::Status)?;
    let env = f
        .decode()
        .map_err(|e| anyhow::anyhow!("undecodable status: {}", e.error))?;
    let st = match env.body {
        Response::Status(st) => st,
        Response::Error(e) => bail!("status refused: {e}"),
        other => bail!("unexpected answer to Status: {other:?}"),
    };
    let key: String = st.key_id.iter().map(|b| format!("{b:02x}")).collect();
    // In safe mode (or while starting) no bundle is served: no name, version or key.
    let served = !st.bundle_name.is_empty();
    let state = match st.state {
        DeviceState::Starting => "starting",
        DeviceState::Ready => "ready",
        DeviceState::SafeMode => "SAFE MODE",
    };
    if json_out {
        let stages: Vec<_> = st
            .latency
            .iter()
            .map(|l| json!({"stage": l.stage.name(), "count": l.count, "p50_us": l.p50_us, "p99_us": l.p99_us,
                            "p999_us": l.p999_us, "max_us": l.max_us, "budget_us": l.budget_us}))
            .collect();
        let providers: Vec<_> = st
            .providers
            .iter()
            .map(|p| json!({"stage": p.stage.name(), "provider": p.provider.name()}))
            .collect();
        writeln!(
            out,
            "{}",
            json!({"state": state, "detail": st.detail,
                   "bundle": served.then_some(st.bundle_name), "version": served.then_some(st.bundle_version),
                   "key_id": served.then_some(key), "development": st.development, "uptime_ms": st.uptime_ms,
                   "boot_to_ready_ms": st.boot_to_ready_ms, "clients": st.clients, "streams": st.streams,
                   "frames": st.frames, "detections": st.detections, "deadline_misses": st.deadline_misses,
                   "rejections": st.rejections, "errors": st.errors, "providers": providers, "latency": stages,
                   "slot": st.slot, "provisioning": st.provisioning,
                   "cancellations": st.cancellations, "wcet_us": st.wcet_us, "typical_us": st.typical_us,
                   "late_writes": st.late_writes, "spread_us": st.spread_us,
                   "throttled_for_errors": st.throttled_for_errors, "closed_for_errors": st.closed_for_errors,
                   "verifications": st.verifications, "verify_misses": st.verify_misses,
                   "verify_rejections": st.verify_rejections, "verify_wcet_us": st.verify_wcet_us,
                   "verify_deadline_us": st.verify_deadline_us})
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "state      {state}{}",
        if st.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", st.detail)
        }
    )?;
    if st.bundle_name.is_empty() {
        writeln!(out, "bundle     none served")?;
    } else {
        writeln!(
            out,
            "bundle     {} v{} (key {key}{})",
            st.bundle_name,
            st.bundle_version,
            if st.development { ", DEVELOPMENT" } else { "" }
        )?;
    }
    writeln!(
        out,
        "uptime     {:.1} s (boot to ready {} ms)",
        st.uptime_ms as f64 / 1000.0,
        st.boot_to_ready_ms
    )?;
    writeln!(
        out,
        "traffic    {} client(s), {} stream(s), {} frames, {} detections, {} deadline misses ({} runs cancelled), {} rejections, {} errors",
        st.clients, st.streams, st.frames, st.detections, st.deadline_misses, st.cancellations, st.rejections, st.errors
    )?;
    writeln!(
        out,
        "isolation  {} connection(s) throttled and {} closed for sending only errors",
        st.throttled_for_errors, st.closed_for_errors
    )?;
    writeln!(
        out,
        "deadline   {} answer(s) written after their deadline{}",
        st.late_writes,
        if st.late_writes == 0 {
            " (every answer on time)"
        } else {
            " (host stalled or a client read too slowly; late results went out as deadline misses)"
        }
    )?;
    if st.verify_deadline_us > 0 {
        writeln!(
            out,
            "verifier   {} verdict(s), {} deadline miss(es), {} refused; deadline {} ms after a trigger, worst case {} µs per verification",
            st.verifications,
            st.verify_misses,
            st.verify_rejections,
            st.verify_deadline_us / 1000,
            st.verify_wcet_us
        )?;
    }
    writeln!(
        out,
        "admission  per frame: worst case {} µs (online p99.9, p99 over the first 2 000 frames; charged to an arriving frame that has to wait), typical {} µs (mean, charged to each frame queued ahead), spread {} µs (standard deviation; 3 × spread × √n on top for n frames queued ahead)",
        st.wcet_us, st.typical_us, st.spread_us
    )?;
    writeln!(out, "\nstage            provider   count     p50 µs   p99 µs   p99.9 µs  max µs   budget µs  p99 within budget")?;
    for l in &st.latency {
        let prov = st
            .providers
            .iter()
            .find(|p| p.stage == l.stage)
            .map_or("-", |p| p.provider.name());
        let ok = if l.count == 0 {
            "-"
        } else if l.p99_us <= l.budget_us {
            "yes"
        } else {
            "NO"
        };
        writeln!(
            out,
            "{:<16} {:<10} {:>8} {:>8} {:>8} {:>10} {:>8} {:>10}  {ok}",
            l.stage.name(),
            prov,
            l.count,
            l.p50_us,
            l.p99_us,
            l.p999_us,
            l.max_us,
            l.budget_us
        )?;
    }
    Ok(())
}

/// Asks the daemon to boot the newly installed slot and switch to it (admin peers on
/// the Unix socket only); prints what is served afterwards.
///
/// # Errors
/// Transport errors, a refusal (not an admin peer), or a failed reload (the previous
/// bundle keeps serving).
pub fn reload(client: &mut AnyClient, out: &mut dyn Write) -> Result<()> {
    client.call_timeout = Duration::from_secs(120);
    let f = client.call(&Request::Reload)?;
    let env = f
        .decode()
        .map_err(|e| anyhow::anyhow!("undecodable answer: {}", e.error))?;
    match env.body {
        Response::Reloaded {
            ok: true,
            bundle_name,
            bundle_version,
            slot,
            ..
        } => {
            writeln!(
                out,
                "reloaded: serving {bundle_name} v{bundle_version} (slot {slot})"
            )?;
            Ok(())
        }
        Response::Reloaded {
            bundle_name,
            bundle_version,
            detail,
            ..
        } => {
            bail!("reload failed, still serving {bundle_name} v{bundle_version}: {detail}")
        }
        Response::Error(e) => bail!("reload refused: {e}"),
        other => bail!("unexpected answer to Reload: {other:?}"),
    }
}
