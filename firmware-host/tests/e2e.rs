//! End to end through the real daemon binary: the dev bundle, ONNX Runtime on CPU, a
//! simulated serial port (PTY pair) and the Unix socket. Needs `scripts/setup` to have
//! run (models, library, dev bundle, hold-out clips); fails with that instruction if not.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use outpost_client::cli::{connect, send, AnyClient, SendOptions, Target};
use outpost_protocol::client::Received;
use outpost_protocol::{
    encode_frame, Audio, DeviceState, OpenStream, RejectReason, Request, Response, VerifyOutcome,
    WireError, CRC32, FRAME_AUDIO_BYTES, FRAME_SAMPLES, MAX_FRAME_BYTES, MAX_PAYLOAD_BYTES,
    PROTOCOL_VERSION, SAMPLE_RATE_HZ,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn need(path: &Path) {
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup first",
        path.display()
    );
}

/// One daemon at a time: each runs 2 inference workers on this 2-core machine, and
/// parallel daemons would make admission control refuse frames (correctly), which is
/// not what these tests are about.
static ONE_DAEMON: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A running `outpostd`, killed on drop.
struct Daemon {
    child: Child,
    _one: std::sync::MutexGuard<'static, ()>,
    pty: Option<String>,
    socket: PathBuf,
    state: String,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Daemon {
    start_with_env(extra, &[])
}

/// The daemon on the two-stage bundle (`.outpost/dev-verifier.bundle`), its verification
/// deadline raised to 2 s: clips streamed as fast as answers come on 2 cores leave the
/// verifier little CPU (deadline behaviour is the scheduler tests',
/// runtime/tests/verification.rs). `extra` goes on the command line after these.
fn start_two_stage(extra: &[&str]) -> Daemon {
    need(&repo().join(".outpost/dev-verifier.bundle"));
    let mut args = vec![
        "--bundle",
        ".outpost/dev-verifier.bundle",
        "--verify-deadline-ms",
        "2000",
    ];
    args.extend_from_slice(extra);
    start(&args)
}

/// Daemon arguments of the run-after-run tests: a 1 s frame deadline. What they check is
/// that answers do not depend on the interleaving; a frame that misses its deadline
/// legitimately changes its stream's later answers, and on an idle virtual machine the
/// first frame after a pause can take 20-28 ms (`outpost send --json` after 0.1-4 s idle,
/// against 2.2 ms p50 back to back; none while the machine is busy), so with the default
/// 30 ms a clip set of 12 could be left with nothing to compare.
const RUN_AFTER_RUN_DEADLINE: [&str; 2] = ["--deadline-ms", "1000"];

fn start_with_env(extra: &[&str], env: &[(&str, &OsStr)]) -> Daemon {
    need(&repo().join(".outpost/dev.bundle"));
    let one = ONE_DAEMON.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("outpostd.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_outpostd"))
        .args(["--dev", "--pty", "--warmup-frames", "10", "--socket"])
        .arg(&socket)
        .args(extra)
        .envs(env.iter().copied())
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn outpostd");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("outpostd printed no READY or SAFE-MODE line within 60 s");
    let state = if line.starts_with("READY ") {
        "ready"
    } else {
        assert!(line.starts_with("SAFE-MODE "), "{line}");
        assert!(
            line.contains(" reason="),
            "a safe-mode line names its reason: {line}"
        );
        "safe-mode"
    };
    let kv = |k: &str| {
        line.split_whitespace()
            .find_map(|t| t.strip_prefix(&format!("{k}=")).map(str::to_string))
    };
    Daemon {
        child,
        _one: one,
        pty: kv("pty"),
        socket,
        state: state.to_string(),
        _dir: dir,
    }
}

/// The hold-out clips of one voice: (path, expected label).
fn clips(voice: &str) -> Vec<(PathBuf, String)> {
    let tsv = repo().join(".outpost/clips/clips.tsv");
    need(&tsv);
    let v: Vec<(PathBuf, String)> = std::fs::read_to_string(&tsv)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() >= 3 && f[2] == voice).then(|| {
                let p = PathBuf::from(f[0]);
                (
                    if p.is_absolute() { p } else { repo().join(p) },
                    f[1].to_string(),
                )
            })
        })
        .collect();
    assert_eq!(
        v.len(),
        12,
        "expected 12 clips of voice {voice} in {}",
        tsv.display()
    );
    v
}

/// The hold-out voice of the end-to-end tests: the first in
/// `models/reference/holdout_voices.txt` (never used in training; the demo uses it too).
/// The reference head recognises all 12 commands in it; the other hold-out voices are
/// scored as a whole by the HIL rig's `commands` scenario (see the training report for
/// the model's accuracy on unseen voices).
fn test_voice() -> String {
    std::fs::read_to_string(repo().join("models/reference/holdout_voices.txt"))
        .unwrap()
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .expect("at least one hold-out voice")
        .trim()
        .to_string()
}

fn read_wav(p: &Path) -> Vec<i16> {
    outpost_client::cli::read_audio(p).unwrap().pcm
}

/// The test voice's clip of `label`: its samples and its expected label.
fn test_clip(label: &str) -> (Vec<i16>, String) {
    let (clip, expected) = clips(&test_voice())
        .into_iter()
        .find(|(_, l)| l == label)
        .unwrap();
    (read_wav(&clip), expected)
}

/// How the tests stream a clip: as fast as answers come, the daemon's default deadline, 1 s
/// of silence after it, JSON lines, stream 1.
fn fast_json() -> SendOptions {
    SendOptions {
        realtime: false,
        deadline_us: 0,
        tail_ms: 1000,
        json: true,
        stream_id: 1,
    }
}

fn recognise(client: &mut AnyClient, pcm: &[i16]) -> Vec<String> {
    let mut sink = Vec::new();
    let s = send(client, pcm, &fast_json(), &mut sink).unwrap();
    // Exactly one answer per frame, none an error. A deadline miss or rejection is a
    // legitimate answer on a shared VM that stalls now and then: the deadline behaviour
    // is proven by the scheduler tests and measured by the benchmarks, not timed here.
    assert_eq!(s.errors, 0);
    assert_eq!(
        s.results + s.deadline_misses + s.rejections,
        s.frames,
        "one answer per frame"
    );
    if s.deadline_misses + s.rejections > 0 {
        eprintln!(
            "note: {} deadline misses, {} rejections in {} frames",
            s.deadline_misses, s.rejections, s.frames
        );
    }
    s.detections.into_iter().map(|d| d.label).collect()
}

