//! Message types. Every type here is part of the wire format: variants and fields
//! are encoded by postcard in declaration order, so never reorder them; add new
//! variants at the end and bump [`crate::PROTOCOL_VERSION`] for anything else.

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::{MAX_LABELS, MAX_STAGES};

/// The versioned envelope around every request and response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Protocol version of the sender ([`crate::PROTOCOL_VERSION`]).
    pub version: u8,
    /// Chosen by the client, echoed in the response. `0` in errors about frames whose
    /// request id could not be read.
    pub request_id: u32,
    /// The message.
    pub body: T,
}

/// Client → appliance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// Handshake; answered with [`Response::Hello`]. Starts a new session: streams the
    /// connection still has open (e.g. left by a serial peer that rebooted) are closed.
    Hello(#[serde(borrow)] Hello<'a>),
    /// Liveness check; answered with [`Response::Pong`] carrying the same nonce.
    Ping {
        /// Any value; echoed.
        nonce: u32,
    },
    /// Opens an audio stream; answered with [`Response::StreamOpened`].
    OpenStream(OpenStream),
    /// One frame of audio; answered with exactly one of [`Response::Frame`],
    /// [`Response::DeadlineMissed`], [`Response::Rejected`] or [`Response::Error`].
    /// With a verifier ([`HelloAck::verify_deadline_us`] > 0), a frame on which stage 1
    /// fires gets a second answer with the same request id, later:
    /// [`Response::Verification`], by the verification deadline.
    Audio(#[serde(borrow)] Audio<'a>),
    /// Closes a stream; answered with [`Response::StreamClosed`].
    CloseStream {
        /// Stream to close.
        stream_id: u16,
    },
    /// Asks for the appliance's status; answered with [`Response::Status`].
    Status,
    /// Admin only (Unix socket, a peer with the daemon's uid or root): boot the newly
    /// selected A/B slot beside the running one and switch to it without dropping
    /// connections; answered with [`Response::Reloaded`] or
    /// `Error(WireError::NotPermitted)`.
    Reload,
}

/// Handshake request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello<'a> {
    /// Free-form client name for logs and status, at most 32 bytes.
    pub client: &'a str,
}

/// Opens a stream. Audio format is fixed (v1 and v2); the fields let a client state what it
/// sends, so a mismatch is an explicit error rather than garbage recognition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenStream {
    /// Client-chosen id, unique per connection.
    pub stream_id: u16,
    /// Must be [`crate::SAMPLE_RATE_HZ`].
    pub sample_rate_hz: u32,
    /// Must be [`crate::FRAME_SAMPLES`].
    pub frame_samples: u16,
    /// Deadline for each frame of this stream in µs; `0` means the appliance default.
    /// Longer than the appliance maximum is an error.
    pub deadline_us: u32,
}

/// One audio frame: [`crate::FRAME_SAMPLES`] samples of 16 kHz mono s16le PCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audio<'a> {
    /// Stream opened before with [`Request::OpenStream`].
    pub stream_id: u16,
    /// Frame sequence number, 0 for the first frame of the stream, +1 per frame.
    /// A gap (lost frame) is accepted and counted; a repeat or a step back is
    /// [`WireError::OutOfOrder`].
    pub seq: u32,
    /// `0` = the stream's deadline; otherwise a shorter deadline for this frame in µs.
    pub deadline_us: u32,
    /// s16le PCM, exactly [`crate::FRAME_AUDIO_BYTES`] bytes.
    #[serde(with = "serde_bytes_borrowed")]
    pub pcm: &'a [u8],
}

