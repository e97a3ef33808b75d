//! A protocol session over one [`Link`]: the blocking [`Client`] from
//! `outpost-protocol` plus overall answer timeouts, owned copies of the answers the
//! rig inspects, and per-frame latency records.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use outpost_protocol::client::{Client, Received, ResponseFrame};
use outpost_protocol::{
    Audio, DeviceState, Hello, OpenStream, Provider, RejectReason, Request, Response, Stage,
    Timing, WireError, FRAME_SAMPLES, SAMPLE_RATE_HZ,
};
use serde::Serialize;

use crate::link::{is_timeout, Link, LinkError, LinkReader, LinkWriter};

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The link could not be opened or split.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// Reading or writing failed.
    #[error("{link}: I/O error while {doing}: {source}")]
    Io {
        /// Link description.
        link: String,
        /// What the rig was doing.
        doing: String,
        /// OS error.
        source: io::Error,
    },
    /// No answer within the timeout.
    #[error("{link}: no answer to {doing} within {timeout_ms} ms")]
    Timeout {
        /// Link description.
        link: String,
        /// What the rig was waiting for.
        doing: String,
        /// Timeout in ms.
        timeout_ms: u64,
    },
    /// An answer of the wrong kind.
    #[error("{link}: unexpected answer to {doing}: {got}")]
    Unexpected {
        /// Link description.
        link: String,
        /// What the rig was doing.
        doing: String,
        /// What came back.
        got: String,
    },
}

/// An answer, decoded and owned, with its arrival time.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The request id it carries (0 for frame-level errors).
    pub request_id: u32,
    /// What it says.
    pub kind: AnswerKind,
    /// When its last byte was read.
    pub received_at: Instant,
}

/// Owned summary of a [`Response`] (or of a damaged/undecodable frame).
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerKind {
    /// [`Response::Hello`].
    Hello(HelloInfo),
    /// [`Response::Pong`].
    Pong {
        /// Echoed nonce.
        nonce: u32,
    },
    /// [`Response::StreamOpened`].
    StreamOpened {
        /// Stream id.
        stream_id: u16,
        /// Effective deadline in µs.
        deadline_us: u32,
    },
    /// [`Response::Frame`].
    Frame(outpost_protocol::FrameResult),
    /// [`Response::Verification`]: stage 2's answer about a trigger.
    Verification(outpost_protocol::Verification),
    /// [`Response::DeadlineMissed`].
    DeadlineMissed {
        /// Stream id.
        stream_id: u16,
        /// Sequence number.
        seq: u32,
        /// Time from last byte read to the answer, in µs.
        elapsed_us: u32,
    },
    /// [`Response::Rejected`].
    Rejected {
        /// Stream id.
        stream_id: u16,
        /// Sequence number.
        seq: u32,
        /// Why.
        reason: RejectReason,
    },
    /// [`Response::StreamClosed`].
    StreamClosed {
        /// Stream id.
        stream_id: u16,
        /// Frames processed.
        frames: u32,
        /// Detections.
        detections: u32,
    },
    /// [`Response::Status`].
    Status(Box<StatusInfo>),
    /// [`Response::Reloaded`].
    Reloaded {
        /// The new bundle serves.
        ok: bool,
        /// Bundle version served afterwards.
        bundle_version: u32,
        /// Why it failed, or empty.
        detail: String,
    },
    /// [`Response::Error`].
    Error(WireError),
    /// A frame from the device that failed its CRC (or COBS) on the way to the rig.
    Damaged(WireError),
    /// A CRC-valid frame that is not a response of this protocol version.
    Undecodable(WireError),
}

