//! Request dispatch for one connection (serial, PTY or Unix socket): frame decoding,
//! validation, handing audio to the scheduler, and the connection's writer thread.
//!
//! A damaged or invalid frame gets an explicit [`Response::Error`] and the connection
//! carries on at the next delimiter; nothing a client sends affects another client.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use outpost_protocol::{
    decode_payload, encode_frame, DeviceState, FrameDecoder, HelloAck, RejectReason, Request,
    Response, Stage, StageProvider, StatusReport, WireError, FRAME_AUDIO_BYTES, FRAME_SAMPLES,
    MAX_FRAME_BYTES, MAX_PAYLOAD_BYTES, PROTOCOL_VERSION, SAMPLE_RATE_HZ,
};
use outpost_runtime::pipeline::{StreamState, MODEL_STAGES};
use outpost_runtime::rt::{apply_to_current_thread, Role, RtConfig};
use outpost_runtime::scheduler::{
    Counters, Due, FrameAnswer, FrameJob, OpenError, ResponseSink, Scheduler, StreamKey,
};
use outpost_runtime::stats::LatencyStats;

/// Transport a connection arrived on. Admin operations are refused on serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// A UART / USB CDC-ACM port, or the simulated PTY.
    Serial,
    /// The local Unix socket.
    UnixSocket,
}

/// Limits of the daemon.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Default per-frame deadline in µs.
    pub default_deadline_us: u32,
    /// Longest deadline a client may ask for, in µs.
    pub max_deadline_us: u32,
    /// Connected clients at once (Unix socket; serial ports count one each).
    pub max_clients: usize,
    /// Streams one connection may have open.
    pub max_streams_per_conn: u16,
    /// Responses queued for one connection's writer before it is deemed stuck.
    pub writer_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            default_deadline_us: outpost_protocol::DEFAULT_DEADLINE_US,
            max_deadline_us: outpost_protocol::DEFAULT_DEADLINE_US,
            max_clients: 16,
            max_streams_per_conn: 8,
            writer_queue: 256,
        }
    }
}

/// What the daemon serves: identity of the loaded bundle.
#[derive(Debug, Clone, Default)]
pub struct BundleInfo {
    /// Bundle name.
    pub name: String,
    /// Bundle version.
    pub version: u32,
    /// Signing key id.
    pub key_id: [u8; 8],
    /// Signed by a development key.
    pub development: bool,
    /// Labels in head output order.
    pub labels: Vec<String>,
    /// Provider per model stage.
    pub providers: Vec<StageProvider>,
    /// Bundle id for logs (`name@version (hash)`).
    pub id: String,
    /// A/B slot served (`a`, `b (trial)`), or empty when serving a bundle file.
    pub slot: String,
}

/// What is being served: one verified bundle and its scheduler, or safe mode. Replaced
/// whole by a reload; connections take a snapshot per request.
pub struct Serving {
    /// Loaded bundle (empty in safe mode).
    pub bundle: BundleInfo,
    /// The scheduler; `None` in safe mode.
    pub scheduler: Option<Scheduler<StreamState>>,
    /// Serving state.
    pub state: DeviceState,
    /// Why the daemon is in safe mode, or empty.
    pub detail: String,
    /// Incremented by each reload; streams opened on an older generation are reopened
    /// on the new scheduler at their next frame.
    pub generation: u64,
}

impl Serving {
    /// Serving `bundle` with `scheduler`.
    pub fn ready(bundle: BundleInfo, scheduler: Scheduler<StreamState>) -> Self {
        Self {
            bundle,
            scheduler: Some(scheduler),
            state: DeviceState::Ready,
            detail: String::new(),
            generation: 0,
        }
    }