/// Appliance → client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response<'a> {
    /// Handshake answer.
    Hello(#[serde(borrow)] HelloAck<'a>),
    /// Answer to [`Request::Ping`].
    Pong {
        /// The request's nonce.
        nonce: u32,
    },
    /// The stream is open.
    StreamOpened {
        /// Stream id.
        stream_id: u16,
        /// Effective per-frame deadline in µs.
        deadline_us: u32,
    },
    /// Result for one audio frame, sent by its deadline.
    Frame(FrameResult),
    /// The frame could not be processed by its deadline; its work was cancelled and the
    /// stream's state was reset.
    DeadlineMissed {
        /// Stream id.
        stream_id: u16,
        /// Frame sequence number.
        seq: u32,
        /// The deadline in µs.
        deadline_us: u32,
        /// Time from the last byte read to this answer, in µs.
        elapsed_us: u32,
    },
    /// Admission control refused the frame at arrival.
    Rejected {
        /// Stream id.
        stream_id: u16,
        /// Frame sequence number.
        seq: u32,
        /// Why.
        reason: RejectReason,
        /// Suggested wait before retrying, in µs.
        retry_after_us: u32,
    },
    /// The stream is closed.
    StreamClosed {
        /// Stream id.
        stream_id: u16,
        /// Frames processed in the stream.
        frames: u32,
        /// Detections in the stream.
        detections: u32,
    },
    /// Status report.
    Status(#[serde(borrow)] StatusReport<'a>),
    /// The request (or frame) was bad; the connection continues at the next frame.
    Error(WireError),
    /// Answer to [`Request::Reload`]: what is served now. On failure (`ok == false`) the
    /// previous bundle keeps serving and `detail` says why.
    Reloaded {
        /// The new bundle is serving.
        ok: bool,
        /// Bundle served after the reload.
        bundle_name: &'a str,
        /// Its version.
        bundle_version: u32,
        /// Its A/B slot, or empty.
        slot: &'a str,
        /// Why the reload failed, or empty.
        detail: &'a str,
    },
    /// Stage 2's answer about one stage-1 trigger, sent with the trigger frame's
    /// request id by the verification deadline, which runs from the end of the
    /// trigger's utterance (bundles with a verifier). Since v3.
    Verification(Verification),
}

/// Handshake answer: what the appliance runs and its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloAck<'a> {
    /// Highest protocol version the appliance speaks.
    pub protocol_version: u8,
    /// Loaded bundle's name (empty in safe mode).
    pub bundle_name: &'a str,
    /// Loaded bundle's version.
    pub bundle_version: u32,
    /// Key id that signed the bundle (first 8 bytes of SHA-256 of the public key).
    pub key_id: [u8; 8],
    /// Detection labels, indexed by [`Detection::label`].
    #[serde(borrow)]
    pub labels: Vec<&'a str, MAX_LABELS>,
    /// Audio sample rate in Hz.
    pub sample_rate_hz: u32,
    /// Samples per audio frame.
    pub frame_samples: u16,
    /// Most streams one connection may open.
    pub max_streams: u16,
    /// Default per-frame deadline in µs.
    pub default_deadline_us: u32,
    /// Longest per-frame deadline a client may ask for, in µs.
    pub max_deadline_us: u32,
    /// Largest frame accepted on the wire, in bytes.
    pub max_frame_bytes: u16,
    /// Verification deadline in µs after the arrival of the frame that ends a trigger's
    /// utterance; `0` when the bundle
    /// has no verifier (detections then come in [`FrameResult::detection`]). With a
    /// verifier, `FrameResult::detection` is always `None` and commands arrive as
    /// [`Response::Verification`]. Since v3.
    pub verify_deadline_us: u32,
}

/// Result for one audio frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrameResult {
    /// Stream id.
    pub stream_id: u16,
    /// Frame sequence number.
    pub seq: u32,
    /// Highest Silero VAD speech probability in this frame, in [0, 1].
    pub vad_prob: f32,
    /// A command recognised in this frame, if any (at most one per utterance). Always
    /// `None` with a verifier: the command then arrives as [`Response::Verification`].
    pub detection: Option<Detection>,
    /// Where the time went.
    pub timing: Timing,
}

/// A recognised command.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Index into [`HelloAck::labels`].
    pub label: u8,
    /// Stage 1 ([`FrameResult`]): smoothed head score in [0, 1]. Stage 2
    /// ([`Verification`]): the verifier's margin over `none`, in nats (≥ the bundle's
    /// `theta`).
    pub score: f32,
    /// Stream time of the end of the frame that triggered it, in ms from stream start.
    pub audio_ms: u32,
}

/// Per-frame timing, all in µs, measured from the moment the frame's last byte was
/// read by the transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// Waiting for an inference worker.
    pub queue_us: u32,
    /// Pipeline compute (VAD + mel + embedding + head + decision).
    pub compute_us: u32,
    /// Total until the response was handed to the transport.
    pub total_us: u32,
}

