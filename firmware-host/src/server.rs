//! Request dispatch for one connection (serial, PTY or Unix socket): frame decoding,
//! validation, handing audio to the scheduler, and the connection's writer thread.
//!
//! A damaged or invalid frame gets an explicit [`Response::Error`] and the connection
//! carries on at the next delimiter; nothing a client sends affects another client.

use embassy_time::Instant;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use outpost_protocol::{
    decode_payload, encode_frame, Audio, FrameDecoder, HelloAck, OpenStream, RejectReason, Request,
    Response, Stage, WireError, FRAME_AUDIO_BYTES, FRAME_SAMPLES, MAX_FRAME_BYTES,
    MAX_PAYLOAD_BYTES, PROTOCOL_VERSION, SAMPLE_RATE_HZ,
};
use outpost_runtime::rt::{apply_to_current_thread, Role};
use outpost_runtime::scheduler::{
    Due, FrameAnswer, FrameJob, OpenError, ResponseSink, Scheduler, StreamKey,
};
use outpost_runtime::stats::LatencyStats;

use crate::state::{bounded_detail, Daemon, Limits, Serving};

/// Transport a connection arrived on. Admin operations are refused on serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// A UART / USB CDC-ACM port, or the simulated PTY.
    Serial,
    /// The local Unix socket.
    UnixSocket,
}

/// What a connection's writer thread writes.
enum Outgoing {
    /// An encoded answer, handed over at the instant given.
    Bytes(Instant, Vec<u8>),
    /// An audio frame's answer, encoded (and checked against its deadline) by the
    /// writer right before the write.
    Frame {
        /// When it was handed over.
        queued: Instant,
        request_id: u32,
        answer: FrameAnswer,
        due: Due,
    },
}

/// Hands answers to the connection's writer thread without blocking.
struct ConnSink {
    tx: SyncSender<Outgoing>,
    broken: Arc<AtomicBool>,
    encode: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl ConnSink {
    fn enqueue(&self, item: Outgoing) {
        match self.tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                log::warn!("client is not reading its answers; closing the connection");
                self.broken.store(true, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => self.broken.store(true, Ordering::Relaxed),
        }
    }
}

impl ResponseSink for ConnSink {
    fn send(&self, request_id: u32, response: &Response<'_>) {
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        let bytes = {
            let mut g = self.encode.lock().unwrap_or_else(|p| p.into_inner());
            let (scratch, out) = &mut *g;
            match encode_frame(request_id, response, scratch, out) {
                Ok(n) => out[..n].to_vec(),
                Err(e) => {
                    log::error!("cannot encode a response: {e}");
                    return;
                }
            }
        };
        self.enqueue(Outgoing::Bytes(Instant::now(), bytes));
    }

    fn send_frame_answer(&self, request_id: u32, answer: FrameAnswer, due: Due) {
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        self.enqueue(Outgoing::Frame {
            queued: Instant::now(),
            request_id,
            answer,
            due,
        });
    }
}

fn write_frame(w: &mut dyn Write, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes)?;
    w.flush()
}

/// The connection's writer thread: writes answers in order; an audio frame's answer
/// is encoded right before its write, so the deadline check and its time stamps are
/// those of the write (docs/DESIGN.md §4: the deadline runs to the first byte written).
fn write_answers(
    rx: std::sync::mpsc::Receiver<Outgoing>,
    mut writer: Box<dyn Write + Send>,
    stats: &LatencyStats,
    conn: u64,
) -> bool {
    let mut scratch = vec![0u8; MAX_PAYLOAD_BYTES];
    let mut out = vec![0u8; MAX_FRAME_BYTES];
    for item in rx {
        let (queued, written) = match item {
            Outgoing::Bytes(queued, bytes) => (queued, write_frame(&mut writer, &bytes)),
            Outgoing::Frame {
                queued,
                request_id,
                answer,
                due,
            } => {
                let response = answer.written_at(&due, Instant::now());
                match encode_frame(request_id, &response, &mut scratch, &mut out) {
                    Ok(n) => (queued, write_frame(&mut writer, &out[..n])),
                    Err(e) => {
                        log::error!("cannot encode a response: {e}");
                        continue;
                    }
                }
            }
        };
        if let Err(e) = written {
            log::info!("connection {conn}: write failed: {e}");
            return false;
        }
        stats.record(Stage::Write, queued.elapsed().as_micros());
    }
    true
}