    /// Safe mode: status answers with `detail`, inference is refused.
    pub fn safe_mode(detail: String) -> Self {
        Self {
            bundle: BundleInfo::default(),
            scheduler: None,
            state: DeviceState::SafeMode,
            detail,
            generation: 0,
        }
    }
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field("bundle", &self.bundle.id)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Shared daemon state, one per process.
pub struct Daemon {
    /// Limits.
    pub limits: Limits,
    serving: RwLock<Arc<Serving>>,
    /// Latency histograms, cumulative since start (across reloads).
    pub stats: Arc<LatencyStats>,
    /// Frame counters, cumulative since start (across reloads).
    pub counters: Arc<Counters>,
    /// Process start.
    pub started: Instant,
    /// Start to ready, in ms.
    pub boot_to_ready_ms: AtomicU32,
    clients: AtomicUsize,
    next_conn: AtomicU64,
    errors: AtomicU64,
    /// Set when the daemon is stopping.
    pub stopping: AtomicBool,
    /// A/B slot state directory, for the provisioning audit in status.
    pub state_dir: Option<std::path::PathBuf>,
    /// Real-time settings for connection threads.
    pub rt: RtConfig,
    /// How the daemon booted; a reload boots again with these.
    pub boot_opts: Option<crate::boot::BootOptions>,
    /// Held while a reload runs (one at a time).
    pub reload_lock: Mutex<()>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("serving", &self.serving())
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// A daemon serving `serving`.
    pub fn new(
        limits: Limits,
        serving: Serving,
        stats: Arc<LatencyStats>,
        counters: Arc<Counters>,
        started: Instant,
    ) -> Self {
        Self {
            limits,
            serving: RwLock::new(Arc::new(serving)),
            stats,
            counters,
            started,
            boot_to_ready_ms: AtomicU32::new(0),
            clients: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
            errors: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            state_dir: None,
            rt: RtConfig::off(),
            boot_opts: None,
            reload_lock: Mutex::new(()),
        }
    }

    /// The current serving snapshot.
    pub fn serving(&self) -> Arc<Serving> {
        Arc::clone(&self.serving.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Switches to `new`; returns the previous snapshot (drain it before dropping).
    pub fn replace_serving(&self, mut new: Serving) -> Arc<Serving> {
        let mut g = self.serving.write().unwrap_or_else(|p| p.into_inner());
        new.generation = g.generation + 1;
        std::mem::replace(&mut *g, Arc::new(new))
    }

    /// One line about the newest provisioning decision (audit log), or empty.
    fn last_provisioning(&self) -> String {
        let Some(dir) = &self.state_dir else {
            return String::new();
        };
        match outpost_provision::read_audit(dir, 1) {
            Ok(v) => v.last().map_or_else(String::new, |r| {
                let mut line = format!("{} {} {}", r.time, r.action, r.result);
                if let Some(b) = &r.bundle {
                    line += &format!(" {b}");
                }
                if let Some(why) = &r.reason {
                    line += &format!(": {why}");
                }
                line.chars().take(200).collect()
            }),
            Err(e) => format!("audit log unreadable: {e}"),
        }
    }

    /// Connected clients.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Releases a client slot taken with [`Daemon::try_add_client`].
    pub fn release_client(&self) {
        self.clients.fetch_sub(1, Ordering::SeqCst);
    }

    /// Reserves a client slot; `false` when the bound is reached.
    pub fn try_add_client(&self) -> bool {
        self.clients
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                (c < self.limits.max_clients).then_some(c + 1)
            })
            .is_ok()
    }

    fn status<'a>(&'a self, sv: &'a Serving, provisioning: &'a str) -> StatusReport<'a> {
        let mut providers = heapless::Vec::new();
        for p in &sv.bundle.providers {
            let _ = providers.push(*p);
        }
        let mut latency = heapless::Vec::new();
        for l in self.stats.snapshot() {
            let _ = latency.push(l);
        }
        let c = &self.counters;
        StatusReport {
            state: sv.state,
            detail: &sv.detail,
            bundle_name: &sv.bundle.name,
            bundle_version: sv.bundle.version,
            key_id: sv.bundle.key_id,
            development: sv.bundle.development,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            boot_to_ready_ms: self.boot_to_ready_ms.load(Ordering::Relaxed),
            clients: self.clients() as u16,
            streams: sv.scheduler.as_ref().map_or(0, |s| s.open_streams()) as u16,
            frames: c.frames.load(Ordering::Relaxed),
            detections: c.detections.load(Ordering::Relaxed),
            deadline_misses: c.deadline_misses.load(Ordering::Relaxed),
            rejections: c.rejections.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            providers,
            latency,
            slot: &sv.bundle.slot,
            provisioning,
            cancellations: c.cancellations.load(Ordering::Relaxed),
            wcet_us: sv
                .scheduler
                .as_ref()
                .map_or(0, |s| s.wcet_us().min(u32::MAX as u64) as u32),
            typical_us: sv
                .scheduler
                .as_ref()
                .map_or(0, |s| s.typical_us().min(u32::MAX as u64) as u32),
            late_writes: c.late_writes.load(Ordering::Relaxed),
            spread_us: sv
                .scheduler
                .as_ref()
                .map_or(0, |s| s.spread_us().min(u32::MAX as u64) as u32),
        }
    }
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
/// those of the write (DESIGN.md §4: the deadline runs to the first byte written).
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
        stats.record(Stage::Write, queued.elapsed().as_micros() as u64);
    }
    true
}