/// Stage 2's answer about one trigger: the verified command, or why there is none.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Stream id.
    pub stream_id: u16,
    /// Sequence number of the frame on which stage 1 fired.
    pub trigger_seq: u32,
    /// Stage 1's label, index into [`HelloAck::labels`].
    pub trigger_label: u8,
    /// Sequence number of the frame the verified audio ends with: the first frame from
    /// the trigger on in which speech had ended (VAD), or the last one the appliance
    /// waited for.
    pub end_seq: u32,
    /// The verdict.
    pub outcome: VerifyOutcome,
    /// The verification deadline, in µs after frame `end_seq`'s arrival.
    pub deadline_us: u32,
    /// Timing in µs, from frame `end_seq`'s arrival: `queue_us` until the verifier
    /// started, `compute_us` the verifier's compute, `total_us` until this answer was
    /// handed to the transport.
    pub timing: Timing,
}

/// What stage 2 concluded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum VerifyOutcome {
    /// The verifier agrees: this command is detected (`score` is the margin in nats,
    /// `audio_ms` the end of frame `end_seq`).
    Detected(Detection),
    /// No command: `none` won, the best command's margin stayed below `theta`, or
    /// another command scored within the appliance's command gap of it.
    NoCommand {
        /// The best command, index into [`HelloAck::labels`].
        best_label: u8,
        /// Its score minus `none`'s, in nats.
        margin: f32,
    },
    /// Not finished by the deadline: the run was cancelled.
    DeadlineMissed,
    /// Admission control refused it at the trigger.
    Rejected(RejectReason),
    /// The verifier failed (logged by the appliance).
    Failed,
}

/// Why admission control refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// The work queue is at its bound.
    QueueFull,
    /// Queued work plus worst-case compute would end after the deadline.
    WouldMissDeadline,
    /// No verified bundle is loaded (safe mode).
    NoModel,
    /// The appliance is shutting down.
    ShuttingDown,
}

/// State of the appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceState {
    /// Booting, verifying and warming up; not serving inference yet.
    Starting,
    /// Serving.
    Ready,
    /// No verified bundle: answers status, refuses inference.
    SafeMode,
}

/// Pipeline stage, for provider and latency reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Transport read and decode.
    Transport,
    /// Queue wait.
    Queue,
    /// Silero VAD.
    Vad,
    /// Mel spectrogram.
    Mel,
    /// Speech embedding.
    Embedding,
    /// Command head and decision.
    Head,
    /// Encode and write.
    Write,
    /// End to end.
    Total,
    /// Stage 2: the Whisper verifier (mel, encoder and decoder of one 3 s window).
    /// Since v2.
    Verifier,
    /// Stage 2 end to end: trigger frame's arrival to the verification's write. Since v3.
    VerifyTotal,
}

impl Stage {
    /// The name every tool prints for this stage (`"head+decision"` for [`Stage::Head`]).
    pub const fn name(self) -> &'static str {
        match self {
            Stage::Transport => "transport",
            Stage::Queue => "queue",
            Stage::Vad => "vad",
            Stage::Mel => "mel",
            Stage::Embedding => "embedding",
            Stage::Head => "head+decision",
            Stage::Write => "write",
            Stage::Total => "total",
            Stage::Verifier => "verifier",
            Stage::VerifyTotal => "verify total",
        }
    }
}

impl core::fmt::Display for Stage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// ONNX Runtime execution provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Provider {
    /// CPU execution provider.
    Cpu,
    /// CUDA execution provider.
    Cuda,
    /// TensorRT execution provider.
    TensorRt,
}

impl Provider {
    /// The name every tool prints for this provider: `CPU`, `CUDA`, `TensorRT`.
    pub const fn name(self) -> &'static str {
        match self {
            Provider::Cpu => "CPU",
            Provider::Cuda => "CUDA",
            Provider::TensorRt => "TensorRT",
        }
    }
}

impl core::fmt::Display for Provider {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which provider serves a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageProvider {
    /// Stage.
    pub stage: Stage,
    /// Provider that actually serves it.
    pub provider: Provider,
}

/// Measured latency of a stage in µs beside its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageLatency {
    /// Stage.
    pub stage: Stage,
    /// Samples measured.
    pub count: u64,
    /// Median in µs.
    pub p50_us: u32,
    /// 99th percentile in µs.
    pub p99_us: u32,
    /// 99.9th percentile in µs.
    pub p999_us: u32,
    /// Maximum in µs.
    pub max_us: u32,
    /// Budget from docs/DESIGN.md §4 / the bundle, in µs.
    pub budget_us: u32,
}