/// Streams every clip of `voice`, transformed by `level`, to `target` on a connection of
/// its own; returns one line per clip not recognised as exactly its command, prefixed by
/// `what`.
fn misrecognitions(
    target: &Target,
    voice: &str,
    what: &str,
    level: impl Fn(Vec<i16>) -> Vec<i16>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (path, expected) in clips(voice) {
        let mut c = connect(target, Duration::from_millis(10)).unwrap();
        let got = recognise(&mut c, &level(read_wav(&path)));
        if got != [expected.clone()] {
            failures.push(format!(
                "{what}: {} ({voice}): expected [{expected}], got {got:?}",
                path.display()
            ));
        }
    }
    failures
}

fn assert_all_recognised(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} misrecognitions:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_command_is_recognised_over_the_pty_and_the_socket() {
    let d = start(&[]);
    assert_eq!(d.state, "ready");
    let voice = test_voice();
    let mut failures = Vec::new();
    for (transport, target) in [
        ("pty", Target::Serial(d.pty.clone().unwrap(), 921_600)),
        ("socket", Target::Socket(d.socket.clone())),
    ] {
        failures.extend(misrecognitions(&target, &voice, transport, |pcm| pcm));
    }
    assert_all_recognised(failures);
}

/// The two-stage bundle (`.outpost/dev-verifier.bundle`, format v2): every command of the
/// test voice reaches the client as a verified `Verification` (frame answers carry no
/// detection), the handshake announces the verification deadline, and status counts the
/// verdicts and reports the verifier's latency (deadline raised to 2 s: `start_two_stage`).
#[test]
fn the_two_stage_bundle_verifies_every_command() {
    let d = start_two_stage(&[]);
    assert_eq!(d.state, "ready");
    let target = Target::Socket(d.socket.clone());
    assert_all_recognised(misrecognitions(
        &target,
        &test_voice(),
        "two-stage",
        |pcm| pcm,
    ));
    let mut c = connect(&target, Duration::from_millis(10)).unwrap();
    let hello = c
        .call(&Request::Hello(outpost_protocol::Hello { client: "e2e" }))
        .unwrap();
    match hello.decode().unwrap().body {
        Response::Hello(h) => assert_eq!(h.verify_deadline_us, 2_000_000),
        other => panic!("{other:?}"),
    }
    let f = c.call(&Request::Status).unwrap();
    let Response::Status(st) = f.decode().unwrap().body else {
        panic!("no status");
    };
    assert_eq!(st.verify_deadline_us, 2_000_000);
    assert!(st.verifications >= 12, "{} verdicts", st.verifications);
    assert!(st.detections >= 12 && st.detections <= st.verifications);
    assert_eq!(st.verify_misses + st.verify_rejections, 0);
    assert!(st.verify_wcet_us > 0);
    let verifier = st
        .latency
        .iter()
        .find(|l| l.stage == outpost_protocol::Stage::Verifier)
        .expect("the verifier's latency in status");
    // One compute sample per run: every answered verdict, plus the early verifications
    // that left the answer to the end of the utterance.
    assert!(
        verifier.count >= st.verifications,
        "{} runs for {} verdicts",
        verifier.count,
        st.verifications
    );
}

/// A talker far from the microphone, or an input with its gain set low: the test voice's
/// commands 50 dB below their recorded level (speech RMS about −67 dBFS, peaks under 80
/// LSB), where Silero VAD no longer reports speech at its usual 0.5, are still recognised,
/// because the reference bundle's VAD gate is only a floor (`vad_threshold = 0.005`, which
/// such speech still reaches; with head 16 of the training report a gate at 0.2 lost 7 of the
/// 12; training report items 20 and 22).
/// A command stage 1 misses is heard where its utterance ends: the shipped trigger head
/// never fires on `go ahead` said by the en-gb-x-gbcwmd+m3 voice (that dialect's `ahead`,
/// docs/recognition.md), and the two-stage daemon detects it once, by the verification
/// at the end of the utterance, whose answer carries `none` as its trigger label; with
/// `--no-utterance-verify`, nothing is detected (if a retrained trigger head fires on the
/// clip, pick a clip it misses).
#[test]
fn a_command_the_trigger_misses_is_detected_where_its_utterance_ends() {
    need(&repo().join(".outpost/dev-verifier.bundle"));
    let (clip, expected) = clips("en-gb-x-gbcwmd+m3")
        .into_iter()
        .find(|(_, l)| l == "go ahead")
        .expect("the en-gb-x-gbcwmd+m3 clips (scripts/make-clips)");
    let pcm = read_wav(&clip);
    let verdicts = |d: &Daemon| -> Vec<serde_json::Value> {
        let mut c = connect(&Target::Socket(d.socket.clone()), Duration::from_millis(10)).unwrap();
        let mut out = Vec::new();
        send(&mut c, &pcm, &fast_json(), &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("trigger").is_some())
            .collect()
    };
    let args = |extra: &'static str| {
        let mut a = vec![
            "--bundle",
            ".outpost/dev-verifier.bundle",
            "--verify-deadline-ms",
            "2000",
        ];
        a.extend((!extra.is_empty()).then_some(extra));
        a
    };
    let d = start(&args(""));
    let got = verdicts(&d);
    assert!(
        matches!(got.as_slice(), [v] if v["type"] == "detection"
            && v["command"] == expected.as_str() && v["trigger"] == "none"
            && v["seq"] == v["end_seq"]),
        "expected one `{expected}` with no trigger, got {got:?}"
    );
    drop(d);
    let d = start(&args("--no-utterance-verify"));
    let got = verdicts(&d);
    assert!(
        got.iter().all(|v| v["type"] != "detection"),
        "stage 1 alone: expected no detection (the trigger misses this clip), got {got:?}"
    );
}