struct ConnStream {
    next_seq: u32,
    deadline_us: u32,
    lost: u32,
    /// [`Serving::generation`] the stream is open on.
    generation: u64,
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
    let conn = daemon.next_conn.fetch_add(1, Ordering::Relaxed);
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
    'read: loop {
        if daemon.stopping.load(Ordering::Relaxed) || broken.load(Ordering::Relaxed) {
            break;
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
                    daemon.errors.fetch_add(1, Ordering::Relaxed);
                    log::debug!("connection {conn}: {e}");
                    sink.send(0, &Response::Error(e));
                }
                Ok(payload) => match decode_payload::<Request<'_>>(payload) {
                    Err(f) => {
                        daemon.errors.fetch_add(1, Ordering::Relaxed);
                        log::debug!("connection {conn}: {}", f.error);
                        sink.send(f.request_id, &Response::Error(f.error));
                    }
                    Ok(env) => {
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

struct Ctx<'a> {
    daemon: &'a Arc<Daemon>,
    conn: u64,
    admin: bool,
    sink: &'a Arc<ConnSink>,
    arrived: Instant,
}

impl Ctx<'_> {
    fn error(&self, id: u32, e: WireError) {
        self.daemon.errors.fetch_add(1, Ordering::Relaxed);
        self.sink.send(id, &Response::Error(e));
    }