/// A stream as its connection knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnStream {
    /// The lowest sequence number the next frame may carry.
    pub next_seq: u32,
    /// The stream's deadline in µs (from `OpenStream`, or the daemon's default).
    pub deadline_us: u32,
    /// Frames skipped by the client (gaps in `seq`), for the close log.
    pub lost: u32,
    /// [`Serving::generation`] the stream is open on.
    pub generation: u64,
}

/// Errors in a row (no valid request between them) after which a connection is
/// throttled: its reader drops to normal scheduling and pauses [`THROTTLE_PAUSE`] per
/// read, so one client's garbage cannot take the CPU from the others.
pub const ERROR_STREAK_THROTTLE: u32 = 16;

/// Errors in a row after which a Unix-socket connection is closed. A serial line is
/// never closed (it is the only way to that device); it stays throttled until a valid
/// request arrives.
pub const ERROR_STREAK_CLOSE: u32 = 256;

/// Pause per read of a throttled connection.
pub const THROTTLE_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// What a connection's run of consecutive errors calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStreak {
    /// Serve normally.
    Fine,
    /// Throttle: normal scheduling, a pause per read.
    Throttle,
    /// Close the connection.
    Close,
}

/// Applies [`error_streak`] after the error that made the streak `streak` (checked per
/// frame, not per read: one read can hold thousands): the first time the streak reaches
/// [`ERROR_STREAK_THROTTLE`] the reader drops to normal scheduling (the caller pauses
/// [`THROTTLE_PAUSE`] per read from then on while the streak lasts); at
/// [`ERROR_STREAK_CLOSE`] on a socket it returns `true`: close. Both are counted in
/// `Status` and logged.
fn after_error(
    daemon: &Daemon,
    conn: u64,
    peer: &str,
    streak: u32,
    transport: TransportKind,
    demoted: &mut bool,
) -> bool {
    match error_streak(streak, transport) {
        ErrorStreak::Fine => false,
        ErrorStreak::Throttle => {
            if !*demoted {
                *demoted = true;
                outpost_runtime::rt::demote_current_thread();
                let throttled = daemon.count_throttled_for_errors();
                log::warn!(
                    "connection {conn} ({peer}): {streak} errors in a row; throttled \
                     ({throttled} connection(s) throttled for errors since start)"
                );
            }
            false
        }
        ErrorStreak::Close => {
            let closed = daemon.count_closed_for_errors();
            log::warn!(
                "connection {conn} ({peer}): {streak} errors in a row and no valid request; \
                 closed ({closed} connection(s) closed for errors since start)"
            );
            true
        }
    }
}

/// The policy for `streak` errors in a row on `transport` ([`ERROR_STREAK_THROTTLE`],
/// [`ERROR_STREAK_CLOSE`]).
pub fn error_streak(streak: u32, transport: TransportKind) -> ErrorStreak {
    if streak >= ERROR_STREAK_CLOSE && transport == TransportKind::UnixSocket {
        ErrorStreak::Close
    } else if streak >= ERROR_STREAK_THROTTLE {
        ErrorStreak::Throttle
    } else {
        ErrorStreak::Fine
    }
}