/// Owned copy of [`outpost_protocol::HelloAck`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HelloInfo {
    /// Protocol version.
    pub protocol_version: u8,
    /// Bundle name.
    pub bundle_name: String,
    /// Bundle version.
    pub bundle_version: u32,
    /// Signing key id, hex.
    pub key_id: String,
    /// Labels, indexed by detection label.
    pub labels: Vec<String>,
    /// Sample rate in Hz.
    pub sample_rate_hz: u32,
    /// Samples per frame.
    pub frame_samples: u16,
    /// Streams per connection.
    pub max_streams: u16,
    /// Default deadline in µs.
    pub default_deadline_us: u32,
    /// Maximum deadline in µs.
    pub max_deadline_us: u32,
    /// Largest wire frame in bytes.
    pub max_frame_bytes: u16,
    /// Verification deadline after a trigger in µs; 0 without a verifier.
    pub verify_deadline_us: u32,
}

/// Owned copy of [`outpost_protocol::StatusReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusInfo {
    /// Serving state (`Ready`, `SafeMode`, ...).
    pub state: String,
    /// Safe-mode reason or empty.
    pub detail: String,
    /// Bundle name.
    pub bundle_name: String,
    /// Bundle version.
    pub bundle_version: u32,
    /// Development bundle.
    pub development: bool,
    /// Uptime in ms.
    pub uptime_ms: u64,
    /// Boot to ready in ms.
    pub boot_to_ready_ms: u32,
    /// Connected clients.
    pub clients: u16,
    /// Open streams.
    pub streams: u16,
    /// Frames answered with a result.
    pub frames: u64,
    /// Detections.
    pub detections: u64,
    /// Frames answered `DeadlineMissed`.
    pub deadline_misses: u64,
    /// Frames answered `Rejected`.
    pub rejections: u64,
    /// Requests answered `Error`.
    pub errors: u64,
    /// Provider per stage, e.g. `("embedding", "CPU")`.
    pub providers: Vec<(String, String)>,
    /// Latency per stage.
    pub latency: Vec<StageLatencyInfo>,
    /// Runs cut at their deadline.
    pub cancellations: u64,
    /// Worst-case compute per frame admission control currently assumes, in µs.
    pub wcet_us: u32,
    /// Typical (mean) compute per frame admission control currently assumes, in µs.
    pub typical_us: u32,
    /// Answers written after their frame's deadline.
    pub late_writes: u64,
    /// Standard deviation of compute per frame admission control currently assumes, in µs.
    pub spread_us: u32,
    /// Connections throttled for sending only errors.
    pub throttled_for_errors: u64,
    /// Connections closed for sending only errors.
    pub closed_for_errors: u64,
    /// Triggers answered with a verdict by their deadline.
    pub verifications: u64,
    /// Triggers answered `DeadlineMissed` by stage 2.
    pub verify_misses: u64,
    /// Triggers refused by stage 2's admission control.
    pub verify_rejections: u64,
    /// Worst-case compute per verification admission control assumes, in µs.
    pub verify_wcet_us: u32,
}

/// Owned copy of [`outpost_protocol::StageLatency`], all in µs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageLatencyInfo {
    /// Stage name (`Vad`, `Mel`, `Embedding`, `Head`, `Total`, ...).
    pub stage: String,
    /// Samples.
    pub count: u64,
    /// Median in µs.
    pub p50_us: u32,
    /// p99 in µs.
    pub p99_us: u32,
    /// p99.9 in µs.
    pub p999_us: u32,
    /// Maximum in µs.
    pub max_us: u32,
    /// Budget in µs.
    pub budget_us: u32,
}

/// The protocol's name of a stage (`vad`, `head+decision`), as every tool prints it.
fn stage_name(s: Stage) -> String {
    s.name().to_owned()
}

/// The protocol's name of an execution provider (`CPU`, `TensorRT`).
fn provider_name(p: Provider) -> String {
    p.name().to_owned()
}