/// Appliance status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport<'a> {
    /// Serving state.
    pub state: DeviceState,
    /// Why the appliance is in safe mode, or empty.
    pub detail: &'a str,
    /// Loaded bundle's name.
    pub bundle_name: &'a str,
    /// Loaded bundle's version.
    pub bundle_version: u32,
    /// Key id that signed the bundle.
    pub key_id: [u8; 8],
    /// The bundle is a development bundle.
    pub development: bool,
    /// Time since the daemon started, in ms.
    pub uptime_ms: u64,
    /// Time from start to ready, in ms (0 if not ready).
    pub boot_to_ready_ms: u32,
    /// Connected clients.
    pub clients: u16,
    /// Open streams over all clients.
    pub streams: u16,
    /// Audio frames answered with a result.
    pub frames: u64,
    /// Commands detected.
    pub detections: u64,
    /// Frames answered with [`Response::DeadlineMissed`].
    pub deadline_misses: u64,
    /// Frames answered with [`Response::Rejected`].
    pub rejections: u64,
    /// Requests answered with [`Response::Error`].
    pub errors: u64,
    /// Provider per model stage.
    pub providers: Vec<StageProvider, MAX_STAGES>,
    /// Latency per stage.
    pub latency: Vec<StageLatency, MAX_STAGES>,
    /// A/B slot served (`a`, `b (trial)`), or empty when serving a bundle file.
    pub slot: &'a str,
    /// The newest provisioning decision from the audit log (time, action, result,
    /// bundle, reason), or empty.
    pub provisioning: &'a str,
    /// Runs cut at their deadline (ONNX Runtime `RunOptions::terminate`).
    pub cancellations: u64,
    /// Current worst-case compute per frame used by admission control, in µs (the
    /// online p99.9 of measured compute; the arriving frame is charged this).
    pub wcet_us: u32,
    /// Current typical compute per frame used by admission control, in µs (the mean of
    /// measured compute; each frame queued ahead is charged this).
    pub typical_us: u32,
    /// Answers to audio frames whose first byte was written after the frame's
    /// deadline (a result that late is sent as [`Response::DeadlineMissed`] and counted
    /// there). Non-zero means the host stalled or a client read too slowly.
    pub late_writes: u64,
    /// Current standard deviation of compute per frame used by admission control, in
    /// µs (the frames queued ahead are charged three of their sum's on top).
    pub spread_us: u32,
    /// Connections slowed down for sending only errors (16 in a row: their reader
    /// drops to normal scheduling and pauses between reads). Since v2.
    pub throttled_for_errors: u64,
    /// Unix-socket connections closed for sending only errors (256 in a row) or no
    /// valid request in time (5 s after connecting, 60 s after the last one); a serial
    /// line is only throttled. Since v2.
    pub closed_for_errors: u64,
    /// Triggers answered with a verdict ([`VerifyOutcome::Detected`] or
    /// [`VerifyOutcome::NoCommand`]) by their deadline. Since v3.
    pub verifications: u64,
    /// Triggers answered [`VerifyOutcome::DeadlineMissed`]. Since v3.
    pub verify_misses: u64,
    /// Triggers answered [`VerifyOutcome::Rejected`]. Since v3.
    pub verify_rejections: u64,
    /// Current worst-case compute per verification used by admission control, in µs
    /// (0 without a verifier). Since v3.
    pub verify_wcet_us: u32,
    /// The verification deadline in µs after the trigger (0 without a verifier). Since v3.
    pub verify_deadline_us: u32,
}