/// Serves one connection until EOF, a fatal read error, or shutdown. `reader` should
/// time out periodically (serial: port timeout; socket: read timeout) so shutdown is
/// noticed.
/// `admin` is true only for a Unix-socket peer that passed the credential check
/// (`SO_PEERCRED`: root or the daemon's own uid); never on serial.
pub fn serve_connection(
    daemon: &Arc<Daemon>,
    mut reader: Box<dyn Read + Send>,
    writer: Box<dyn Write + Send>,
    transport: TransportKind,
    peer: &str,
    admin: bool,
) {
    let conn = daemon.next_connection_id();
    let broken = Arc::new(AtomicBool::new(false));
    let (tx, rx) = sync_channel::<Outgoing>(daemon.limits.writer_queue);
    let stats = Arc::clone(&daemon.stats);
    let wbroken = Arc::clone(&broken);
    let rt = daemon.rt.clone();
    let writer_thread = std::thread::Builder::new()
        .name(format!("outpost-write-{conn}"))
        .spawn(move || {
            apply_to_current_thread(&rt, Role::Io);
            if !write_answers(rx, writer, &stats, conn) {
                wbroken.store(true, Ordering::Relaxed);
            }
        })
        .expect("spawn writer thread");
    let sink: Arc<ConnSink> = Arc::new(ConnSink {
        tx,
        broken: Arc::clone(&broken),
        encode: Mutex::new((vec![0; MAX_PAYLOAD_BYTES], vec![0; MAX_FRAME_BYTES])),
    });
    log::info!("connection {conn} open ({transport:?}, {peer})");
    apply_to_current_thread(&daemon.rt, Role::Io);

    let mut decoder = FrameDecoder::<MAX_FRAME_BYTES>::new();
    let mut streams: HashMap<u16, ConnStream> = HashMap::new();
    let mut buf = vec![0u8; 8192];
    let mut streak = 0u32;
    let mut demoted = false;
    let mut last_valid = std::time::Instant::now();
    let mut any_valid = false;
    'read: loop {
        if daemon.stopping.load(Ordering::Relaxed) || broken.load(Ordering::Relaxed) {
            break;
        }
        if transport == TransportKind::UnixSocket {
            let (limit, what) = if any_valid {
                (
                    daemon.limits.socket_idle_timeout,
                    "since its last valid request",
                )
            } else {
                (
                    daemon.limits.socket_first_request_timeout,
                    "since it connected",
                )
            };
            if last_valid.elapsed() > limit {
                let closed = daemon.count_closed_for_errors();
                log::warn!(
                    "connection {conn} ({peer}): no valid request for {} ms {what} \
                     ({} bytes of an unfinished frame); closed ({closed} connection(s) \
                     closed for errors or silence since start)",
                    limit.as_millis(),
                    decoder.pending()
                );
                break;
            }
        }
        if error_streak(streak, transport) != ErrorStreak::Fine {
            // Throttled (a close comes at the error that earns it, in `after_error`).
            std::thread::sleep(THROTTLE_PAUSE);
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                log::info!("connection {conn}: read failed: {e}");
                break;
            }
        };
        let arrived = Instant::now();
        log::trace!(
            "connection {conn}: read {n} bytes: {:02x?}",
            &buf[..n.min(64)]
        );
        for &b in &buf[..n] {
            let Some(r) = decoder.push(b) else { continue };
            match r {
                Err(e) => {
                    daemon.count_error();
                    streak += 1;
                    log::debug!("connection {conn}: {e}");
                    sink.send(0, &Response::Error(e));
                    if after_error(daemon, conn, peer, streak, transport, &mut demoted) {
                        break 'read;
                    }
                }
                Ok(payload) => match decode_payload::<Request<'_>>(payload) {
                    Err(f) => {
                        daemon.count_error();
                        streak += 1;
                        log::debug!("connection {conn}: {}", f.error);
                        sink.send(f.request_id, &Response::Error(f.error));
                        if after_error(daemon, conn, peer, streak, transport, &mut demoted) {
                            break 'read;
                        }
                    }
                    Ok(env) => {
                        // A valid request ends the streak (errors it earns are the
                        // request's, e.g. an unknown stream, and are answered as such).
                        streak = 0;
                        any_valid = true;
                        last_valid = std::time::Instant::now();
                        let ctx = Ctx {
                            daemon,
                            conn,
                            admin: admin && transport == TransportKind::UnixSocket,
                            sink: &sink,
                            arrived,
                        };
                        if !ctx.handle(env.request_id, env.body, &mut streams) {
                            break 'read;
                        }
                    }
                },
            }
        }
    }
    if let Some(s) = &daemon.serving().scheduler {
        s.drop_connection(conn);
    }
    drop(sink);
    let _ = writer_thread.join();
    log::info!("connection {conn} closed");
}

/// Checks an `OpenStream` against the daemon's limits and the connection's open streams;
/// the stream's deadline in µs (the requested one, or the default for 0).
///
/// # Errors
/// The wire error to answer: `UnsupportedFormat` (not 16 kHz / 1 280-sample frames),
/// `DeadlineTooLong`, `StreamExists`, `TooManyStreams`.
pub fn check_open(
    o: &OpenStream,
    limits: &Limits,
    streams: &HashMap<u16, ConnStream>,
) -> Result<u32, WireError> {
    if o.sample_rate_hz != SAMPLE_RATE_HZ || o.frame_samples as usize != FRAME_SAMPLES {
        return Err(WireError::UnsupportedFormat {
            sample_rate_hz: o.sample_rate_hz,
            frame_samples: o.frame_samples,
        });
    }
    if o.deadline_us > limits.max_deadline_us {
        return Err(WireError::DeadlineTooLong {
            requested_us: o.deadline_us,
            max_us: limits.max_deadline_us,
        });
    }
    if streams.contains_key(&o.stream_id) {
        return Err(WireError::StreamExists {
            stream_id: o.stream_id,
        });
    }
    if streams.len() >= limits.max_streams_per_conn as usize {
        return Err(WireError::TooManyStreams {
            max: limits.max_streams_per_conn,
        });
    }
    Ok(if o.deadline_us == 0 {
        limits.default_deadline_us
    } else {
        o.deadline_us
    })
}