impl AnswerKind {
    /// Owned summary of a decoded response.
    pub(crate) fn from_response(r: &Response<'_>) -> Self {
        match r {
            Response::Hello(h) => AnswerKind::Hello(HelloInfo {
                protocol_version: h.protocol_version,
                bundle_name: h.bundle_name.to_owned(),
                bundle_version: h.bundle_version,
                key_id: h.key_id.iter().map(|b| format!("{b:02x}")).collect(),
                labels: h.labels.iter().map(|s| (*s).to_owned()).collect(),
                sample_rate_hz: h.sample_rate_hz,
                frame_samples: h.frame_samples,
                max_streams: h.max_streams,
                default_deadline_us: h.default_deadline_us,
                max_deadline_us: h.max_deadline_us,
                max_frame_bytes: h.max_frame_bytes,
                verify_deadline_us: h.verify_deadline_us,
            }),
            Response::Pong { nonce } => AnswerKind::Pong { nonce: *nonce },
            Response::StreamOpened {
                stream_id,
                deadline_us,
            } => AnswerKind::StreamOpened {
                stream_id: *stream_id,
                deadline_us: *deadline_us,
            },
            Response::Frame(f) => AnswerKind::Frame(*f),
            Response::Verification(v) => AnswerKind::Verification(*v),
            Response::DeadlineMissed {
                stream_id,
                seq,
                elapsed_us,
                ..
            } => AnswerKind::DeadlineMissed {
                stream_id: *stream_id,
                seq: *seq,
                elapsed_us: *elapsed_us,
            },
            Response::Rejected {
                stream_id,
                seq,
                reason,
                ..
            } => AnswerKind::Rejected {
                stream_id: *stream_id,
                seq: *seq,
                reason: *reason,
            },
            Response::StreamClosed {
                stream_id,
                frames,
                detections,
            } => AnswerKind::StreamClosed {
                stream_id: *stream_id,
                frames: *frames,
                detections: *detections,
            },
            Response::Status(s) => AnswerKind::Status(Box::new(StatusInfo {
                state: match s.state {
                    DeviceState::Starting => "Starting",
                    DeviceState::Ready => "Ready",
                    DeviceState::SafeMode => "SafeMode",
                }
                .to_owned(),
                detail: s.detail.to_owned(),
                bundle_name: s.bundle_name.to_owned(),
                bundle_version: s.bundle_version,
                development: s.development,
                uptime_ms: s.uptime_ms,
                boot_to_ready_ms: s.boot_to_ready_ms,
                clients: s.clients,
                streams: s.streams,
                frames: s.frames,
                detections: s.detections,
                deadline_misses: s.deadline_misses,
                rejections: s.rejections,
                errors: s.errors,
                providers: s
                    .providers
                    .iter()
                    .map(|p| (stage_name(p.stage), provider_name(p.provider)))
                    .collect(),
                latency: s
                    .latency
                    .iter()
                    .map(|l| StageLatencyInfo {
                        stage: stage_name(l.stage),
                        count: l.count,
                        p50_us: l.p50_us,
                        p99_us: l.p99_us,
                        p999_us: l.p999_us,
                        max_us: l.max_us,
                        budget_us: l.budget_us,
                    })
                    .collect(),
                cancellations: s.cancellations,
                wcet_us: s.wcet_us,
                typical_us: s.typical_us,
                late_writes: s.late_writes,
                spread_us: s.spread_us,
                throttled_for_errors: s.throttled_for_errors,
                closed_for_errors: s.closed_for_errors,
                verifications: s.verifications,
                verify_misses: s.verify_misses,
                verify_rejections: s.verify_rejections,
                verify_wcet_us: s.verify_wcet_us,
            })),
            Response::Error(e) => AnswerKind::Error(*e),
            Response::Reloaded {
                ok,
                bundle_version,
                detail,
                ..
            } => AnswerKind::Reloaded {
                ok: *ok,
                bundle_version: *bundle_version,
                detail: (*detail).to_owned(),
            },
        }
    }