#[test]
fn commands_50_db_below_the_recorded_level_are_recognised_over_the_socket() {
    let d = start(&[]);
    let gain = 10f32.powf(-50.0 / 20.0);
    let quiet = |pcm: Vec<i16>| -> Vec<i16> {
        pcm.iter()
            .map(|&s| (f32::from(s) * gain).round() as i16)
            .collect()
    };
    let target = Target::Socket(d.socket.clone());
    assert_all_recognised(misrecognitions(
        &target,
        &test_voice(),
        "socket at -50 dB",
        quiet,
    ));
}

/// A field recording is rarely 16 kHz mono 16-bit: `outpost send` converts it (rubato FFT
/// resampler, channels averaged) and the command is still recognised.
#[test]
fn a_48_khz_stereo_recording_is_converted_by_outpost_send_and_recognised() {
    use outpost_client::cli::read_audio;
    use rubato::audioadapter_buffers::owned::InterleavedOwned;
    use rubato::{Fft, FixedSync, Resampler};

    let d = start(&[]);
    let (pcm, expected) = test_clip("lights off");
    // The clip at 48 kHz: left channel at full level, right at half (a second mic).
    let x: Vec<f32> = pcm.iter().map(|&v| f32::from(v) / 32_768.0).collect();
    let n = x.len();
    let up = Fft::<f32>::new(16_000, 48_000, 1024, 1, FixedSync::Input)
        .unwrap()
        .process_all(&InterleavedOwned::new_from(x, 1, n).unwrap(), n, None)
        .unwrap()
        .take_data();
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("lights_off_48k_stereo.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 48_000,
        bits_per_sample: 24,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    for v in &up {
        let s = (v * 8_388_607.0).round().clamp(-8_388_608.0, 8_388_607.0) as i32;
        w.write_sample(s).unwrap();
        w.write_sample(s / 2).unwrap();
    }
    w.finalize().unwrap();
    assert_eq!(read_audio(&wav).unwrap().pcm.len(), n);

    let out = Command::new(outpost_client_bin())
        .arg("send")
        .arg(&wav)
        .arg("--socket")
        .arg(&d.socket)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "outpost send failed: {stderr}");
    assert!(
        stderr.contains("converted from 48000 Hz, 2 channel(s), 24-bit integer"),
        "no conversion note: {stderr}"
    );
    let detected: Vec<String> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "detection")
        .map(|v| v["command"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(detected, [expected], "stdout: {stdout}");
}

/// A client that sends only garbage is throttled and then closed, and a well-behaved
/// client on another connection is answered throughout.
#[test]
fn a_connection_that_sends_only_errors_is_closed_and_others_are_served() {
    use std::io::{Read, Write};
    let d = start(&[]);
    let mut good = connect(&Target::Socket(d.socket.clone()), Duration::from_secs(2)).unwrap();
    let mut bad = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // 400 frames with a bad CRC (valid COBS, 0x00-delimited): one error answer each.
    let garbage: Vec<u8> = (0..400).flat_map(|_| [0x03, 0x01, 0x02, 0x00]).collect();
    bad.write_all(&garbage).unwrap();
    let mut answers = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match bad.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answers.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the daemon did not close the garbage connection: {e}"),
        }
        let f = good.call(&Request::Ping { nonce: 9 }).unwrap();
        assert!(matches!(
            f.decode().unwrap().body,
            Response::Pong { nonce: 9 }
        ));
    }
    let errors = answers.iter().filter(|&&b| b == 0).count();
    assert!(
        errors >= 256,
        "every bad frame before the close was answered: {errors}"
    );
    let f = good.call(&Request::Ping { nonce: 10 }).unwrap();
    assert!(matches!(
        f.decode().unwrap().body,
        Response::Pong { nonce: 10 }
    ));
    // Status counts the throttled and the closed connection, not the good one.
    let f = good.call(&Request::Status).unwrap();
    let env = f.decode().unwrap();
    match env.body {
        Response::Status(st) => {
            assert_eq!(
                (st.throttled_for_errors, st.closed_for_errors),
                (1, 1),
                "{st:?}"
            );
            assert!(st.errors >= 256, "{st:?}");
        }
        other => panic!("expected a status, got {other:?}"),
    }
}