/// Checks an audio frame against its stream: length, order, deadline; the frame's
/// deadline in µs (the requested one, or the stream's for 0). Does not change `st`.
///
/// # Errors
/// The wire error to answer: `BadAudioLength` (not 2 560 bytes), `OutOfOrder` (a `seq`
/// below the next expected; gaps are allowed and counted), `DeadlineTooLong`.
pub fn check_audio(a: &Audio<'_>, st: &ConnStream, limits: &Limits) -> Result<u32, WireError> {
    if a.pcm.len() != FRAME_AUDIO_BYTES {
        return Err(WireError::BadAudioLength {
            got: a.pcm.len().min(u16::MAX as usize) as u16,
            expected: FRAME_AUDIO_BYTES as u16,
        });
    }
    if a.seq < st.next_seq {
        return Err(WireError::OutOfOrder {
            stream_id: a.stream_id,
            expected: st.next_seq,
            got: a.seq,
        });
    }
    if a.deadline_us > limits.max_deadline_us {
        return Err(WireError::DeadlineTooLong {
            requested_us: a.deadline_us,
            max_us: limits.max_deadline_us,
        });
    }
    Ok(if a.deadline_us == 0 {
        st.deadline_us
    } else {
        a.deadline_us
    })
}

struct Ctx<'a> {
    daemon: &'a Arc<Daemon>,
    conn: u64,
    admin: bool,
    sink: &'a Arc<ConnSink>,
    arrived: Instant,
}