    /// Short text for reports.
    pub fn describe(&self) -> String {
        match self {
            AnswerKind::Error(e) => format!("Error({e:?}): {e}"),
            AnswerKind::Damaged(e) => format!("damaged frame from device: {e}"),
            AnswerKind::Undecodable(e) => format!("undecodable frame from device: {e}"),
            AnswerKind::Status(_) => "Status(..)".to_owned(),
            AnswerKind::Hello(h) => {
                format!("Hello(bundle {} v{})", h.bundle_name, h.bundle_version)
            }
            other => format!("{other:?}"),
        }
    }
}

impl Answer {
    fn from_received(r: Received) -> Self {
        match r {
            Received::Frame(f) => Self::from_frame(&f),
            Received::Damaged(e) => Answer {
                request_id: 0,
                kind: AnswerKind::Damaged(e),
                received_at: Instant::now(),
            },
        }
    }

    pub(crate) fn from_frame(f: &ResponseFrame) -> Self {
        match f.decode() {
            Ok(env) => Answer {
                request_id: env.request_id,
                kind: AnswerKind::from_response(&env.body),
                received_at: f.received_at,
            },
            Err(e) => Answer {
                request_id: e.request_id,
                kind: AnswerKind::Undecodable(e.error),
                received_at: f.received_at,
            },
        }
    }
}

/// The device's answer to one audio frame, with client- and server-side timing.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameRecord {
    /// Sequence number sent.
    pub seq: u32,
    /// Request id used.
    pub request_id: u32,
    /// The answer.
    pub answer: AnswerKind,
    /// Client round trip in µs: from just before the request was written to the
    /// moment the answer's last byte was read.
    pub rtt_us: u64,
}

impl FrameRecord {
    /// Server timing, when the answer is a [`Response::Frame`].
    pub fn timing(&self) -> Option<Timing> {
        match &self.answer {
            AnswerKind::Frame(f) => Some(f.timing),
            _ => None,
        }
    }
}

/// A protocol session over one link.
pub struct Session {
    client: Client<LinkReader, LinkWriter>,
    link: String,
    /// Longest wait for one answer.
    pub answer_timeout: Duration,
    /// Answers that arrived while the rig waited for another request id, oldest first.
    pub stray: VecDeque<Answer>,
    nonce: u32,
}

impl Session {
    /// Opens a session on `link` with the given per-answer timeout.
    ///
    /// # Errors
    /// [`SessionError::Link`] when the link cannot be split.
    pub fn new(link: Box<dyn Link>, answer_timeout: Duration) -> Result<Self, SessionError> {
        let desc = link.description();
        let (r, w) = link.split()?;
        Ok(Self {
            client: Client::new(r, w),
            link: desc,
            answer_timeout,
            stray: VecDeque::new(),
            nonce: 0x4849_4c00, // "HIL\0"
        })
    }

    /// The link's description.
    pub fn link(&self) -> &str {
        &self.link
    }

    fn io_err(&self, doing: &str, source: io::Error) -> SessionError {
        SessionError::Io {
            link: self.link.clone(),
            doing: doing.to_owned(),
            source,
        }
    }

    fn unexpected(&self, doing: &str, got: &AnswerKind) -> SessionError {
        SessionError::Unexpected {
            link: self.link.clone(),
            doing: doing.to_owned(),
            got: got.describe(),
        }
    }

    /// Sends a request; returns its request id and the instant just before the write.
    ///
    /// # Errors
    /// [`SessionError::Io`].
    pub fn send(&mut self, request: &Request<'_>) -> Result<(u32, Instant), SessionError> {
        let t = Instant::now();
        let id = self
            .client
            .send(request)
            .map_err(|e| self.io_err(&format!("sending {}", request_name(request)), e))?;
        Ok((id, t))
    }

    /// Writes raw bytes (fault injection).
    ///
    /// # Errors
    /// [`SessionError::Io`].
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<Instant, SessionError> {
        let t = Instant::now();
        self.client
            .send_raw(bytes)
            .map_err(|e| self.io_err("sending raw bytes", e))?;
        Ok(t)
    }