    /// Handles one request; `false` closes the connection.
    fn handle(&self, id: u32, req: Request<'_>, streams: &mut HashMap<u16, ConnStream>) -> bool {
        let d = self.daemon;
        let sv = d.serving();
        if !matches!(req, Request::Audio(_)) {
            log::debug!("connection {}: request {id}: {req:?}", self.conn);
        }
        match req {
            Request::Hello(h) => {
                log::info!("connection {}: hello from '{}'", self.conn, h.client);
                // A handshake starts a new session: on a serial line the previous peer
                // (e.g. a device that rebooted) may have left streams open.
                if !streams.is_empty() {
                    log::info!(
                        "connection {}: new session closes {} stream(s)",
                        self.conn,
                        streams.len()
                    );
                    for id in streams.drain().map(|(id, _)| id) {
                        if let Some(s) = &sv.scheduler {
                            s.close_stream(StreamKey {
                                conn: self.conn,
                                stream: id,
                            });
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
                    }),
                );
            }
            Request::Ping { nonce } => self.sink.send(id, &Response::Pong { nonce }),
            Request::Status => {
                let provisioning = d.last_provisioning();
                self.sink
                    .send(id, &Response::Status(d.status(&sv, &provisioning)));
            }
            Request::OpenStream(o) => {
                if o.sample_rate_hz != SAMPLE_RATE_HZ || o.frame_samples as usize != FRAME_SAMPLES {
                    self.error(
                        id,
                        WireError::UnsupportedFormat {
                            sample_rate_hz: o.sample_rate_hz,
                            frame_samples: o.frame_samples,
                        },
                    );
                    return true;
                }
                if o.deadline_us > d.limits.max_deadline_us {
                    self.error(
                        id,
                        WireError::DeadlineTooLong {
                            requested_us: o.deadline_us,
                            max_us: d.limits.max_deadline_us,
                        },
                    );
                    return true;
                }
                if streams.contains_key(&o.stream_id) {
                    self.error(
                        id,
                        WireError::StreamExists {
                            stream_id: o.stream_id,
                        },
                    );
                    return true;
                }
                if streams.len() >= d.limits.max_streams_per_conn as usize {
                    self.error(
                        id,
                        WireError::TooManyStreams {
                            max: d.limits.max_streams_per_conn,
                        },
                    );
                    return true;
                }
                if let Some(s) = &sv.scheduler {
                    match s.open_stream(StreamKey {
                        conn: self.conn,
                        stream: o.stream_id,
                    }) {
                        Ok(()) => {}
                        Err(OpenError::Exists) => {
                            self.error(
                                id,
                                WireError::StreamExists {
                                    stream_id: o.stream_id,
                                },
                            );
                            return true;
                        }
                        Err(OpenError::TooMany { max }) => {
                            self.error(id, WireError::TooManyStreams { max: max as u16 });
                            return true;
                        }
                    }
                }
                let deadline_us = if o.deadline_us == 0 {
                    d.limits.default_deadline_us
                } else {
                    o.deadline_us
                };
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
            }
            Request::Audio(a) => {
                let Some(st) = streams.get_mut(&a.stream_id) else {
                    self.error(
                        id,
                        WireError::UnknownStream {
                            stream_id: a.stream_id,
                        },
                    );
                    return true;
                };
                if a.pcm.len() != FRAME_AUDIO_BYTES {
                    self.error(
                        id,
                        WireError::BadAudioLength {
                            got: a.pcm.len().min(u16::MAX as usize) as u16,
                            expected: FRAME_AUDIO_BYTES as u16,
                        },
                    );
                    return true;
                }
                if a.seq < st.next_seq {
                    self.error(
                        id,
                        WireError::OutOfOrder {
                            stream_id: a.stream_id,
                            expected: st.next_seq,
                            got: a.seq,
                        },
                    );
                    return true;
                }
                if a.deadline_us > d.limits.max_deadline_us {
                    self.error(
                        id,
                        WireError::DeadlineTooLong {
                            requested_us: a.deadline_us,
                            max_us: d.limits.max_deadline_us,
                        },
                    );
                    return true;
                }
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
                    return true;
                };
                let pcm: Vec<i16> = a
                    .pcm
                    .chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]))
                    .collect();
                let deadline_us = if a.deadline_us == 0 {
                    st.deadline_us
                } else {
                    a.deadline_us
                };
                d.stats
                    .record(Stage::Transport, self.arrived.elapsed().as_micros() as u64);
                let sink: Arc<dyn ResponseSink> = Arc::clone(self.sink) as Arc<dyn ResponseSink>;
                let key = StreamKey {
                    conn: self.conn,
                    stream: a.stream_id,
                };
                if st.generation != sv.generation {
                    // Opened before a reload: the new bundle starts the stream afresh.
                    if let Err(e) = s.open_stream(key) {
                        log::warn!(
                            "connection {}: cannot reopen stream {} after a reload: {e:?}",
                            self.conn,
                            a.stream_id
                        );
                    }
                    st.generation = sv.generation;
                }
                s.submit(FrameJob {
                    key,
                    request_id: id,
                    seq: a.seq,
                    pcm,
                    arrived: self.arrived,
                    deadline_us,
                    sink,
                });
            }
            Request::Reload => {
                if !self.admin {
                    log::warn!(
                        "connection {}: reload refused (not an admin peer)",
                        self.conn
                    );
                    self.error(id, WireError::NotPermitted);
                    return true;
                }
                let result = crate::boot::reload(d);
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
                        detail: &detail,
                    },
                );
            }
            Request::CloseStream { stream_id } => {
                let Some(st) = streams.remove(&stream_id) else {
                    self.error(id, WireError::UnknownStream { stream_id });
                    return true;
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
                    .and_then(|s| {
                        s.close_stream(StreamKey {
                            conn: self.conn,
                            stream: stream_id,
                        })
                    })
                    .unwrap_or((0, 0));
                self.sink.send(
                    id,
                    &Response::StreamClosed {
                        stream_id,
                        frames,
                        detections,
                    },
                );
            }
        }
        true
    }
}

/// Model stages in status order with their providers.
pub fn stage_providers(p: [outpost_protocol::Provider; 4]) -> Vec<StageProvider> {
    MODEL_STAGES
        .iter()
        .zip(p)
        .map(|(s, p)| StageProvider {
            stage: *s,
            provider: p,
        })
        .collect()
}