impl Ctx<'_> {
    fn error(&self, id: u32, e: WireError) {
        self.daemon.count_error();
        self.sink.send(id, &Response::Error(e));
    }

    fn key(&self, stream: u16) -> StreamKey {
        StreamKey {
            conn: self.conn,
            stream,
        }
    }

    /// Handles one request; `false` closes the connection.
    fn handle(&self, id: u32, req: Request<'_>, streams: &mut HashMap<u16, ConnStream>) -> bool {
        let sv = self.daemon.serving();
        if !matches!(req, Request::Audio(_)) {
            log::debug!("connection {}: request {id}: {req:?}", self.conn);
        }
        let answered = match req {
            Request::Hello(h) => {
                self.hello(id, h.client, &sv, streams);
                Ok(())
            }
            Request::Ping { nonce } => {
                self.sink.send(id, &Response::Pong { nonce });
                Ok(())
            }
            Request::Status => {
                let provisioning = self.daemon.last_provisioning();
                let status = self.daemon.status(&sv, &provisioning);
                self.sink.send(id, &Response::Status(status));
                Ok(())
            }
            Request::OpenStream(o) => self.open_stream(id, &o, &sv, streams),
            Request::Audio(a) => self.audio(id, &a, &sv, streams),
            Request::Reload => self.reload(id),
            Request::CloseStream { stream_id } => self.close_stream(id, stream_id, &sv, streams),
        };
        if let Err(e) = answered {
            self.error(id, e);
        }
        true
    }

    /// A handshake starts a new session: on a serial line the previous peer (e.g. a
    /// device that rebooted) may have left streams open, and they are closed.
    fn hello(&self, id: u32, client: &str, sv: &Serving, streams: &mut HashMap<u16, ConnStream>) {
        let d = self.daemon;
        log::info!("connection {}: hello from '{client}'", self.conn);
        if !streams.is_empty() {
            log::info!(
                "connection {}: new session closes {} stream(s)",
                self.conn,
                streams.len()
            );
            for stream in streams.drain().map(|(id, _)| id) {
                if let Some(s) = &sv.scheduler {
                    s.close_stream(self.key(stream));
                }
            }
        }
        let mut labels = heapless::Vec::new();
        for l in &sv.bundle.labels {
            let _ = labels.push(l.as_str());
        }
        self.sink.send(
            id,
            &Response::Hello(HelloAck {
                protocol_version: PROTOCOL_VERSION,
                bundle_name: &sv.bundle.name,
                bundle_version: sv.bundle.version,
                key_id: sv.bundle.key_id,
                labels,
                sample_rate_hz: SAMPLE_RATE_HZ,
                frame_samples: FRAME_SAMPLES as u16,
                max_streams: d.limits.max_streams_per_conn,
                default_deadline_us: d.limits.default_deadline_us,
                max_deadline_us: d.limits.max_deadline_us,
                max_frame_bytes: MAX_FRAME_BYTES as u16,
                verify_deadline_us: sv.scheduler.as_ref().map_or(0, |s| s.verify_deadline_us()),
            }),
        );
    }

    fn open_stream(
        &self,
        id: u32,
        o: &OpenStream,
        sv: &Serving,
        streams: &mut HashMap<u16, ConnStream>,
    ) -> Result<(), WireError> {
        let deadline_us = check_open(o, &self.daemon.limits, streams)?;
        if let Some(s) = &sv.scheduler {
            match s.open_stream(self.key(o.stream_id)) {
                Ok(()) => {}
                Err(OpenError::Exists) => {
                    return Err(WireError::StreamExists {
                        stream_id: o.stream_id,
                    })
                }
                Err(OpenError::TooMany { max }) => {
                    return Err(WireError::TooManyStreams { max: max as u16 })
                }
            }
        }
        streams.insert(
            o.stream_id,
            ConnStream {
                next_seq: 0,
                deadline_us,
                lost: 0,
                generation: sv.generation,
            },
        );
        self.sink.send(
            id,
            &Response::StreamOpened {
                stream_id: o.stream_id,
                deadline_us,
            },
        );
        Ok(())
    }

    fn audio(
        &self,
        id: u32,
        a: &Audio<'_>,
        sv: &Serving,
        streams: &mut HashMap<u16, ConnStream>,
    ) -> Result<(), WireError> {
        let d = self.daemon;
        let Some(st) = streams.get_mut(&a.stream_id) else {
            return Err(WireError::UnknownStream {
                stream_id: a.stream_id,
            });
        };
        let deadline_us = check_audio(a, st, &d.limits)?;
        st.lost += a.seq - st.next_seq;
        st.next_seq = a.seq.wrapping_add(1);
        let Some(s) = &sv.scheduler else {
            self.sink.send(
                id,
                &Response::Rejected {
                    stream_id: a.stream_id,
                    seq: a.seq,
                    reason: RejectReason::NoModel,
                    retry_after_us: 0,
                },
            );
            return Ok(());
        };
        let pcm: Vec<i16> = a
            .pcm
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        d.stats
            .record(Stage::Transport, self.arrived.elapsed().as_micros());
        let key = self.key(a.stream_id);
        if st.generation != sv.generation {
            reopen_after_reload(s, key, self.conn);
            st.generation = sv.generation;
        }
        s.submit(FrameJob {
            key,
            request_id: id,
            seq: a.seq,
            pcm,
            arrived: self.arrived,
            deadline_us,
            sink: Arc::clone(self.sink) as Arc<dyn ResponseSink>,
        });
        Ok(())
    }

    fn reload(&self, id: u32) -> Result<(), WireError> {
        let d = self.daemon;
        if !self.admin {
            log::warn!(
                "connection {}: reload refused (not an admin peer)",
                self.conn
            );
            return Err(WireError::NotPermitted);
        }
        let result = d.reload();
        let now = d.serving();
        let detail = match &result {
            Ok(()) => String::new(),
            Err(e) => format!("{e:#}"),
        };
        self.sink.send(
            id,
            &Response::Reloaded {
                ok: result.is_ok(),
                bundle_name: &now.bundle.name,
                bundle_version: now.bundle.version,
                slot: &now.bundle.slot,
                detail: bounded_detail(&detail),
            },
        );
        Ok(())
    }

    fn close_stream(
        &self,
        id: u32,
        stream_id: u16,
        sv: &Serving,
        streams: &mut HashMap<u16, ConnStream>,
    ) -> Result<(), WireError> {
        let Some(st) = streams.remove(&stream_id) else {
            return Err(WireError::UnknownStream { stream_id });
        };
        if st.lost > 0 {
            log::info!(
                "connection {}: stream {stream_id} lost {} frames",
                self.conn,
                st.lost
            );
        }
        let (frames, detections) = sv
            .scheduler
            .as_ref()
            .and_then(|s| s.close_stream(self.key(stream_id)))
            .unwrap_or((0, 0));
        self.sink.send(
            id,
            &Response::StreamClosed {
                stream_id,
                frames,
                detections,
            },
        );
        Ok(())
    }
}