/// Errors that travel on the wire. Each names what was wrong and what was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WireError {
    /// The frame's CRC-32 does not match its payload (includes most truncated frames).
    BadCrc {
        /// CRC carried by the frame.
        received: u32,
        /// CRC computed over the payload.
        computed: u32,
    },
    /// The frame is too short to hold a message and its CRC.
    Truncated {
        /// Decoded length in bytes.
        len: u16,
    },
    /// The frame exceeded the limit before its delimiter; it was discarded.
    FrameTooLong {
        /// Limit in bytes.
        max: u16,
    },
    /// The bytes between delimiters are not valid COBS.
    BadCobs,
    /// The envelope's version is not one this side speaks.
    UnknownVersion {
        /// Version received.
        got: u8,
        /// Version expected.
        supported: u8,
    },
    /// The payload is not a valid message of this version.
    Malformed,
    /// The request is not valid here (e.g. a response sent to the appliance).
    UnexpectedMessage,
    /// No stream with that id is open on this connection.
    UnknownStream {
        /// Stream id.
        stream_id: u16,
    },
    /// A stream with that id is already open on this connection.
    StreamExists {
        /// Stream id.
        stream_id: u16,
    },
    /// The connection already has the maximum number of streams open.
    TooManyStreams {
        /// Limit.
        max: u16,
    },
    /// The frame's sequence number repeats or goes back.
    OutOfOrder {
        /// Stream id.
        stream_id: u16,
        /// Lowest acceptable sequence number.
        expected: u32,
        /// Sequence number received.
        got: u32,
    },
    /// The audio payload has the wrong length.
    BadAudioLength {
        /// Bytes received.
        got: u16,
        /// Bytes expected.
        expected: u16,
    },
    /// The stream asked for an audio format the appliance does not take.
    UnsupportedFormat {
        /// Sample rate asked for, in Hz.
        sample_rate_hz: u32,
        /// Frame size asked for, in samples.
        frame_samples: u16,
    },
    /// The deadline asked for is longer than the appliance maximum.
    DeadlineTooLong {
        /// Requested deadline in µs.
        requested_us: u32,
        /// Maximum in µs.
        max_us: u32,
    },
    /// The operation is not allowed on this transport or for this peer.
    NotPermitted,
    /// Too many clients are connected; this connection will be closed.
    TooManyClients {
        /// Limit.
        max: u16,
    },
    /// A model stage failed on this frame (not a deadline); the stream was reset.
    InferenceFailed {
        /// The stage that failed.
        stage: Stage,
    },
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            WireError::BadCrc { received, computed } => write!(
                f,
                "frame CRC-32 mismatch: frame carries {received:#010x}, payload hashes to {computed:#010x}"
            ),
            WireError::Truncated { len } => write!(
                f,
                "frame truncated: {len} bytes decoded, a message needs at least 7 (envelope + CRC-32)"
            ),
            WireError::FrameTooLong { max } => {
                write!(f, "frame longer than {max} bytes before its delimiter; discarded")
            }
            WireError::BadCobs => write!(f, "frame is not valid COBS"),
            WireError::UnknownVersion { got, supported } => write!(
                f,
                "unknown protocol version {got} (this side speaks version {supported})"
            ),
            WireError::Malformed => write!(f, "payload is not a valid message of this protocol version"),
            WireError::UnexpectedMessage => write!(f, "message not valid in this direction or state"),
            WireError::UnknownStream { stream_id } => write!(f, "stream {stream_id} is not open"),
            WireError::StreamExists { stream_id } => write!(f, "stream {stream_id} is already open"),
            WireError::TooManyStreams { max } => {
                write!(f, "too many streams: this connection may open at most {max}")
            }
            WireError::OutOfOrder { stream_id, expected, got } => write!(
                f,
                "stream {stream_id}: frame seq {got} out of order (expected {expected} or later)"
            ),
            WireError::BadAudioLength { got, expected } => {
                write!(f, "audio payload is {got} bytes, expected {expected} (s16le mono)")
            }
            WireError::UnsupportedFormat { sample_rate_hz, frame_samples } => write!(
                f,
                "unsupported audio format {sample_rate_hz} Hz x {frame_samples} samples (expected 16000 Hz x 1280)"
            ),
            WireError::DeadlineTooLong { requested_us, max_us } => write!(
                f,
                "deadline {requested_us} µs is longer than the maximum {max_us} µs"
            ),
            WireError::NotPermitted => write!(f, "operation not permitted on this transport"),
            WireError::TooManyClients { max } => {
                write!(f, "too many clients: at most {max} may be connected")
            }
            WireError::InferenceFailed { stage } => {
                write!(f, "inference failed in stage {stage:?}; the stream was reset")
            }
        }
    }
}

impl core::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RejectReason::QueueFull => "queue full",
            RejectReason::WouldMissDeadline => "would miss deadline",
            RejectReason::NoModel => "no verified model loaded (safe mode)",
            RejectReason::ShuttingDown => "shutting down",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for WireError {}

/// Serialises `&[u8]` as a postcard byte string (length + bytes) and borrows it back
/// on decode, so audio is never copied on the decoding side.
mod serde_bytes_borrowed {
    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &&[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<&'de [u8], D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = &'de [u8];
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str("borrowed bytes")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(V)
    }
}
