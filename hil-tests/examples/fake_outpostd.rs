//! A stand-in for `outpostd` used by this crate's own tests: it speaks the daemon's
//! command-line interface (`--pty`, `--socket PATH`, the `READY` line) and a minimal
//! protocol server (handshake, ping, streams, status, explicit wire errors), with a
//! scripted "recogniser": the label index `1 + (clip energy % 12)` is never right, so
//! tests can only rely on structure, not recognition. It is not a model of the
//! daemon's behaviour beyond the protocol contract.
//!
//! `FAKE_OUTPOSTD_MODE=exit` exits before READY; `=silent` never prints READY;
//! `=safe-mode` prints a `SAFE-MODE … reason=…` line and stays up.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Instant;

use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use outpost_protocol::{
    decode_payload, encode_frame, DeviceState, FrameDecoder, FrameResult, HelloAck, Request,
    Response, StatusReport, Timing, WireError, FRAME_AUDIO_BYTES, MAX_FRAME_BYTES,
    MAX_PAYLOAD_BYTES, PROTOCOL_VERSION,
};

const LABELS: [&str; 13] = [
    "none",
    "stop",
    "go ahead",
    "cancel",
    "confirm",
    "status report",
    "mark position",
    "start recording",
    "end recording",
    "lights on",
    "lights off",
    "volume up",
    "volume down",
];

fn serve(mut r: impl Read, w: impl Write) {
    let mut w = BufWriter::new(w);
    let mut dec: FrameDecoder = FrameDecoder::new();
    let mut scratch = vec![0u8; MAX_PAYLOAD_BYTES];
    let mut out = vec![0u8; MAX_FRAME_BYTES];
    let mut streams: HashMap<u16, (u32, u32)> = HashMap::new(); // next seq, frames
    let mut buf = [0u8; 4096];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            let t0 = Instant::now();
            let (id, resp): (u32, Response<'_>) = match dec.push(b) {
                None => continue,
                Some(Err(e)) => (0, Response::Error(e)),
                Some(Ok(payload)) => match decode_payload::<Request<'_>>(payload) {
                    Err(f) => (f.request_id, Response::Error(f.error)),
                    Ok(env) => (env.request_id, answer(env.body, &mut streams, t0)),
                },
            };
            let n = encode_frame(id, &resp, &mut scratch, &mut out).expect("fits");
            if w.write_all(&out[..n]).and_then(|_| w.flush()).is_err() {
                return;
            }
        }
    }
}