/// A stream opened before a reload starts afresh on the new bundle's scheduler.
fn reopen_after_reload<S: Send + 'static>(s: &Scheduler<S>, key: StreamKey, conn: u64) {
    if let Err(e) = s.open_stream(key) {
        log::warn!(
            "connection {conn}: cannot reopen stream {} after a reload: {e:?}",
            key.stream
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(stream_id: u16, deadline_us: u32) -> OpenStream {
        OpenStream {
            stream_id,
            sample_rate_hz: SAMPLE_RATE_HZ,
            frame_samples: FRAME_SAMPLES as u16,
            deadline_us,
        }
    }

    fn stream(next_seq: u32) -> ConnStream {
        ConnStream {
            next_seq,
            deadline_us: 25_000,
            lost: 0,
            generation: 0,
        }
    }

    #[test]
    fn a_run_of_errors_throttles_then_closes_a_socket_but_never_a_serial_line() {
        use TransportKind::{Serial, UnixSocket};
        assert_eq!(error_streak(0, UnixSocket), ErrorStreak::Fine);
        assert_eq!(
            error_streak(ERROR_STREAK_THROTTLE - 1, UnixSocket),
            ErrorStreak::Fine
        );
        assert_eq!(
            error_streak(ERROR_STREAK_THROTTLE, UnixSocket),
            ErrorStreak::Throttle
        );
        assert_eq!(
            error_streak(ERROR_STREAK_CLOSE, UnixSocket),
            ErrorStreak::Close
        );
        assert_eq!(
            error_streak(ERROR_STREAK_CLOSE * 10, Serial),
            ErrorStreak::Throttle
        );
    }

    #[test]
    fn open_takes_the_default_deadline_for_zero_and_checks_every_limit() {
        let limits = Limits::default();
        let mut streams = HashMap::new();
        assert_eq!(
            check_open(&open(1, 0), &limits, &streams),
            Ok(limits.default_deadline_us)
        );
        assert_eq!(check_open(&open(1, 12_000), &limits, &streams), Ok(12_000));
        assert_eq!(
            check_open(&open(1, limits.max_deadline_us + 1), &limits, &streams),
            Err(WireError::DeadlineTooLong {
                requested_us: limits.max_deadline_us + 1,
                max_us: limits.max_deadline_us
            })
        );
        let mut wrong_rate = open(1, 0);
        wrong_rate.sample_rate_hz = 8_000;
        assert_eq!(
            check_open(&wrong_rate, &limits, &streams),
            Err(WireError::UnsupportedFormat {
                sample_rate_hz: 8_000,
                frame_samples: FRAME_SAMPLES as u16
            })
        );
        streams.insert(1, stream(0));
        assert_eq!(
            check_open(&open(1, 0), &limits, &streams),
            Err(WireError::StreamExists { stream_id: 1 })
        );
        for id in 2..=limits.max_streams_per_conn {
            streams.insert(id, stream(0));
        }
        assert_eq!(
            check_open(&open(100, 0), &limits, &streams),
            Err(WireError::TooManyStreams {
                max: limits.max_streams_per_conn
            })
        );
    }

    #[test]
    fn audio_is_checked_for_length_order_and_deadline() {
        let limits = Limits::default();
        let pcm = [0u8; FRAME_AUDIO_BYTES];
        let pcm = &pcm[..];
        let frame = |seq, deadline_us, pcm| Audio {
            stream_id: 3,
            seq,
            deadline_us,
            pcm,
        };
        let st = stream(5);
        assert_eq!(check_audio(&frame(5, 0, pcm), &st, &limits), Ok(25_000));
        assert_eq!(
            check_audio(&frame(9, 10_000, pcm), &st, &limits),
            Ok(10_000)
        );
        assert_eq!(
            check_audio(&frame(4, 0, pcm), &st, &limits),
            Err(WireError::OutOfOrder {
                stream_id: 3,
                expected: 5,
                got: 4
            })
        );
        assert_eq!(
            check_audio(&frame(5, 0, &pcm[1..]), &st, &limits),
            Err(WireError::BadAudioLength {
                got: FRAME_AUDIO_BYTES as u16 - 1,
                expected: FRAME_AUDIO_BYTES as u16
            })
        );
        assert_eq!(
            check_audio(&frame(5, limits.max_deadline_us + 1, pcm), &st, &limits),
            Err(WireError::DeadlineTooLong {
                requested_us: limits.max_deadline_us + 1,
                max_us: limits.max_deadline_us
            })
        );
    }
}