/// Connections that only hold a client slot (three bytes of a frame that never ends)
/// are closed 5 s after they connect. While they hold every slot a new client reads
/// `TooManyClients` (the daemon drains its request first, so the answer is not lost to
/// a reset), and once they are gone it is served.
#[test]
fn idle_half_frame_connections_are_closed_and_a_refused_client_reads_why() {
    use outpost_protocol::{decode_payload, FrameDecoder};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let d = start(&[]);
    let mut idle = Vec::new();
    for _ in 0..16 {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.write_all(&[0x05, 0x01, 0x02]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        idle.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut refused = UnixStream::connect(&d.socket).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut scratch = [0u8; MAX_PAYLOAD_BYTES];
    let mut out = [0u8; MAX_FRAME_BYTES];
    let n = encode_frame(7, &Request::Ping { nonce: 7 }, &mut scratch, &mut out).unwrap();
    let _ = refused.write_all(&out[..n]);
    let mut bytes = Vec::new();
    let _ = refused.read_to_end(&mut bytes);
    let mut dec = FrameDecoder::<MAX_FRAME_BYTES>::new();
    let mut answers = Vec::new();
    for &b in &bytes {
        if let Some(r) = dec.push(b) {
            let body = decode_payload::<Response<'_>>(r.unwrap()).unwrap().body;
            answers.push(format!("{body:?}"));
        }
    }
    assert!(
        answers.len() == 1 && answers[0].contains("TooManyClients"),
        "a client over the limit reads why: {answers:?} ({} bytes)",
        bytes.len()
    );
    // So does the CLI: `outpost status` says why instead of "peer closed".
    let mut full = connect(&Target::Socket(d.socket.clone()), Duration::from_secs(2)).unwrap();
    let mut out = Vec::new();
    let e = outpost_client::cli::status(&mut full, false, &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("too many clients"), "{e}");
    // Each slot holder is closed by the daemon (EOF), none answered with a result.
    for s in &mut idle {
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("an idle half-frame connection was not closed: {e}"),
        }
    }
    let mut c = connect(&Target::Socket(d.socket.clone()), Duration::from_secs(2)).unwrap();
    let f = c.call(&Request::Status).unwrap();
    let env = f.decode().unwrap();
    match env.body {
        Response::Status(st) => assert!(st.closed_for_errors >= 15, "{st:?}"),
        other => panic!("expected a status, got {other:?}"),
    }
}

/// A second daemon never takes a live socket or PTY link from the first: it refuses to
/// start, naming the pid that serves the socket, and the first keeps answering. A stale
/// socket file (nothing answers) is replaced.
#[test]
fn a_second_daemon_refuses_a_socket_or_pty_link_that_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("outpost-tty");
    let d = start(&["--pty-link", link.to_str().unwrap()]);
    let pid = d.child.id();
    let second = |args: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_outpostd"))
            .args(["--dev", "--no-rt", "--warmup-frames", "2"])
            .args(args)
            .current_dir(repo())
            .output()
            .unwrap()
    };
    let out = second(&["--socket".as_ref(), d.socket.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a second daemon started on a live socket"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("READY"));
    assert!(stderr.contains(&format!("pid {pid}")), "{stderr}");
    let out = second(&["--pty".as_ref(), "--pty-link".as_ref(), link.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a second daemon took a live PTY link"
    );
    assert!(stderr.contains("still open"), "{stderr}");
    // The first daemon still serves both.
    let mut c = connect(&Target::Socket(d.socket.clone()), Duration::from_secs(2)).unwrap();
    let f = c.call(&Request::Ping { nonce: 1 }).unwrap();
    assert!(matches!(
        f.decode().unwrap().body,
        Response::Pong { nonce: 1 }
    ));
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new(d.pty.as_ref().unwrap())
    );
    drop(c);
    // A socket file nobody answers on is stale and replaced.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let mut third = Command::new(env!("CARGO_BIN_EXE_outpostd"))
        .args(["--dev", "--no-rt", "--warmup-frames", "2", "--socket"])
        .arg(&stale)
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    BufReader::new(third.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let _ = third.kill();
    let _ = third.wait();
    assert!(first_line.starts_with("READY "), "{first_line}");
}

/// What the daemon answered to one frame, bit for bit: VAD probability, and the detection
/// (label, score, stream time) if any; for a frame not answered with a result, the answer.
type FrameTrace = Result<(u32, Option<(u8, u32, u32)>), String>;

/// One stage-2 verdict, bit for bit: trigger frame, stage 1's label, end frame, and the
/// verdict (`Detected` label and margin bits, or `NoCommand` best label and margin bits);
/// the verdict is the outcome itself when it was a deadline miss, a refusal or a failure.
type VerdictTrace = (u32, u8, u32, Result<(bool, u8, u32), String>);

/// Streams `pcm` (plus 1 s of silence) closed loop on a new stream of `client` and
/// returns the answer to every frame, then waits `verify_wait` for the verdicts still owed
/// (every verification's end frame is among those answered, so each verdict comes within
/// its deadline of it) and returns them in arrival order.
fn stream_trace(
    client: &mut AnyClient,
    stream_id: u16,
    pcm: &[i16],
    verify_wait: Duration,
) -> (Vec<FrameTrace>, Vec<VerdictTrace>) {
    let open = client
        .call(&Request::OpenStream(OpenStream {
            stream_id,
            sample_rate_hz: SAMPLE_RATE_HZ,
            frame_samples: FRAME_SAMPLES as u16,
            deadline_us: 0,
        }))
        .unwrap();
    assert!(matches!(
        open.decode().unwrap().body,
        Response::StreamOpened { .. }
    ));
    let mut audio = pcm.to_vec();
    audio.resize(
        audio.len().div_ceil(FRAME_SAMPLES) * FRAME_SAMPLES + 16_000,
        0,
    );
    let (mut trace, mut verdicts) = (Vec::new(), Vec::new());
    let mut bytes = vec![0u8; FRAME_AUDIO_BYTES];
    for (seq, frame) in audio.chunks_exact(FRAME_SAMPLES).enumerate() {
        for (b, v) in bytes.chunks_exact_mut(2).zip(frame) {
            b.copy_from_slice(&v.to_le_bytes());
        }
        let id = client
            .send(&Request::Audio(Audio {
                stream_id,
                seq: seq as u32,
                deadline_us: 0,
                pcm: &bytes,
            }))
            .unwrap();
        let answer = loop {
            match client.recv() {
                Ok(Received::Frame(f)) if f.request_id() == id => break f,
                Ok(Received::Frame(f)) => {
                    keep_verdict(stream_id, &f.decode().unwrap().body, &mut verdicts);
                }
                Ok(_) => continue,
                Err(e) if no_data_yet(&e) => continue,
                Err(e) => panic!("connection lost: {e}"),
            }
        };
        trace.push(match answer.decode().unwrap().body {
            Response::Frame(r) => Ok((
                r.vad_prob.to_bits(),
                r.detection
                    .map(|d| (d.label, d.score.to_bits(), d.audio_ms)),
            )),
            missed @ (Response::DeadlineMissed { .. } | Response::Rejected { .. }) => {
                Err(format!("frame {missed:?}"))
            }
            other => panic!("unexpected answer {other:?}"),
        });
    }
    let until = Instant::now() + verify_wait;
    while Instant::now() < until {
        match client.recv() {
            Ok(Received::Frame(f)) => {
                let body = f.decode().unwrap().body;
                assert!(
                    keep_verdict(stream_id, &body, &mut verdicts),
                    "unexpected answer {body:?}"
                );
            }
            Ok(_) => continue,
            Err(e) if no_data_yet(&e) => continue,
            Err(e) => panic!("connection lost: {e}"),
        }
    }
    client.call(&Request::CloseStream { stream_id }).unwrap();
    (trace, verdicts)
}

/// Appends `body` to `verdicts` if it is a verdict of `stream_id`; false if it is not.
fn keep_verdict(stream_id: u16, body: &Response, verdicts: &mut Vec<VerdictTrace>) -> bool {
    let Response::Verification(v) = body else {
        return false;
    };
    if v.stream_id != stream_id {
        return false;
    }
    let verdict = match v.outcome {
        VerifyOutcome::Detected(d) => Ok((true, d.label, d.score.to_bits())),
        VerifyOutcome::NoCommand { best_label, margin } => {
            Ok((false, best_label, margin.to_bits()))
        }
        other => Err(format!("verification {other:?}")),
    };
    verdicts.push((v.trigger_seq, v.trigger_label, v.end_seq, verdict));
    true
}

/// The hold-out clips of every voice in `models/reference/holdout_voices.txt`: (path, PCM).
fn holdout_clips() -> Vec<(String, Vec<i16>)> {
    std::fs::read_to_string(repo().join("models/reference/holdout_voices.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .flat_map(|v| clips(v.trim()))
        .map(|(p, _)| (p.display().to_string(), read_wav(&p)))
        .collect()
}

/// Streams `clips` once alone on one connection, then again on two connections at once in
/// the opposite order (so each clip's frames and verifications run on other workers,
/// between other streams' work, in other stream states' company), and compares every
/// frame answer and every verdict bit for bit. A frame answered `DeadlineMissed` or
/// `Rejected`, or a verification missed, refused or failed, is the one legitimate source of
/// difference: such clips are left out and counted, and at most `max_skipped` may be.
/// Returns the number of clips compared and the verdicts of the first pass.
fn assert_same_answers_run_after_run(
    target: &Target,
    clips: &[(String, Vec<i16>)],
    verify_wait: Duration,
    max_skipped: usize,
) -> (usize, usize) {
    let mut c = connect(target, Duration::from_millis(20)).unwrap();
    let first: Vec<_> = clips
        .iter()
        .map(|(_, pcm)| stream_trace(&mut c, 1, pcm, verify_wait))
        .collect();
    drop(c);
    let halves: Vec<Vec<(usize, _)>> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..2)
            .map(|half| {
                s.spawn(move || {
                    let mut c = connect(target, Duration::from_millis(20)).unwrap();
                    (0..clips.len())
                        .rev()
                        .filter(|i| i % 2 == half)
                        .map(|i| (i, stream_trace(&mut c, 7, &clips[i].1, verify_wait)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // The first answer of a run that was not a result, if any.
    let incomplete = |(frames, verdicts): &(Vec<FrameTrace>, Vec<VerdictTrace>)| {
        let frame = frames.iter().find_map(|f| f.as_ref().err());
        frame
            .or_else(|| verdicts.iter().find_map(|v| v.3.as_ref().err()))
            .cloned()
    };
    let (mut compared, mut skipped, mut differ) = (0, Vec::new(), Vec::new());
    for (i, again) in halves.into_iter().flatten() {
        if let Some(why) = incomplete(&first[i]).or_else(|| incomplete(&again)) {
            skipped.push(format!("{}: {why}", clips[i].0));
            continue;
        }
        compared += 1;
        if first[i].0 != again.0 {
            let at = first[i].0.iter().zip(&again.0).position(|(a, b)| a != b);
            differ.push(format!("{} (first difference at frame {at:?})", clips[i].0));
        } else if first[i].1 != again.1 {
            differ.push(format!(
                "{}: verdicts {:?} then {:?}",
                clips[i].0, first[i].1, again.1
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "answers differ between runs: {differ:#?}"
    );
    assert!(
        skipped.len() <= max_skipped,
        "{} of {} clips had a frame or a verification missed or refused; too few to compare: \
         {skipped:#?}",
        skipped.len(),
        clips.len()
    );
    let verdicts = first.iter().map(|(_, v)| v.len()).sum();
    (compared, verdicts)
}

/// The same audio through the same bundle gives the same answers, bit for bit, whatever
/// the interleaving: every hold-out clip streamed once alone, then again on two
/// connections at once (`assert_same_answers_run_after_run`), under a 1 s frame
/// deadline (`RUN_AFTER_RUN_DEADLINE`).
#[test]
fn the_same_audio_gives_the_same_scores_run_after_run() {
    let d = start(&RUN_AFTER_RUN_DEADLINE);
    let clips = holdout_clips();
    assert_same_answers_run_after_run(&Target::Socket(d.socket.clone()), &clips, Duration::ZERO, 3);
}

/// Stage 2 as well: through the two-stage bundle every hold-out clip gives the same frame
/// answers and the same verdicts (trigger frame, end frame, label, margin bits) alone and
/// interleaved with another stream. A verdict is owed at most the verification deadline
/// (2 s, `start_two_stage`) after its end frame, so each clip waits 2.1 s after its last
/// frame. Frames run under the same 1 s deadline as the scores test.
#[test]
fn the_same_audio_gives_the_same_verdicts_run_after_run() {
    let d = start_two_stage(&RUN_AFTER_RUN_DEADLINE);
    let clips: Vec<(String, Vec<i16>)> = clips(&test_voice())
        .into_iter()
        .map(|(p, _)| (p.display().to_string(), read_wav(&p)))
        .collect();
    let (compared, verdicts) = assert_same_answers_run_after_run(
        &Target::Socket(d.socket.clone()),
        &clips,
        Duration::from_millis(2100),
        3,
    );
    assert!(
        verdicts >= compared,
        "{verdicts} verdicts for {compared} command clips: stage 2 did not run"
    );
}

/// Under systemd (`Type=notify`, `WatchdogSec=`) the daemon says `READY=1` once it
/// serves and then pings the watchdog while its deadline timer runs: here the test is
/// systemd, with its own notify socket and a 400 ms watchdog.
#[test]
fn the_daemon_notifies_systemd_when_ready_and_pings_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let d = start_with_env(
        &[],
        &[
            ("NOTIFY_SOCKET", notify.as_os_str()),
            ("WATCHDOG_USEC", OsStr::new("400000")),
        ],
    );
    assert_eq!(d.state, "ready");
    let mut buf = [0u8; 1024];
    let mut next = || {
        let n = sock.recv(&mut buf).expect("a notification within 60 s");
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let first = next();
    assert!(first.contains("READY=1"), "first notification: {first:?}");
    assert!(first.contains("STATUS=READY state=ready"), "{first:?}");
    for _ in 0..3 {
        let ping = next();
        assert_eq!(ping.trim(), "WATCHDOG=1");
    }
}

/// The `outpost` client binary. It is another package's binary (`outpost-client`), so
/// Cargo gives this crate no `CARGO_BIN_EXE_` for it: it is taken from the same target
/// directory as this test (`target/<profile>/outpost`, built by `cargo build --bins`,
/// which `scripts/setup` runs before the tests).
fn outpost_client_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("outpost"))
        .unwrap();
    assert!(
        bin.is_file(),
        "{} is missing: build the client first with `cargo build --release -p outpost-client`",
        bin.display()
    );
    bin
}

fn frame_bytes(id: u32, req: &Request<'_>) -> Vec<u8> {
    let mut scratch = [0u8; MAX_PAYLOAD_BYTES];
    let mut out = [0u8; MAX_FRAME_BYTES];
    let n = encode_frame(id, req, &mut scratch, &mut out).unwrap();
    out[..n].to_vec()
}

/// A frame from a protocol-v1 client: its envelope says version 1 (valid CRC and COBS).
fn version1_frame(id: u8) -> Vec<u8> {
    let mut payload = vec![1u8, id, 1, 5];
    payload.extend(CRC32.checksum(&payload).to_le_bytes());
    let mut enc = vec![0u8; payload.len() + 4];
    let n = cobs::encode(&payload, &mut enc);
    enc.truncate(n);
    enc.push(0);
    enc
}

/// True for a read that only timed out or would block: nothing has arrived yet.
fn no_data_yet(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// Next decoded answer (skipping nothing), as an owned summary.
fn next(c: &mut AnyClient) -> Result<(u32, String), WireError> {
    loop {
        match c.recv() {
            Ok(Received::Frame(f)) => {
                let env = f.decode().map_err(|e| e.error)?;
                return Ok((env.request_id, format!("{:?}", env.body)));
            }
            Ok(Received::Damaged(e)) => return Err(e),
            Err(e) if no_data_yet(&e) => continue,
            Err(e) => panic!("connection lost: {e}"),
        }
    }
}

/// The next answer must be `Response::Error` of one of the `kinds` (variant names).
fn expect_error(c: &mut AnyClient, what: &str, kinds: &[&str]) {
    let (_, body) = next(c).unwrap();
    assert!(
        kinds
            .iter()
            .any(|k| body.starts_with(&format!("Error({k}"))),
        "{what}: expected Error({}), got {body}",
        kinds.join(" | ")
    );
}

fn bad_input_then_ping(c: &mut AnyClient) {
    // Corrupt CRC: flip a data byte of a valid ping frame.
    let mut bad = frame_bytes(11, &Request::Ping { nonce: 1 });
    bad[3] ^= 0x80;
    c.send_raw(&bad).unwrap();
    expect_error(c, "corrupt CRC", &["BadCrc"]);
    // Truncated: a frame cut short and terminated.
    let full = frame_bytes(
        12,
        &Request::OpenStream(OpenStream {
            stream_id: 5,
            sample_rate_hz: SAMPLE_RATE_HZ,
            frame_samples: FRAME_SAMPLES as u16,
            deadline_us: 0,
        }),
    );
    let mut cut = full[..full.len() / 2].to_vec();
    cut.push(0);
    c.send_raw(&cut).unwrap();
    expect_error(c, "truncated frame", &["BadCrc", "Truncated", "BadCobs"]);
    // Oversized: 9000 bytes without a delimiter.
    let mut big = vec![0x55u8; 9000];
    big.push(0);
    c.send_raw(&big).unwrap();
    expect_error(c, "oversized frame", &["FrameTooLong"]);
    // Unknown version.
    c.send_raw(&version1_frame(13)).unwrap();
    let (id, body) = next(c).unwrap();
    assert_eq!(id, 13, "the version error keeps the request id");
    assert!(
        body.contains(&format!(
            "UnknownVersion {{ got: 1, supported: {PROTOCOL_VERSION} }}"
        )),
        "{body}"
    );
    // Wrong audio length on an unopened stream and a short pcm.
    let pcm = vec![0u8; FRAME_AUDIO_BYTES - 2];
    c.send(&Request::Audio(Audio {
        stream_id: 77,
        seq: 0,
        deadline_us: 0,
        pcm: &pcm,
    }))
    .unwrap();
    let (_, body) = next(c).unwrap();
    assert!(body.contains("UnknownStream"), "{body}");
    // The connection still works.
    c.send_with_id(99, &Request::Ping { nonce: 42 }).unwrap();
    let (id, body) = next(c).unwrap();
    assert_eq!((id, body.as_str()), (99, "Pong { nonce: 42 }"));
}

#[test]
fn bad_frames_get_explicit_errors_and_other_clients_keep_being_served() {
    let d = start(&[]);
    let (pcm, expected) = test_clip("lights off");
    // A neighbour streams over the socket while the faults hit the PTY and another socket.
    let sock = d.socket.clone();
    let pcm2 = pcm.clone();
    let neighbour = std::thread::spawn(move || {
        let mut n = connect(&Target::Socket(sock), Duration::from_millis(10)).unwrap();
        (0..3).map(|_| recognise(&mut n, &pcm2)).collect::<Vec<_>>()
    });
    let mut pty = connect(
        &Target::Serial(d.pty.clone().unwrap(), 921_600),
        Duration::from_millis(10),
    )
    .unwrap();
    bad_input_then_ping(&mut pty);
    let mut s = connect(&Target::Socket(d.socket.clone()), Duration::from_millis(10)).unwrap();
    bad_input_then_ping(&mut s);
    // After the faults, the PTY still recognises speech.
    assert_eq!(recognise(&mut pty, &pcm), std::slice::from_ref(&expected));
    for got in neighbour.join().unwrap() {
        assert_eq!(got, std::slice::from_ref(&expected), "neighbour unaffected");
    }
    // Out-of-order and wrong-length audio on an open stream.
    s.send(&Request::OpenStream(OpenStream {
        stream_id: 3,
        sample_rate_hz: SAMPLE_RATE_HZ,
        frame_samples: FRAME_SAMPLES as u16,
        deadline_us: 0,
    }))
    .unwrap();
    assert!(next(&mut s).unwrap().1.starts_with("StreamOpened"));
    let zeros = vec![0u8; FRAME_AUDIO_BYTES];
    s.send(&Request::Audio(Audio {
        stream_id: 3,
        seq: 5,
        deadline_us: 0,
        pcm: &zeros,
    }))
    .unwrap();
    assert!(next(&mut s).unwrap().1.starts_with("Frame("));
    s.send(&Request::Audio(Audio {
        stream_id: 3,
        seq: 4,
        deadline_us: 0,
        pcm: &zeros,
    }))
    .unwrap();
    assert!(next(&mut s)
        .unwrap()
        .1
        .contains("OutOfOrder { stream_id: 3, expected: 6, got: 4 }"));
    s.send(&Request::Audio(Audio {
        stream_id: 3,
        seq: 6,
        deadline_us: 0,
        pcm: &zeros[..100],
    }))
    .unwrap();
    assert!(next(&mut s)
        .unwrap()
        .1
        .contains("BadAudioLength { got: 100, expected: 2560 }"));
}

/// Starts the daemon on `bundle` and checks it stays up in safe mode: status answers
/// with the reason, audio is refused with `NoModel`, ping works.
fn assert_safe_mode(bundle: &Path, reason: &str) {
    let d = start(&["--bundle", bundle.to_str().unwrap()]);
    assert_eq!(d.state, "safe-mode");
    let mut c = connect(&Target::Socket(d.socket.clone()), Duration::from_secs(2)).unwrap();
    let f = c.call(&Request::Status).unwrap();
    let env = f.decode().unwrap();
    let Response::Status(st) = env.body else {
        panic!("{:?}", env.body)
    };
    assert_eq!(st.state, DeviceState::SafeMode);
    assert!(
        st.detail.contains(reason),
        "status detail '{}' should name '{reason}'",
        st.detail
    );
    let f = c
        .call(&Request::OpenStream(OpenStream {
            stream_id: 1,
            sample_rate_hz: SAMPLE_RATE_HZ,
            frame_samples: FRAME_SAMPLES as u16,
            deadline_us: 0,
        }))
        .unwrap();
    assert!(matches!(
        f.decode().unwrap().body,
        Response::StreamOpened { .. }
    ));
    let pcm = vec![0u8; FRAME_AUDIO_BYTES];
    let f = c
        .call(&Request::Audio(Audio {
            stream_id: 1,
            seq: 0,
            deadline_us: 0,
            pcm: &pcm,
        }))
        .unwrap();
    assert!(matches!(
        f.decode().unwrap().body,
        Response::Rejected {
            reason: RejectReason::NoModel,
            ..
        }
    ));
    let f = c.call(&Request::Ping { nonce: 7 }).unwrap();
    assert!(matches!(
        f.decode().unwrap().body,
        Response::Pong { nonce: 7 }
    ));
    drop(c);
    // The client tells a script the truth: every frame refused is a failure, and status
    // names the reason instead of a zero key and v0.
    let (clip, _) = clips(&test_voice()).remove(0);
    let out = Command::new(outpost_client_bin())
        .args(["send", "--json", "--socket"])
        .arg(&d.socket)
        .arg(&clip)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "send into safe mode must fail");
    assert!(stderr.contains("every frame was rejected"), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"ok\":false"),
        "the JSON summary says it failed"
    );
    let out = Command::new(outpost_client_bin())
        .args(["status", "--socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains("SAFE MODE: ") && status.contains(reason),
        "{status}"
    );
    assert!(status.contains("bundle     none served"), "{status}");
}

#[test]
fn a_bundle_with_a_flipped_byte_is_refused_with_the_reason() {
    let good = std::fs::read(repo().join(".outpost/dev.bundle")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // One byte in the last payload file (the command head or self-test audio).
    let mut bad = good.clone();
    let at = bad.len() - 100;
    bad[at] ^= 0x01;
    let p = dir.path().join("flipped.bundle");
    std::fs::write(&p, &bad).unwrap();
    assert_safe_mode(&p, "SHA-256 mismatch");
    // One byte in the manifest: the signature no longer verifies.
    let mut bad = good;
    bad[40] ^= 0x01;
    let p = dir.path().join("flipped-manifest.bundle");
    std::fs::write(&p, &bad).unwrap();
    assert_safe_mode(&p, "signature");
}

#[test]
fn a_bundle_signed_by_an_unknown_key_is_refused_with_the_key_id() {
    let key =
        outpost_models::SigningKey::from_pkcs8(&outpost_models::SigningKey::generate().unwrap())
            .unwrap();
    let bytes = resigned(&key, |m| m.development = false);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("stranger.bundle");
    std::fs::write(&p, bytes).unwrap();
    assert_safe_mode(&p, &key.key_id().to_string());
}

#[test]
fn a_new_session_on_the_serial_line_replaces_a_crashed_clients_streams() {
    let d = start(&[]);
    let target = Target::Serial(d.pty.clone().unwrap(), 921_600);
    let open = Request::OpenStream(OpenStream {
        stream_id: 1,
        sample_rate_hz: SAMPLE_RATE_HZ,
        frame_samples: FRAME_SAMPLES as u16,
        deadline_us: 0,
    });
    {
        // A client opens stream 1, sends half a frame, and vanishes.
        let mut c = connect(&target, Duration::from_millis(10)).unwrap();
        assert!(matches!(
            c.call(&open).unwrap().decode().unwrap().body,
            Response::StreamOpened { .. }
        ));
        c.send_raw(&frame_bytes(5, &Request::Ping { nonce: 1 })[..4])
            .unwrap();
    }
    // The next client resynchronises (connect sends 0x00), says hello, and reuses id 1.
    let voice = test_voice();
    let (clip, expected) = clips(&voice).into_iter().next().unwrap();
    let mut c = connect(&target, Duration::from_millis(10)).unwrap();
    assert_eq!(recognise(&mut c, &read_wav(&clip)), [expected]);
}

#[test]
fn boots_the_installed_slot_marks_it_good_and_reports_it() {
    let state = tempfile::tempdir().unwrap();
    dev_install(&repo().join(".outpost/dev.bundle"), state.path()).unwrap();
    let d = start_slots(state.path());
    assert_eq!(d.state, "ready");
    let mut c = connect(&Target::Socket(d.socket.clone()), Duration::from_secs(2)).unwrap();
    let f = c.call(&Request::Status).unwrap();
    let Response::Status(st) = f.decode().unwrap().body else {
        panic!()
    };
    assert_eq!(
        st.slot, "a (trial)",
        "first boot of a new slot is its trial"
    );
    assert!(
        st.provisioning.contains("mark-good ok"),
        "{}",
        st.provisioning
    );
    drop(c);
    drop(d);
    // Second boot: the slot is proven now.
    let d = start_slots(state.path());
    let mut c = connect(&Target::Socket(d.socket.clone()), Duration::from_secs(2)).unwrap();
    let f = c.call(&Request::Status).unwrap();
    let Response::Status(st) = f.decode().unwrap().body else {
        panic!()
    };
    assert_eq!(st.slot, "a");
}

/// The development key as the only trusted key, development bundles allowed: what an
/// install on a dev device uses.
fn dev_trust() -> (outpost_models::TrustedKeys, outpost_models::VerifyOptions) {
    (
        outpost_models::TrustedKeys::load_dir(&repo().join("models/reference/dev-keys")).unwrap(),
        outpost_models::VerifyOptions {
            allow_development: true,
            expected_compatible: None,
        },
    )
}

/// Installs `bundle` into the state directory `state` as on a dev device (`dev_trust`).
fn dev_install(
    bundle: &Path,
    state: &Path,
) -> Result<outpost_provision::InstallReport, outpost_provision::InstallError> {
    let (keys, opts) = dev_trust();
    outpost_provision::install(bundle, state, &keys, &opts)
}

/// Starts the daemon on the A/B slots in the state directory `state`.
fn start_slots(state: &Path) -> Daemon {
    start(&["--state-dir", state.to_str().unwrap()])
}

/// The development signing key (models/reference/dev-keys).
fn dev_key() -> outpost_models::SigningKey {
    outpost_models::SigningKey::load(
        &repo().join("models/reference/dev-keys/outpost-dev-DO-NOT-DEPLOY.pk8"),
    )
    .unwrap()
}

/// The dev bundle's files under an edited manifest, signed by `key`.
fn resigned(
    key: &outpost_models::SigningKey,
    edit: impl FnOnce(&mut outpost_models::Manifest),
) -> Vec<u8> {
    let dev = outpost_models::verify_path(
        &repo().join(".outpost/dev.bundle"),
        &outpost_host::boot::trusted_keys(None, true).unwrap(),
        &outpost_models::VerifyOptions {
            allow_development: true,
            expected_compatible: None,
        },
    )
    .unwrap();
    let files: Vec<(String, Vec<u8>)> = dev
        .manifest
        .files
        .iter()
        .map(|f| (f.name.clone(), dev.file(&f.name).unwrap().to_vec()))
        .collect();
    let mut m = dev.manifest.clone();
    edit(&mut m);
    outpost_models::build_bundle(&m, &files, key).unwrap()
}

/// The dev bundle re-signed (dev key) with another version.
fn dev_bundle_version(version: u32, dir: &Path) -> PathBuf {
    let bytes = resigned(&dev_key(), |m| m.version = version);
    let p = dir.join(format!("v{version}.bundle"));
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn reload_switches_to_the_new_slot_without_dropping_connections() {
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    dev_install(&dev_bundle_version(1, work.path()), state.path()).unwrap();
    let d = start_slots(state.path());
    let (pcm, expected) = test_clip("volume up");
    // A client that stays connected across the reload.
    let mut stay = connect(&Target::Socket(d.socket.clone()), Duration::from_millis(10)).unwrap();
    assert_eq!(recognise(&mut stay, &pcm), std::slice::from_ref(&expected));

    // Over serial, reload is refused.
    let mut pty = connect(
        &Target::Serial(d.pty.clone().unwrap(), 921_600),
        Duration::from_millis(10),
    )
    .unwrap();
    let f = pty.call(&Request::Reload).unwrap();
    assert!(matches!(
        f.decode().unwrap().body,
        Response::Error(WireError::NotPermitted)
    ));

    // Install v2, reload over the socket (this test runs as the daemon's user).
    dev_install(&dev_bundle_version(2, work.path()), state.path()).unwrap();
    let mut admin = connect(&Target::Socket(d.socket.clone()), Duration::from_millis(10)).unwrap();
    admin.call_timeout = Duration::from_secs(120);
    let f = admin.call(&Request::Reload).unwrap();
    match f.decode().unwrap().body {
        Response::Reloaded {
            ok,
            bundle_version,
            slot,
            detail,
            ..
        } => {
            assert!(ok, "{detail}");
            assert_eq!(bundle_version, 2);
            assert_eq!(slot, "b (trial)");
        }
        other => panic!("{other:?}"),
    }
    // The connection that stayed open is served by the new bundle.
    assert_eq!(recognise(&mut stay, &pcm), [expected]);
    let f = stay.call(&Request::Status).unwrap();
    let Response::Status(st) = f.decode().unwrap().body else {
        panic!()
    };
    assert_eq!(st.bundle_version, 2);
}

#[test]
fn a_trial_slot_that_fails_its_self_test_is_marked_bad_and_the_previous_slot_serves() {
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    dev_install(&dev_bundle_version(1, work.path()), state.path()).unwrap();
    // v1 proves itself.
    drop(start_slots(state.path()));
    // v2 expects the wrong label from its self-test clip: it cannot prove itself.
    let bad = work.path().join("v2-bad.bundle");
    std::fs::write(
        &bad,
        resigned(&dev_key(), |m| {
            m.version = 2;
            for t in &mut m.self_tests {
                t.expect_label = "volume down".into();
            }
        }),
    )
    .unwrap();
    dev_install(&bad, state.path()).unwrap();
    let d = start_slots(state.path());
    assert_eq!(d.state, "ready", "the previous slot serves");
    let mut c = connect(&Target::Socket(d.socket.clone()), Duration::from_secs(2)).unwrap();
    let f = c.call(&Request::Status).unwrap();
    let Response::Status(st) = f.decode().unwrap().body else {
        panic!()
    };
    assert_eq!((st.bundle_version, st.slot), (1, "a"));
    let audit = outpost_provision::read_audit(state.path(), 10).unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.action == "mark-bad"
                && r.reason.as_deref().unwrap_or("").contains("self-test")),
        "{audit:?}"
    );
    drop(c);
    drop(d);
    // The refused bundle is refused again on the next attempt.
    let again = dev_install(&bad, state.path());
    assert!(
        again.is_err(),
        "a bundle that failed its trial must not be reinstalled"
    );
}