    /// Waits up to `timeout` for the next answer of any id (stray answers first).
    /// `Ok(None)` on timeout.
    ///
    /// # Errors
    /// [`SessionError::Io`] for read errors other than timeouts (e.g. peer closed).
    pub fn next_answer(&mut self, timeout: Duration) -> Result<Option<Answer>, SessionError> {
        if let Some(a) = self.stray.pop_front() {
            return Ok(Some(a));
        }
        let end = Instant::now() + timeout;
        loop {
            match self.client.recv() {
                Ok(r) => return Ok(Some(Answer::from_received(r))),
                Err(e) if is_timeout(&e) => {
                    if Instant::now() >= end {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(self.io_err("reading answers", e)),
            }
        }
    }

    /// Waits for the answer carrying `request_id`; other answers go to
    /// [`Session::stray`].
    ///
    /// # Errors
    /// [`SessionError::Timeout`] after [`Session::answer_timeout`], or I/O errors.
    pub fn wait_for(&mut self, request_id: u32, doing: &str) -> Result<Answer, SessionError> {
        if let Some(pos) = self.stray.iter().position(|a| a.request_id == request_id) {
            return Ok(self.stray.remove(pos).expect("index is valid"));
        }
        let end = Instant::now() + self.answer_timeout;
        loop {
            match self.client.recv() {
                Ok(r) => {
                    let a = Answer::from_received(r);
                    if a.request_id == request_id {
                        return Ok(a);
                    }
                    log::debug!("{}: stray answer {:?}", self.link, a.kind);
                    self.stray.push_back(a);
                }
                Err(e) if is_timeout(&e) => {
                    if Instant::now() >= end {
                        return Err(SessionError::Timeout {
                            link: self.link.clone(),
                            doing: doing.to_owned(),
                            timeout_ms: self.answer_timeout.as_millis() as u64,
                        });
                    }
                }
                Err(e) => return Err(self.io_err(doing, e)),
            }
        }
    }

    /// Sends a request and waits for its answer.
    ///
    /// # Errors
    /// As [`Session::send`] and [`Session::wait_for`].
    pub fn call(&mut self, request: &Request<'_>) -> Result<Answer, SessionError> {
        let (id, _) = self.send(request)?;
        self.wait_for(id, request_name(request))
    }

    /// Resynchronises: sends a `0x00` delimiter and a Ping, discards everything before
    /// the Pong (stale bytes on a serial line from an earlier session). Returns the
    /// discarded answers.
    ///
    /// # Errors
    /// [`SessionError::Timeout`] when no Pong comes back.
    pub fn sync(&mut self) -> Result<Vec<Answer>, SessionError> {
        self.send_raw(&[0])?;
        self.nonce = self.nonce.wrapping_add(1);
        let nonce = self.nonce;
        let (id, _) = self.send(&Request::Ping { nonce })?;
        let a = self.wait_for(id, "Ping (resync)")?;
        let discarded: Vec<Answer> = self.stray.drain(..).collect();
        match a.kind {
            AnswerKind::Pong { nonce: n } if n == nonce => Ok(discarded),
            other => Err(self.unexpected("Ping (resync)", &other)),
        }
    }

    /// Ping with a fresh nonce; returns the round trip in µs.
    ///
    /// # Errors
    /// Timeout, I/O, or an answer other than a Pong with the same nonce.
    pub fn ping(&mut self) -> Result<u64, SessionError> {
        self.nonce = self.nonce.wrapping_add(1);
        let nonce = self.nonce;
        let (id, t) = self.send(&Request::Ping { nonce })?;
        let a = self.wait_for(id, "Ping")?;
        match a.kind {
            AnswerKind::Pong { nonce: n } if n == nonce => {
                Ok(a.received_at.saturating_duration_since(t).as_micros() as u64)
            }
            other => Err(self.unexpected("Ping", &other)),
        }
    }

    /// Handshake.
    ///
    /// # Errors
    /// Timeout, I/O, or an answer other than `Hello`.
    pub fn hello(&mut self, client: &str) -> Result<HelloInfo, SessionError> {
        let a = self.call(&Request::Hello(Hello { client }))?;
        match a.kind {
            AnswerKind::Hello(h) => Ok(h),
            other => Err(self.unexpected("Hello", &other)),
        }
    }

    /// Status.
    ///
    /// # Errors
    /// Timeout, I/O, or an answer other than `Status`.
    pub fn status(&mut self) -> Result<StatusInfo, SessionError> {
        let a = self.call(&Request::Status)?;
        match a.kind {
            AnswerKind::Status(s) => Ok(*s),
            other => Err(self.unexpected("Status", &other)),
        }
    }

    /// Opens a 16 kHz × 1280-sample stream with the default deadline; returns the
    /// effective deadline in µs.
    ///
    /// # Errors
    /// Timeout, I/O, or an answer other than `StreamOpened`.
    pub fn open_stream(&mut self, stream_id: u16) -> Result<u32, SessionError> {
        let a = self.call(&Request::OpenStream(OpenStream {
            stream_id,
            sample_rate_hz: SAMPLE_RATE_HZ,
            frame_samples: FRAME_SAMPLES as u16,
            deadline_us: 0,
        }))?;
        match a.kind {
            AnswerKind::StreamOpened {
                stream_id: s,
                deadline_us,
            } if s == stream_id => Ok(deadline_us),
            other => Err(self.unexpected(&format!("OpenStream {stream_id}"), &other)),
        }
    }

    /// Closes a stream; returns (frames, detections) as counted by the device.
    ///
    /// # Errors
    /// Timeout, I/O, or an answer other than `StreamClosed`.
    pub fn close_stream(&mut self, stream_id: u16) -> Result<(u32, u32), SessionError> {
        let a = self.call(&Request::CloseStream { stream_id })?;
        match a.kind {
            AnswerKind::StreamClosed {
                stream_id: s,
                frames,
                detections,
            } if s == stream_id => Ok((frames, detections)),
            other => Err(self.unexpected(&format!("CloseStream {stream_id}"), &other)),
        }
    }

    /// Sends one audio frame and waits for its answer (closed loop).
    ///
    /// # Errors
    /// Timeout or I/O. Any answer (result, miss, rejection, error) is returned as a record.
    pub fn audio(
        &mut self,
        stream_id: u16,
        seq: u32,
        pcm: &[u8],
    ) -> Result<FrameRecord, SessionError> {
        let (id, t) = self.send(&Request::Audio(Audio {
            stream_id,
            seq,
            deadline_us: 0,
            pcm,
        }))?;
        let a = self.wait_for(id, &format!("Audio stream {stream_id} seq {seq}"))?;
        Ok(FrameRecord {
            seq,
            request_id: id,
            rtt_us: a.received_at.saturating_duration_since(t).as_micros() as u64,
            answer: a.kind,
        })
    }

    /// Streams `frames` from seq 0, closed loop; returns one record per frame.
    ///
    /// # Errors
    /// The first timeout or I/O error.
    pub fn stream(
        &mut self,
        stream_id: u16,
        frames: &[Vec<u8>],
    ) -> Result<Vec<FrameRecord>, SessionError> {
        frames
            .iter()
            .enumerate()
            .map(|(seq, pcm)| self.audio(stream_id, seq as u32, pcm))
            .collect()
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("link", &self.link)
            .field("answer_timeout", &self.answer_timeout)
            .field("stray", &self.stray.len())
            .finish_non_exhaustive()
    }
}

/// Request variant name for messages.
pub fn request_name(r: &Request<'_>) -> &'static str {
    match r {
        Request::Hello(_) => "Hello",
        Request::Ping { .. } => "Ping",
        Request::OpenStream(_) => "OpenStream",
        Request::Audio(_) => "Audio",
        Request::CloseStream { .. } => "CloseStream",
        Request::Status => "Status",
        Request::Reload => "Reload",
    }
}