fn answer<'a>(
    req: Request<'_>,
    streams: &mut HashMap<u16, (u32, u32)>,
    t0: Instant,
) -> Response<'a> {
    match req {
        Request::Hello(_) => Response::Hello(HelloAck {
            protocol_version: PROTOCOL_VERSION,
            bundle_name: "fake",
            bundle_version: 1,
            key_id: [0; 8],
            labels: LABELS.iter().copied().collect(),
            sample_rate_hz: 16_000,
            frame_samples: 1280,
            max_streams: 4,
            default_deadline_us: 30_000,
            max_deadline_us: 100_000,
            max_frame_bytes: MAX_FRAME_BYTES as u16,
            verify_deadline_us: 0,
        }),
        Request::Ping { nonce } => Response::Pong { nonce },
        Request::OpenStream(o) => {
            if streams.contains_key(&o.stream_id) {
                return Response::Error(WireError::StreamExists {
                    stream_id: o.stream_id,
                });
            }
            streams.insert(o.stream_id, (0, 0));
            Response::StreamOpened {
                stream_id: o.stream_id,
                deadline_us: 30_000,
            }
        }
        Request::Audio(a) => {
            let Some(st) = streams.get_mut(&a.stream_id) else {
                return Response::Error(WireError::UnknownStream {
                    stream_id: a.stream_id,
                });
            };
            if a.pcm.len() != FRAME_AUDIO_BYTES {
                return Response::Error(WireError::BadAudioLength {
                    got: a.pcm.len() as u16,
                    expected: FRAME_AUDIO_BYTES as u16,
                });
            }
            if a.seq < st.0 {
                return Response::Error(WireError::OutOfOrder {
                    stream_id: a.stream_id,
                    expected: st.0,
                    got: a.seq,
                });
            }
            st.0 = a.seq + 1;
            st.1 += 1;
            let us = t0.elapsed().as_micros() as u32;
            Response::Frame(FrameResult {
                stream_id: a.stream_id,
                seq: a.seq,
                vad_prob: 0.0,
                detection: None,
                timing: Timing {
                    queue_us: 0,
                    compute_us: us,
                    total_us: us + 1,
                },
            })
        }
        Request::CloseStream { stream_id } => match streams.remove(&stream_id) {
            Some((_, frames)) => Response::StreamClosed {
                stream_id,
                frames,
                detections: 0,
            },
            None => Response::Error(WireError::UnknownStream { stream_id }),
        },
        Request::Reload => Response::Error(WireError::NotPermitted),
        Request::Status => Response::Status(StatusReport {
            state: DeviceState::Ready,
            detail: "",
            bundle_name: "fake",
            bundle_version: 1,
            key_id: [0; 8],
            development: true,
            uptime_ms: 1,
            boot_to_ready_ms: 1,
            clients: 1,
            streams: streams.len() as u16,
            frames: 0,
            detections: 0,
            deadline_misses: 0,
            rejections: 0,
            errors: 0,
            providers: heapless::Vec::new(),
            latency: heapless::Vec::new(),
            slot: "",
            provisioning: "",
            cancellations: 0,
            wcet_us: 0,
            typical_us: 0,
            late_writes: 0,
            spread_us: 0,
            throttled_for_errors: 0,
            closed_for_errors: 0,
            verifications: 0,
            verify_misses: 0,
            verify_rejections: 0,
            verify_wcet_us: 0,
            verify_deadline_us: 0,
        }),
    }
}

fn main() {
    let t0 = Instant::now();
    let args: Vec<String> = std::env::args().collect();
    let socket = args
        .iter()
        .position(|a| a == "--socket")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    match std::env::var("FAKE_OUTPOSTD_MODE").as_deref() {
        Ok("exit") => {
            eprintln!(
                "fake-outpostd: bundle verification failed: no such file .outpost/dev.bundle"
            );
            std::process::exit(3);
        }
        Ok("silent") => loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        },
        Ok("safe-mode") => {
            println!(
                "SAFE-MODE state=safe-mode boot_ms=1 pid={} reason=bundle rejected: fake",
                std::process::id()
            );
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
        _ => {}
    }
    let mut ready = String::from("READY");
    if args.iter().any(|a| a == "--pty") {
        let pty = nix::pty::openpty(None, None).expect("openpty failed");
        let mut t = tcgetattr(&pty.slave).expect("tcgetattr on the PTY slave");
        cfmakeraw(&mut t);
        tcsetattr(&pty.slave, SetArg::TCSANOW, &t).expect("tcsetattr on the PTY slave");
        let path = nix::unistd::ttyname(&pty.slave).expect("name of the PTY slave");
        ready.push_str(&format!(" pty={}", path.display()));
        // Keep the slave open so the master never sees EIO between clients: it is
        // never closed.
        std::mem::forget(pty.slave);
        let m = File::from(pty.master);
        let m2 = m.try_clone().expect("dup master");
        std::thread::spawn(move || loop {
            serve(&m, &m2);
            std::thread::sleep(std::time::Duration::from_millis(10));
        });
    }
    if let Some(path) = &socket {
        let l = UnixListener::bind(path).expect("bind socket");
        ready.push_str(&format!(" socket={}", path.display()));
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let c2 = c.try_clone().expect("dup socket");
                std::thread::spawn(move || serve(c, c2));
            }
        });
    }
    eprintln!("fake-outpostd: serving");
    println!(
        "{ready} bundle=fake-1 boot_ms={} pid={}",
        t0.elapsed().as_millis(),
        std::process::id()
    );
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
