//! `outpost-hil bench-load`: the simulated device under real-time load.
//!
//! Every stream sends one 80 ms frame every 80 ms by the wall clock (open loop: the
//! next frame goes out on schedule whether or not the previous one was answered), the
//! streams' phases spread evenly over the 80 ms period. Streams are spread over Unix
//! socket connections (at most the handshake's `max_streams`, ≤ 8, per connection) and,
//! on the PTY path, multiplexed on the single PTY line (which, being one connection, also
//! carries at most `max_streams`; any more go to socket connections beside it). Each
//! connection has one writer thread (the pacer) and one reader thread.
//!
//! Per frame the rig records the instant the frame's last byte was written and the
//! instant its answer's last byte was read; afterwards every frame is matched with its
//! answers by request id. Invariants (a failure makes the exit code 1):
//!
//! * every frame is answered exactly once (a result, `DeadlineMissed`, `Rejected`, or
//!   `Error` all count as the one answer);
//! * no answer is **late**: written → answer read ≤ deadline + the late allowance
//!   ([`DEFAULT_LATE_ALLOWANCE_US`], transport + the rig's own wake-up).
//!
//! Deadline misses and rejections are the daemon keeping its promise under load; they
//! are counted and reported, not failures.
//!
//! Scenarios: [`LoadScenario`]. See `hil-tests/README.md`.

use std::collections::HashMap;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use outpost_protocol::{
    decode_payload, encode_frame, Audio, FrameDecoder, Hello, OpenStream, RejectReason, Request,
    Response, FRAME_SAMPLES, MAX_FRAME_BYTES, MAX_PAYLOAD_BYTES, SAMPLE_RATE_HZ,
};
use serde::Serialize;

use crate::bench::{bench_audio, read_memory_kb};
use crate::clips::Clip;
use crate::link::{is_timeout, Link, LinkReader, LinkWriter, SerialLink, SocketLink};
use crate::scenario::CLIENT_NAME;
use crate::session::{AnswerKind, Session, StatusInfo};
use crate::sim::{SimOptions, SimulatedDevice};
use crate::stats::{LatencySeries, LatencySummary};

/// One frame per stream per period: 1280 samples at 16 kHz.
pub const FRAME_PERIOD: Duration = Duration::from_millis(80);
/// Default late allowance in µs: an answer read more than deadline + this after the
/// frame's last byte was written is late. It covers the transport both ways on a local
/// socket or PTY (tens of µs) and the rig's reader waking up (a SCHED_FIFO thread: tens
/// of µs; a normal one under a CPU hog: up to a few ms), with margin.
pub const DEFAULT_LATE_ALLOWANCE_US: u64 = 2_000;
/// Streams the daemon serves at once over all clients (`SchedulerConfig::max_streams`).
pub const DAEMON_MAX_STREAMS: usize = 64;
/// Streams per connection when the handshake says nothing smaller (`Limits`).
pub const STREAMS_PER_CONN: usize = 8;
/// After the last frame is written, how long the rig waits for outstanding answers;
/// a frame still unanswered then is counted unanswered.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout for set-up calls (handshake, open/close stream, status).
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Memory growth over an overload run above which the report says "not flat", in kB.
pub const MEMORY_FLAT_KB: u64 = 4 * 1024;

/// A `bench-load` scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LoadScenario {
    /// 1, 8, 32 real-time streams over the socket and over the PTY.
    Load,
    /// The most streams served with zero misses and zero rejections.
    Capacity,
    /// 2× capacity: every frame answered once, on time.
    Overload,
    /// The 8-stream run with a busy loop on every core beside it.
    Hog,
}

impl LoadScenario {
    /// All, in run order.
    pub const ALL: [LoadScenario; 4] = [
        LoadScenario::Load,
        LoadScenario::Capacity,
        LoadScenario::Overload,
        LoadScenario::Hog,
    ];

    /// Name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            LoadScenario::Load => "load",
            LoadScenario::Capacity => "capacity",
            LoadScenario::Overload => "overload",
            LoadScenario::Hog => "hog",
        }
    }

    /// Parses a command-line name.
    ///
    /// # Errors
    /// Unknown names, listing the known ones.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| format!("unknown scenario {s:?} (load, capacity, overload, hog)"))
    }
}

/// What runs beside the daemon in the `hog` scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HogKind {
    /// `stress-ng --cpu N` if it is on `PATH`, else spinning threads.
    Auto,
    /// `stress-ng --cpu N` (error if absent).
    StressNg,
    /// N threads of this process spinning (normal scheduling policy).
    Spin,
}

/// `bench-load` options.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// How to start the daemon.
    pub sim: SimOptions,
    /// Clips to cycle through (empty: synthetic tone + noise).
    pub clips: Vec<Clip>,
    /// Scenarios to run, in order.
    pub scenarios: Vec<LoadScenario>,
    /// Stream counts of the `load` scenario.
    pub stream_counts: Vec<usize>,
    /// Length of each `load`, `overload` and `hog` run.
    pub duration: Duration,
    /// Length of the run confirming the capacity.
    pub capacity_duration: Duration,
    /// Length of each capacity search probe.
    pub probe_duration: Duration,
    /// Capacity to use for `overload` when `capacity` is not run (else it is searched
    /// with probes only).
    pub capacity_hint: Option<usize>,
    /// Streams in the `hog` runs.
    pub hog_streams: usize,
    /// Busy loops in the `hog` runs (default: available cores).
    pub hog_workers: usize,
    /// Hog implementation.
    pub hog_kind: HogKind,
    /// Also run the socket hog row against a daemon started with `--no-rt`.
    pub hog_no_rt: bool,
    /// Late allowance in µs.
    pub late_allowance_us: u64,
    /// SCHED_FIFO priority of the rig's reader and writer threads (`None`: normal).
    pub rig_rt_priority: Option<u8>,
    /// Where daemon logs are kept (`outpostd-<scenario>.log`).
    pub log_dir: Option<PathBuf>,
}

/// Logical CPUs of this machine.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Which transport a group of streams used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Transport {
    /// Unix socket connections.
    Socket,
    /// The PTY line.
    Pty,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Socket => "socket",
            Transport::Pty => "pty",
        }
    }
}

/// Streams of one connection: stream ids and their global index (which sets phase and
/// audio offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnPlan {
    /// Transport.
    pub transport: Transport,
    /// `(stream_id, global index)`.
    pub streams: Vec<(u16, usize)>,
}

/// Spreads `n` streams: up to `per_conn` on the PTY line when `pty`, the rest evenly
/// over the fewest socket connections holding at most `per_conn` each. Global indices
/// are dealt round-robin over the connections so each connection's streams spread over
/// the period.
pub fn plan_connections(n: usize, pty: bool, per_conn: usize) -> Vec<ConnPlan> {
    let per_conn = per_conn.max(1);
    let on_pty = if pty { n.min(per_conn) } else { 0 };
    let rest = n - on_pty;
    let sockets = rest.div_ceil(per_conn);
    let mut sizes = Vec::new();
    if on_pty > 0 {
        sizes.push((Transport::Pty, on_pty));
    }
    for i in 0..sockets {
        // Even split: the first `rest % sockets` connections get one more.
        let size = rest / sockets + usize::from(i < rest % sockets);
        sizes.push((Transport::Socket, size));
    }
    let mut plans: Vec<ConnPlan> = sizes
        .iter()
        .map(|&(transport, _)| ConnPlan {
            transport,
            streams: Vec::new(),
        })
        .collect();
    let mut global = 0;
    let mut round = 0u16;
    while global < n {
        for (plan, &(_, size)) in plans.iter_mut().zip(&sizes) {
            if plan.streams.len() < size && global < n {
                plan.streams.push((round + 1, global));
                global += 1;
            }
        }
        round += 1;
    }
    plans
}

/// Offset of stream `global` of `n` within the frame period (phases evenly spread).
pub fn phase(global: usize, n: usize) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    FRAME_PERIOD * global as u32 / n as u32
}

/// Stream counts tried to confirm a capacity `n` found by the search, in order:
/// n, n − max(1, n/8), n − n/4, n/2, n/4 (decreasing, positive, without repeats).
pub fn confirm_steps(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = Vec::new();
    for k in [n, n - (n / 8).max(1).min(n), n - n / 4, n / 2, n / 4] {
        if k > 0 && v.last().is_none_or(|&l| k < l) {
            v.push(k);
        }
    }
    v
}

/// Searches the largest stream count for which `probe` passes: doubling from
/// `start` (capped at `max`) until a failure, then bisection between the last pass
/// and the first failure. Returns the largest passing count (0 if even 1 fails) and
/// the probes made, in order.
pub fn search_capacity(
    start: usize,
    max: usize,
    mut probe: impl FnMut(usize) -> bool,
) -> (usize, Vec<(usize, bool)>) {
    let mut probes = Vec::new();
    let mut lo = 0; // largest known pass
    let mut hi = max + 1; // smallest known failure
    let mut n = start.clamp(1, max.max(1));
    loop {
        let ok = probe(n);
        probes.push((n, ok));
        if ok {
            lo = n;
            if n >= max {
                break;
            }
            n = (n * 2).min(max);
        } else {
            hi = n;
            break;
        }
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let ok = probe(mid);
        probes.push((mid, ok));
        if ok {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo, probes)
}

// ---------------------------------------------------------------------------------
// The wire, split: a writer half and a reader half usable from different threads.

struct Tx {
    writer: LinkWriter,
    next_id: u32,
    scratch: Vec<u8>,
    out: Vec<u8>,
}

impl Tx {
    fn new(writer: LinkWriter) -> Self {
        Self {
            writer,
            next_id: 1,
            scratch: vec![0; MAX_PAYLOAD_BYTES],
            out: vec![0; MAX_FRAME_BYTES],
        }
    }

    /// Sends a request; returns its id and the instant its last byte was written.
    fn send(&mut self, req: &Request<'_>) -> io::Result<(u32, Instant)> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let n = encode_frame(id, req, &mut self.scratch, &mut self.out)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.writer.write_all(&self.out[..n])?;
        self.writer.flush()?;
        Ok((id, Instant::now()))
    }

    fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }
}

/// An answer as the reader saw it.
#[derive(Debug, Clone)]
struct Got {
    id: u32,
    at: Instant,
    kind: AnswerKind,
}

struct Rx {
    reader: LinkReader,
    decoder: Box<FrameDecoder<MAX_FRAME_BYTES>>,
    buf: Vec<u8>,
}

impl Rx {
    fn new(reader: LinkReader) -> Self {
        Self {
            reader,
            decoder: Box::new(FrameDecoder::new()),
            buf: vec![0; 16 * 1024],
        }
    }

    /// One read (blocking up to the link's poll interval); the answers completed by it,
    /// stamped with the instant the read returned. Empty on a read timeout.
    fn poll(&mut self, out: &mut Vec<Got>) -> io::Result<()> {
        let n = match self.reader.read(&mut self.buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the daemon closed the connection",
                ))
            }
            Ok(n) => n,
            Err(e) if is_timeout(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        let at = Instant::now();
        for &b in &self.buf[..n] {
            let Some(r) = self.decoder.push(b) else {
                continue;
            };
            let got = match r {
                Err(e) => Got {
                    id: 0,
                    at,
                    kind: AnswerKind::Damaged(e),
                },
                Ok(payload) => match decode_payload::<Response<'_>>(payload) {
                    Ok(env) => Got {
                        id: env.request_id,
                        at,
                        kind: AnswerKind::from_response(&env.body),
                    },
                    Err(f) => Got {
                        id: f.request_id,
                        at,
                        kind: AnswerKind::Undecodable(f.error),
                    },
                },
            };
            out.push(got);
        }
        Ok(())
    }

    /// Waits for the answer to `id`, dropping others.
    fn wait(&mut self, id: u32, timeout: Duration, doing: &str) -> anyhow::Result<AnswerKind> {
        let end = Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            self.poll(&mut got)
                .with_context(|| format!("reading the answer to {doing}"))?;
            if let Some(g) = got.drain(..).find(|g| g.id == id) {
                return Ok(g.kind);
            }
            anyhow::ensure!(
                Instant::now() < end,
                "no answer to {doing} within {} ms",
                timeout.as_millis()
            );
        }
    }
}

fn call(tx: &mut Tx, rx: &mut Rx, req: &Request<'_>, doing: &str) -> anyhow::Result<AnswerKind> {
    let (id, _) = tx.send(req).with_context(|| format!("sending {doing}"))?;
    rx.wait(id, SETUP_TIMEOUT, doing)
}

/// A connected, handshaken connection with its streams open.
struct Conn {
    plan: ConnPlan,
    desc: String,
    tx: Tx,
    rx: Rx,
    deadline_us: u32,
}

fn open_conn(dev: &SimulatedDevice, plan: &ConnPlan) -> anyhow::Result<Conn> {
    let link: Box<dyn Link> = match plan.transport {
        Transport::Pty => Box::new(SerialLink::open(dev.pty_path(), 921_600)?),
        Transport::Socket => Box::new(SocketLink::connect(dev.socket_path())?),
    };
    let desc = link.description();
    let (r, w) = link.split()?;
    let (mut tx, mut rx) = (Tx::new(w), Rx::new(r));
    // Resynchronise (stale bytes on the PTY line from an earlier run), then a handshake,
    // which on a serial line also closes streams an earlier session left open.
    tx.send_raw(&[0]).context("resync delimiter")?;
    let nonce = 0x4c4f_4144; // "LOAD"
    match call(&mut tx, &mut rx, &Request::Ping { nonce }, "Ping")? {
        AnswerKind::Pong { nonce: n } if n == nonce => {}
        other => anyhow::bail!("{desc}: Ping answered {}", other.describe()),
    }
    match call(
        &mut tx,
        &mut rx,
        &Request::Hello(Hello {
            client: CLIENT_NAME,
        }),
        "Hello",
    )? {
        AnswerKind::Hello(_) => {}
        other => anyhow::bail!("{desc}: Hello answered {}", other.describe()),
    }
    let mut deadline_us = 0;
    for &(sid, _) in &plan.streams {
        let req = Request::OpenStream(OpenStream {
            stream_id: sid,
            sample_rate_hz: SAMPLE_RATE_HZ,
            frame_samples: FRAME_SAMPLES as u16,
            deadline_us: 0,
        });
        match call(&mut tx, &mut rx, &req, "OpenStream")? {
            AnswerKind::StreamOpened {
                stream_id,
                deadline_us: d,
            } if stream_id == sid => deadline_us = deadline_us.max(d),
            other => anyhow::bail!("{desc}: OpenStream {sid} answered {}", other.describe()),
        }
    }
    Ok(Conn {
        plan: plan.clone(),
        desc,
        tx,
        rx,
        deadline_us,
    })
}

/// Closes the connection's streams (best effort: the daemon also drops them when a
/// socket closes, and a new handshake on the PTY line closes them).
fn close_conn(mut c: Conn) {
    for &(sid, _) in &c.plan.streams {
        if let Ok((id, _)) = c.tx.send(&Request::CloseStream { stream_id: sid }) {
            let _ = c.rx.wait(id, Duration::from_secs(2), "CloseStream");
        }
    }
}

// ---------------------------------------------------------------------------------
// Real-time priority for the rig's own I/O threads.

static RT_WARNED: AtomicBool = AtomicBool::new(false);

/// Puts the calling thread under SCHED_FIFO at `priority`; `false` (and one warning
/// per process) when not permitted.
fn make_thread_rt(priority: u8) -> bool {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: pthread_self() is the calling thread's valid handle, and `param` is a
    // fully initialised sched_param that outlives the call.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if rc != 0 && !RT_WARNED.swap(true, Ordering::Relaxed) {
        log::warn!(
            "bench-load: cannot run the rig's I/O threads SCHED_FIFO {priority}: {} (continuing with normal scheduling)",
            io::Error::from_raw_os_error(rc)
        );
    }
    rc == 0
}

/// Spawns one of the rig's I/O threads, named `name`, running `f` under SCHED_FIFO at
/// `priority` when given (see `make_thread_rt`).
fn spawn_rig_thread<T: Send + 'static>(
    name: &str,
    priority: Option<u8>,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Some(p) = priority {
                make_thread_rt(p);
            }
            f()
        })
}

// ---------------------------------------------------------------------------------
// One run.

/// What one run does.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Scenario name for the report.
    pub scenario: &'static str,
    /// Streams.
    pub streams: usize,
    /// Put up to `max_streams` of them on the PTY line.
    pub pty: bool,
    /// Run length.
    pub duration: Duration,
    /// Stop sending at the first miss or rejection (capacity probes).
    pub stop_on_failure: bool,
    /// What ran beside the daemon, for the report.
    pub beside: Option<String>,
}

/// Counts and latencies of a group of streams (one transport, or all).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TallySummary {
    /// `all`, `socket` or `pty`.
    pub group: String,
    /// Streams.
    pub streams: usize,
    /// Connections.
    pub conns: usize,
    /// Frames written.
    pub frames: u64,
    /// Frames with exactly one answer.
    pub answered_once: u64,
    /// Frames with no answer within the drain timeout (invariant).
    pub unanswered: u64,
    /// Frames with more than one answer (invariant).
    pub duplicates: u64,
    /// Answers carrying a request id the rig never sent (incl. id 0 errors).
    pub stray: u64,
    /// Answered with a result.
    pub results: u64,
    /// Answered `DeadlineMissed`.
    pub misses: u64,
    /// Answered `Rejected { QueueFull }`.
    pub rejected_queue_full: u64,
    /// Answered `Rejected { WouldMissDeadline }`.
    pub rejected_would_miss: u64,
    /// Answered `Rejected` for another reason.
    pub rejected_other: u64,
    /// Answered `Error` (or damaged / undecodable).
    pub errors: u64,
    /// Answers read later than deadline + allowance after the frame was written (invariant).
    pub late: u64,
    /// Answers whose own daemon timing (`Frame` `total_us`, `DeadlineMissed`
    /// `elapsed_us`, both stamped at the write) exceeds the deadline: written late by
    /// the daemon's own clock (a result that late arrives as `DeadlineMissed`).
    pub late_by_daemon_clock: u64,
    /// Client latency (last byte written → answer read) of every answer.
    pub client: LatencySummary,
    /// Client latency of the results only.
    pub client_results: LatencySummary,
    /// Server `timing.total_us` of the results.
    pub server_total: LatencySummary,
    /// Server `timing.compute_us` of the results.
    pub server_compute: LatencySummary,
    /// First few problems (late, unanswered, duplicate, error answers).
    pub problems: Vec<String>,
}

impl TallySummary {
    /// All rejections.
    pub fn rejections(&self) -> u64 {
        self.rejected_queue_full + self.rejected_would_miss + self.rejected_other
    }
}

struct Tally {
    s: TallySummary,
    client: LatencySeries,
    client_results: LatencySeries,
    server_total: LatencySeries,
    server_compute: LatencySeries,
}

impl Tally {
    fn new(group: &str) -> Self {
        Self {
            s: TallySummary {
                group: group.to_owned(),
                ..Default::default()
            },
            client: LatencySeries::new(format!("{group} client")),
            client_results: LatencySeries::new(format!("{group} client (results)")),
            server_total: LatencySeries::new(format!("{group} server total")),
            server_compute: LatencySeries::new(format!("{group} server compute")),
        }
    }

    fn problem(&mut self, p: String) {
        if self.s.problems.len() < 8 {
            self.s.problems.push(p);
        }
    }

    fn finish(mut self) -> TallySummary {
        self.s.client = self.client.summary();
        self.s.client_results = self.client_results.summary();
        self.s.server_total = self.server_total.summary();
        self.s.server_compute = self.server_compute.summary();
        self.s
    }
}

/// A frame as written.
#[derive(Debug, Clone, Copy)]
struct Sent {
    id: u32,
    stream: u16,
    seq: u32,
    written: Instant,
}

/// Matches one connection's frames with its answers into `tallies` (every tally in the
/// slice gets the same records: e.g. the run's total and its transport's group).
fn tally_conn(
    sent: &[Sent],
    got: &[Got],
    deadline_us: u64,
    late_after_us: u64,
    desc: &str,
    tallies: &mut [&mut Tally],
) {
    let mut by_id: HashMap<u32, Vec<&Got>> = HashMap::new();
    for g in got {
        by_id.entry(g.id).or_default().push(g);
    }
    for s in sent {
        let answers = by_id.remove(&s.id).unwrap_or_default();
        for t in tallies.iter_mut() {
            t.s.frames += 1;
            match answers.len() {
                0 => {
                    t.s.unanswered += 1;
                    t.problem(format!(
                        "{desc} stream {} seq {}: no answer",
                        s.stream, s.seq
                    ));
                }
                1 => t.s.answered_once += 1,
                k => {
                    t.s.duplicates += 1;
                    t.problem(format!(
                        "{desc} stream {} seq {}: {k} answers",
                        s.stream, s.seq
                    ));
                }
            }
        }
        let Some(a) = answers.first() else { continue };
        let lat_us = a.at.saturating_duration_since(s.written).as_micros() as u64;
        let daemon_us = match &a.kind {
            AnswerKind::Frame(f) => u64::from(f.timing.total_us),
            AnswerKind::DeadlineMissed { elapsed_us, .. } => u64::from(*elapsed_us),
            _ => 0,
        };
        for t in tallies.iter_mut() {
            t.client.record(lat_us);
            if daemon_us > deadline_us {
                t.s.late_by_daemon_clock += 1;
            }
            match &a.kind {
                AnswerKind::Frame(f) => {
                    t.s.results += 1;
                    t.client_results.record(lat_us);
                    t.server_total.record(u64::from(f.timing.total_us));
                    t.server_compute.record(u64::from(f.timing.compute_us));
                }
                AnswerKind::DeadlineMissed { .. } => t.s.misses += 1,
                AnswerKind::Rejected { reason, .. } => match reason {
                    RejectReason::QueueFull => t.s.rejected_queue_full += 1,
                    RejectReason::WouldMissDeadline => t.s.rejected_would_miss += 1,
                    _ => t.s.rejected_other += 1,
                },
                other => {
                    t.s.errors += 1;
                    t.problem(format!(
                        "{desc} stream {} seq {}: {}",
                        s.stream,
                        s.seq,
                        other.describe()
                    ));
                }
            }
            if lat_us > late_after_us {
                t.s.late += 1;
                t.problem(format!(
                    "{desc} stream {} seq {}: LATE {} µs ({})",
                    s.stream,
                    s.seq,
                    lat_us,
                    a.kind.describe()
                ));
            }
        }
    }
    // Whatever is left carries an id the rig never sent as audio.
    for (id, answers) in by_id {
        for t in tallies.iter_mut() {
            t.s.stray += answers.len() as u64;
            t.problem(format!(
                "{desc}: stray answer id {id}: {}",
                answers[0].kind.describe()
            ));
        }
    }
}

/// Resident memory of the daemon over a run (kB), sampled every second.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemTrace {
    /// VmRSS at the start of the run.
    pub first_kb: Option<u64>,
    /// Largest VmRSS sampled.
    pub max_kb: Option<u64>,
    /// VmRSS at the end of the run.
    pub last_kb: Option<u64>,
    /// VmHWM (peak since boot) at the end of the run.
    pub hwm_kb: Option<u64>,
    /// `(seconds since start, VmRSS kB)`.
    pub samples: Vec<(f64, u64)>,
}

impl MemTrace {
    /// last − first in kB (negative when it shrank).
    pub fn growth_kb(&self) -> Option<i64> {
        Some(self.last_kb? as i64 - self.first_kb? as i64)
    }
}

/// Daemon counters (from `Status`) over a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CounterDelta {
    /// Results.
    pub frames: u64,
    /// Deadline misses.
    pub deadline_misses: u64,
    /// Rejections.
    pub rejections: u64,
    /// Errors.
    pub errors: u64,
    /// Runs cancelled at their deadline.
    pub cancellations: u64,
    /// Admission control's worst-case compute per frame after the run, in µs.
    pub wcet_us: u32,
    /// Admission control's typical (mean) compute per frame after the run, in µs.
    pub typical_us: u32,
    /// Answers the daemon wrote after their deadline (its own count).
    pub late_writes: u64,
    /// Admission control's standard deviation of compute per frame after the run, in µs.
    pub spread_us: u32,
    /// The daemon's `Write` stage (answer queued → written) max since boot, in µs.
    pub write_max_us: u32,
    /// The daemon's `Transport` stage (frame read → submitted) max since boot, in µs.
    pub transport_max_us: u32,
}

/// One run's results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunResult {
    /// Scenario.
    pub scenario: String,
    /// `socket` or `pty` (the path asked for; a PTY run may spill onto sockets).
    pub path: String,
    /// Streams.
    pub streams: usize,
    /// Connections used (PTY line included).
    pub conns: usize,
    /// Planned length in s.
    pub duration_s: f64,
    /// Wall time from the first frame to the last answer, in s.
    pub wall_s: f64,
    /// Stopped early at the first miss or rejection (capacity probes).
    pub stopped_early: bool,
    /// Every stream together.
    pub total: TallySummary,
    /// Per transport, when the run mixes them.
    pub groups: Vec<TallySummary>,
    /// Daemon memory.
    pub memory: MemTrace,
    /// The daemon's own counters over the run.
    pub daemon: Option<CounterDelta>,
    /// Largest lateness of the rig's sends against their schedule, in µs: how late the
    /// rig's own (SCHED_FIFO) pacer woke up or how long a write blocked. Large values
    /// mean the whole machine stalled, or the transport stopped taking bytes.
    pub send_lag_max_us: u64,
    /// CPU time stolen by the hypervisor during the run (all CPUs, /proc/stat), in ms.
    pub steal_ms: Option<u64>,
    /// CPU time (user + system) the daemon used during the run, in ms.
    pub daemon_cpu_ms: Option<u64>,
    /// CPU time (user + system) the rig itself used during the run, in ms: on a
    /// simulated device it competes with the daemon for the same cores.
    pub rig_cpu_ms: Option<u64>,
    /// What ran beside the daemon.
    pub beside: Option<String>,
    /// Deadline of the streams in µs.
    pub deadline_us: u32,
    /// Why the run could not be completed.
    pub error: Option<String>,
}

impl RunResult {
    /// No invariant broke: completed, every frame answered exactly once, none late.
    pub fn ok(&self) -> bool {
        self.error.is_none()
            && self.total.unanswered == 0
            && self.total.duplicates == 0
            && self.total.late == 0
    }

    /// A capacity pass: completed, every frame answered exactly once, zero misses,
    /// zero rejections, zero errors, and no answer written after its deadline by the
    /// daemon's own clock (stamped at the write).
    ///
    /// An answer the daemon wrote on time but the rig read late is reported (column
    /// *late*, and [`RunResult::ok`] fails) but does not fail capacity: the deadline runs
    /// to the first byte written (DESIGN.md §4), and the delay after it is the rig's or
    /// the machine's (see *rig lag* and *steal*).
    pub fn clean(&self) -> bool {
        self.error.is_none()
            && self.total.unanswered == 0
            && self.total.duplicates == 0
            && self.total.late_by_daemon_clock == 0
            && !self.stopped_early
            && self.total.misses == 0
            && self.total.rejections() == 0
            && self.total.errors == 0
    }
}

/// CPU time (user + system) of a process so far, in ms (`/proc/PID/stat`; `None` for
/// the rig itself).
pub fn process_cpu_ms(pid: Option<u32>) -> Option<u64> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    parse_process_cpu_ms(&std::fs::read_to_string(path).ok()?)
}

/// utime + stime (fields 14 and 15) of `/proc/PID/stat` text, in ms (USER_HZ = 100).
/// Fields are counted after the `)` closing the command name, which may hold spaces.
pub fn parse_process_cpu_ms(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime + stime) * 10)
}

/// Steal time of all CPUs so far, in ms (`/proc/stat`, USER_HZ = 100).
pub fn steal_ms() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_steal_ms(&text)
}

/// The steal field (8th value) of the `cpu` line of `/proc/stat` text, in ms.
pub fn parse_steal_ms(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let jiffies: u64 = line.split_whitespace().nth(8)?.parse().ok()?;
    Some(jiffies * 10)
}

fn status(dev: &SimulatedDevice) -> anyhow::Result<StatusInfo> {
    let link = SocketLink::connect(dev.socket_path())?;
    let mut s = Session::new(Box::new(link), SETUP_TIMEOUT)?;
    Ok(s.status()?)
}

/// A running daemon plus what the rig learnt from its handshake.
struct Daemon {
    dev: SimulatedDevice,
    per_conn: usize,
    rt: bool,
}

impl Daemon {
    fn start(opts: &LoadOptions, tag: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let mut sim = opts.sim.clone();
        sim.extra_args.extend(extra.iter().map(|s| (*s).to_owned()));
        sim.keep_log_to = opts
            .log_dir
            .as_ref()
            .map(|d| d.join(format!("outpostd-{tag}.log")));
        let rt = !sim.extra_args.iter().any(|a| a == "--no-rt");
        let dev = SimulatedDevice::start(&sim)?;
        // A daemon in safe mode answers every frame `Rejected { NoModel }`: numbers from
        // it would be meaningless, so the scenario fails with the daemon's reason.
        let st = status(&dev)?;
        if st.state != "Ready" {
            anyhow::bail!(
                "outpostd is not serving ({}): {}",
                st.state,
                if st.detail.is_empty() {
                    "no reason given"
                } else {
                    &st.detail
                }
            );
        }
        let link = SocketLink::connect(dev.socket_path())?;
        let mut s = Session::new(Box::new(link), SETUP_TIMEOUT)?;
        let hello = s.hello(CLIENT_NAME)?;
        let per_conn = usize::from(hello.max_streams).clamp(1, STREAMS_PER_CONN);
        eprintln!(
            "bench-load: [{tag}] outpostd ready (pid {}, boot {} ms, {} streams per connection{})",
            dev.pid(),
            dev.ready().boot_ms.map_or("?".into(), |b| b.to_string()),
            per_conn,
            if rt { "" } else { ", --no-rt" }
        );
        Ok(Self { dev, per_conn, rt })
    }
}

/// Runs one real-time load against `d`.
fn run_once(
    d: &Daemon,
    spec: &RunSpec,
    audio: &Arc<Vec<Vec<u8>>>,
    opts: &LoadOptions,
) -> RunResult {
    let plans = plan_connections(spec.streams, spec.pty, d.per_conn);
    let mut r = RunResult {
        scenario: spec.scenario.to_owned(),
        path: if spec.pty { "pty" } else { "socket" }.to_owned(),
        streams: spec.streams,
        conns: plans.len(),
        duration_s: spec.duration.as_secs_f64(),
        beside: spec.beside.clone(),
        ..Default::default()
    };
    let mut conns = Vec::new();
    for (i, p) in plans.iter().enumerate() {
        match open_conn(&d.dev, p) {
            Ok(mut c) => {
                c.desc = format!("conn {i} ({})", p.transport.name());
                conns.push(c)
            }
            Err(e) => {
                r.error = Some(format!(
                    "setting up a {} connection: {e:#}\n--- outpostd log tail ---\n{}",
                    p.transport.name(),
                    d.dev.log_tail(15)
                ));
                for c in conns {
                    close_conn(c);
                }
                return r;
            }
        }
    }
    r.deadline_us = conns.iter().map(|c| c.deadline_us).max().unwrap_or(0);
    let before = status(&d.dev).ok();
    let steal_before = steal_ms();
    let daemon_cpu_before = process_cpu_ms(Some(d.dev.pid()));
    let rig_cpu_before = process_cpu_ms(None);

    let n = spec.streams;
    let frames_per_stream = (spec.duration.as_micros() / FRAME_PERIOD.as_micros()).max(1) as u32;
    let abort = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now() + Duration::from_millis(100);
    let rig_rt = opts.rig_rt_priority;

    // Memory sampler: every second from t0 until told to stop.
    let mem_stop = Arc::new(AtomicBool::new(false));
    let pid = d.dev.pid();
    let mem_thread = {
        let stop = Arc::clone(&mem_stop);
        std::thread::Builder::new()
            .name("load-mem".into())
            .spawn(move || {
                let mut samples = Vec::new();
                let mut next = t0;
                loop {
                    let now = Instant::now();
                    if now < next {
                        std::thread::sleep((next - now).min(Duration::from_millis(50)));
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        continue;
                    }
                    if let (Some(rss), _) = read_memory_kb(pid) {
                        samples.push((now.saturating_duration_since(t0).as_secs_f64(), rss));
                    }
                    next += Duration::from_secs(1);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                samples
            })
            .expect("spawn memory sampler")
    };

    type WriterOut = (Tx, Vec<Sent>, u64, Option<String>);
    type ReaderOut = (Rx, Vec<Got>, Option<String>);
    let mut handles: Vec<(
        ConnPlan,
        String,
        JoinHandle<WriterOut>,
        JoinHandle<ReaderOut>,
    )> = Vec::new();
    for c in conns {
        let Conn {
            plan, desc, tx, rx, ..
        } = c;
        let sent_count = Arc::new(AtomicU64::new(0));
        let writer_done = Arc::new(AtomicBool::new(false));
        let first_audio_id = tx.next_id;
        // Writer: the pacer.
        let wh = {
            let plan = plan.clone();
            let audio = Arc::clone(audio);
            let abort = Arc::clone(&abort);
            let sent_count = Arc::clone(&sent_count);
            let done = Arc::clone(&writer_done);
            let mut tx = tx;
            spawn_rig_thread("load-write", rig_rt, move || -> WriterOut {
                let mut sent = Vec::with_capacity(plan.streams.len() * frames_per_stream as usize);
                let mut lag_max = 0u64;
                let mut err = None;
                // (next send time, seq, stream id, global index)
                let mut next: Vec<(Instant, u32, u16, usize)> = plan
                    .streams
                    .iter()
                    .map(|&(sid, g)| (t0 + phase(g, n), 0, sid, g))
                    .collect();
                while !next.is_empty() && !abort.load(Ordering::Relaxed) {
                    let i = (0..next.len())
                        .min_by_key(|&i| next[i].0)
                        .expect("non-empty");
                    let (at, seq, sid, g) = next[i];
                    let now = Instant::now();
                    if at > now {
                        std::thread::sleep(at - now);
                    }
                    let lag = Instant::now().saturating_duration_since(at).as_micros() as u64;
                    lag_max = lag_max.max(lag);
                    // Each stream starts at its own place in the audio.
                    let pcm = &audio[(g * 97 + seq as usize) % audio.len()];
                    let req = Request::Audio(Audio {
                        stream_id: sid,
                        seq,
                        deadline_us: 0,
                        pcm,
                    });
                    match tx.send(&req) {
                        Ok((id, written)) => {
                            sent.push(Sent {
                                id,
                                stream: sid,
                                seq,
                                written,
                            });
                            sent_count.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            err = Some(format!("writing stream {sid} seq {seq}: {e}"));
                            break;
                        }
                    }
                    if seq + 1 >= frames_per_stream {
                        next.swap_remove(i);
                    } else {
                        next[i] = (at + FRAME_PERIOD, seq + 1, sid, g);
                    }
                }
                done.store(true, Ordering::SeqCst);
                (tx, sent, lag_max, err)
            })
            .expect("spawn writer")
        };
        // Reader: everything that comes back, until all frames are answered or the
        // drain timeout after the writer finished.
        let rh = {
            let abort = Arc::clone(&abort);
            let stop_on_failure = spec.stop_on_failure;
            let mut rx = rx;
            spawn_rig_thread("load-read", rig_rt, move || -> ReaderOut {
                let mut got = Vec::new();
                let mut audio_answers = 0u64;
                let mut done_at: Option<Instant> = None;
                let mut err = None;
                let mut chunk = Vec::new();
                loop {
                    if let Err(e) = rx.poll(&mut chunk) {
                        err = Some(format!("reading answers: {e}"));
                        break;
                    }
                    for g in chunk.drain(..) {
                        if g.id >= first_audio_id {
                            audio_answers += 1;
                        }
                        if stop_on_failure
                            && matches!(
                                g.kind,
                                AnswerKind::DeadlineMissed { .. } | AnswerKind::Rejected { .. }
                            )
                        {
                            abort.store(true, Ordering::Relaxed);
                        }
                        got.push(g);
                    }
                    if writer_done.load(Ordering::SeqCst) {
                        let t = *done_at.get_or_insert_with(Instant::now);
                        if audio_answers >= sent_count.load(Ordering::SeqCst)
                            || t.elapsed() > DRAIN_TIMEOUT
                        {
                            break;
                        }
                    }
                }
                (rx, got, err)
            })
            .expect("spawn reader")
        };
        handles.push((plan, desc, wh, rh));
    }

    let late_after_us = u64::from(r.deadline_us) + opts.late_allowance_us;
    let mut total = Tally::new("all");
    let mut groups: Vec<(Transport, Tally)> = Vec::new();
    let mut errors = Vec::new();
    let mut first_written: Option<Instant> = None;
    let mut last_answer: Option<Instant> = None;
    let mut back = Vec::new();
    for (plan, desc, wh, rh) in handles {
        let (tx, sent, lag, werr) = wh.join().expect("writer thread");
        let (rx, got, rerr) = rh.join().expect("reader thread");
        r.send_lag_max_us = r.send_lag_max_us.max(lag);
        errors.extend(werr.into_iter().chain(rerr).map(|e| format!("{desc}: {e}")));
        if let Some(f) = sent.first() {
            first_written = Some(first_written.map_or(f.written, |x| x.min(f.written)));
        }
        if let Some(g) = got.iter().map(|g| g.at).max() {
            last_answer = Some(last_answer.map_or(g, |x| x.max(g)));
        }
        let gi = match groups.iter().position(|(t, _)| *t == plan.transport) {
            Some(i) => i,
            None => {
                groups.push((plan.transport, Tally::new(plan.transport.name())));
                groups.len() - 1
            }
        };
        let group = &mut groups[gi].1;
        group.s.streams += plan.streams.len();
        group.s.conns += 1;
        tally_conn(
            &sent,
            &got,
            u64::from(r.deadline_us),
            late_after_us,
            &desc,
            &mut [&mut total, group],
        );
        back.push(Conn {
            plan,
            desc,
            tx,
            rx,
            deadline_us: r.deadline_us,
        });
    }
    mem_stop.store(true, Ordering::Relaxed);
    r.steal_ms = steal_ms()
        .zip(steal_before)
        .map(|(a, b)| a.saturating_sub(b));
    r.daemon_cpu_ms = process_cpu_ms(Some(pid))
        .zip(daemon_cpu_before)
        .map(|(a, b)| a.saturating_sub(b));
    r.rig_cpu_ms = process_cpu_ms(None)
        .zip(rig_cpu_before)
        .map(|(a, b)| a.saturating_sub(b));
    let samples = mem_thread.join().unwrap_or_default();
    let (_, hwm) = read_memory_kb(pid);
    r.memory = MemTrace {
        first_kb: samples.first().map(|s| s.1),
        max_kb: samples.iter().map(|s| s.1).max(),
        last_kb: samples.last().map(|s| s.1),
        hwm_kb: hwm,
        samples,
    };
    r.stopped_early = abort.load(Ordering::Relaxed);
    if let (Some(a), Some(b)) = (first_written, last_answer) {
        r.wall_s = b.saturating_duration_since(a).as_secs_f64();
    }
    total.s.streams = spec.streams;
    total.s.conns = r.conns;
    r.total = total.finish();
    r.groups = groups.into_iter().map(|(_, t)| t.finish()).collect();
    for c in back {
        close_conn(c);
    }
    if let (Some(b), Ok(a)) = (before, status(&d.dev)) {
        r.daemon = Some(CounterDelta {
            frames: a.frames.saturating_sub(b.frames),
            deadline_misses: a.deadline_misses.saturating_sub(b.deadline_misses),
            rejections: a.rejections.saturating_sub(b.rejections),
            errors: a.errors.saturating_sub(b.errors),
            cancellations: a.cancellations.saturating_sub(b.cancellations),
            wcet_us: a.wcet_us,
            typical_us: a.typical_us,
            late_writes: a.late_writes.saturating_sub(b.late_writes),
            spread_us: a.spread_us,
            write_max_us: stage_max(&a, "Write"),
            transport_max_us: stage_max(&a, "Transport"),
        });
    }
    if !errors.is_empty() {
        r.error = Some(errors.join("; "));
    }
    r
}

fn stage_max(st: &StatusInfo, stage: &str) -> u32 {
    st.latency
        .iter()
        .find(|l| l.stage == stage)
        .map_or(0, |l| l.max_us)
}

fn progress(r: &RunResult) {
    let t = &r.total;
    eprintln!(
        "bench-load: {:>8} {:>6} {:>3} streams{}: {} frames, client p99 {} ms max {} ms, {} misses, {} rejections, {} late, {} unanswered, rig lag max {} ms, steal {} ms, cpu daemon {} ms rig {} ms{}{}",
        r.scenario,
        r.path,
        r.streams,
        r.beside.as_ref().map(|b| format!(" [{b}]")).unwrap_or_default(),
        t.frames,
        ms(t.client.p99_us),
        ms(t.client.max_us),
        t.misses,
        t.rejections(),
        t.late,
        t.unanswered,
        ms(r.send_lag_max_us),
        r.steal_ms.map_or("?".into(), |s| s.to_string()),
        r.daemon_cpu_ms.map_or("?".into(), |s| s.to_string()),
        r.rig_cpu_ms.map_or("?".into(), |s| s.to_string()),
        if r.stopped_early { " (stopped early)" } else { "" },
        r.error.as_ref().map(|e| format!(" — ERROR: {e}")).unwrap_or_default()
    );
}

// ---------------------------------------------------------------------------------
// The CPU hog.

/// Busy loops beside the daemon; stopped (children killed, threads joined) on drop.
#[derive(Debug)]
pub struct Hog {
    /// What runs, for the report.
    pub desc: String,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    child: Option<Child>,
}

/// `stress-ng` on `PATH`, if any.
pub fn find_stress_ng() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("stress-ng"))
        .find(|p| p.is_file())
}

impl Hog {
    /// Starts `workers` busy loops (normal scheduling policy, nice 0). `max` bounds a
    /// `stress-ng` child's own lifetime in case the rig dies without stopping it.
    ///
    /// # Errors
    /// `stress-ng` asked for but absent or not startable.
    pub fn start(kind: HogKind, workers: usize, max: Duration) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stress = match kind {
            HogKind::Spin => None,
            HogKind::Auto => find_stress_ng(),
            HogKind::StressNg => {
                Some(find_stress_ng().context("stress-ng is not on PATH (use --hog spin)")?)
            }
        };
        if let Some(bin) = stress {
            let child = Command::new(&bin)
                .arg("--cpu")
                .arg(workers.to_string())
                .arg("--timeout")
                .arg(format!("{}s", max.as_secs().max(1)))
                .arg("--quiet")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            return Ok(Self {
                desc: format!("stress-ng --cpu {workers}"),
                stop,
                threads: Vec::new(),
                child: Some(child),
            });
        }
        let threads = (0..workers)
            .map(|i| {
                let stop = Arc::clone(&stop);
                std::thread::Builder::new()
                    .name(format!("hog-{i}"))
                    .spawn(move || {
                        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ i as u64;
                        while !stop.load(Ordering::Relaxed) {
                            for _ in 0..100_000 {
                                x = x
                                    .wrapping_mul(6_364_136_223_846_793_005)
                                    .wrapping_add(1_442_695_040_888_963_407);
                            }
                            std::hint::black_box(x);
                        }
                    })
                    .context("spawning a hog thread")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            desc: format!("{workers} busy-loop threads"),
            stop,
            threads,
            child: None,
        })
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(mut c) = self.child.take() {
            if let Ok(pid) = libc::pid_t::try_from(c.id()) {
                if let Ok(None) = c.try_wait() {
                    // SAFETY: kill(2) on our own unreaped child: the pid cannot be reused.
                    unsafe {
                        libc::kill(pid, libc::SIGTERM);
                    }
                }
            }
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------
// Scenarios.

/// The capacity search and its result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CapacityResult {
    /// Largest stream count with zero misses and zero rejections over the confirming run
    /// (`None` if no count was confirmed).
    pub capacity: Option<usize>,
    /// The search found the daemon's stream limit, not a compute limit.
    pub at_stream_limit: bool,
    /// Largest count that passed a search probe.
    pub search_found: usize,
    /// Admission control's worst-case compute per frame after the search, in µs.
    pub wcet_us: Option<u32>,
    /// Admission control's typical (mean) compute per frame after the search, in µs.
    pub typical_us: Option<u32>,
    /// `(streams, passed, stopped early)` of each search probe.
    pub probes: Vec<(usize, bool, bool)>,
    /// Probe length in s.
    pub probe_s: f64,
    /// Confirming runs (the last one that passed gives the capacity).
    pub confirms: Vec<RunResult>,
    /// Logical CPUs.
    pub cores: usize,
    /// Per-stage p50 (µs) from `Status` after the search: vad, mel, embedding, head.
    pub stage_p50_us: Vec<(String, u32)>,
    /// Per-stage p99.9 (µs) from the same `Status`.
    pub stage_p999_us: Vec<(String, u32)>,
    /// Sum of the stage p50s in µs.
    pub compute_p50_us: u64,
    /// cores × 80 ms ÷ `compute_p50_us`.
    pub compute_bound: Option<f64>,
    /// Mean server `compute_us` of the results of the confirming run.
    pub compute_mean_us: Option<f64>,
    /// cores × 80 ms ÷ `compute_mean_us`.
    pub compute_bound_mean: Option<f64>,
}

/// Everything `bench-load` measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// Logical CPUs.
    pub cores: usize,
    /// Load average at the start (1, 5, 15 min), from /proc/loadavg.
    pub loadavg_start: String,
    /// Audio source.
    pub audio: String,
    /// Late allowance in µs.
    pub late_allowance_us: u64,
    /// Rig I/O threads' SCHED_FIFO priority, if applied.
    pub rig_rt_priority: Option<u8>,
    /// Extra daemon arguments.
    pub daemon_args: Vec<String>,
    /// `load` runs.
    pub load: Vec<RunResult>,
    /// `capacity`.
    pub capacity: Option<CapacityResult>,
    /// `overload` runs: 2× capacity, then 2× the compute bound when that is more.
    pub overload: Vec<RunResult>,
    /// What each overload run's stream count is based on.
    pub overload_basis: Vec<String>,
    /// `hog` runs.
    pub hog: Vec<RunResult>,
    /// Total wall time in s.
    pub wall_s: f64,
}

impl LoadReport {
    /// Every run kept the invariants.
    pub fn ok(&self) -> bool {
        self.all_runs().all(RunResult::ok)
    }

    fn all_runs(&self) -> impl Iterator<Item = &RunResult> {
        // Capacity probes that stopped early or confirms that failed on misses are not
        // invariant failures; `ok()` still requires no unanswered or late frame there.
        self.load
            .iter()
            .chain(self.capacity.iter().flat_map(|c| c.confirms.iter()))
            .chain(self.overload.iter())
            .chain(self.hog.iter())
    }
}

/// Runs the scenarios.
///
/// # Errors
/// When a daemon cannot be started (with its log tail) or a hog cannot be started.
pub fn run_bench_load(opts: &LoadOptions) -> anyhow::Result<LoadReport> {
    let started = Instant::now();
    let (audio, audio_desc) = bench_audio(&opts.clips);
    let audio = Arc::new(audio);
    let rig_rt_priority = opts.rig_rt_priority.filter(|_| {
        // Probe once on a throwaway thread (a thread's policy is not inherited back).
        let p = opts.rig_rt_priority.unwrap_or(1);
        std::thread::spawn(move || make_thread_rt(p))
            .join()
            .unwrap_or(false)
    });
    let opts = &LoadOptions {
        rig_rt_priority,
        ..opts.clone()
    };
    let mut rep = LoadReport {
        cores: cores(),
        loadavg_start: std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
        audio: audio_desc,
        late_allowance_us: opts.late_allowance_us,
        rig_rt_priority,
        daemon_args: opts.sim.extra_args.clone(),
        ..Default::default()
    };
    eprintln!(
        "bench-load: {} cores, load average {}, audio: {}, rig I/O threads {}",
        rep.cores,
        rep.loadavg_start,
        rep.audio,
        rig_rt_priority.map_or("normal scheduling".into(), |p| format!("SCHED_FIFO {p}"))
    );
    let spec = |scenario, streams, pty, duration| RunSpec {
        scenario,
        streams,
        pty,
        duration,
        stop_on_failure: false,
        beside: None,
    };
    let gap = || std::thread::sleep(Duration::from_millis(300));

    if opts.scenarios.contains(&LoadScenario::Load) {
        let d = Daemon::start(opts, "load", &[])?;
        for &n in &opts.stream_counts {
            for pty in [false, true] {
                let r = run_once(&d, &spec("load", n, pty, opts.duration), &audio, opts);
                progress(&r);
                rep.load.push(r);
                gap();
            }
        }
    }

    let mut capacity_found: Option<(usize, &str)> = None;
    if opts.scenarios.contains(&LoadScenario::Capacity) {
        let c = run_capacity(opts, &audio, true)?;
        capacity_found = match c.capacity {
            Some(n) => Some((n, "measured above")),
            None if c.search_found > 0 => {
                Some((c.search_found, "found by the search above, not confirmed"))
            }
            None => None,
        };
        rep.capacity = Some(c);
    }

    if opts.scenarios.contains(&LoadScenario::Overload) {
        let (cap, basis) = match (capacity_found, opts.capacity_hint) {
            (Some((c, how)), _) => (c, format!("capacity {c} {how}")),
            (None, Some(c)) => (c, format!("capacity {c} given with --capacity")),
            (None, None) => {
                let c = run_capacity(opts, &audio, false)?;
                let cap = c.capacity.unwrap_or(1);
                (cap, format!("capacity {cap} from a probe-only search"))
            }
        };
        let capped = |want: usize, basis: String| {
            let n = want.clamp(2, DAEMON_MAX_STREAMS);
            if n < want {
                (
                    n,
                    format!(
                        "{basis}; {want} capped at the daemon's {DAEMON_MAX_STREAMS}-stream limit"
                    ),
                )
            } else {
                (n, basis)
            }
        };
        let mut plan = vec![capped(2 * cap, format!("2 × {basis}"))];
        // Admission may hold the capacity far below what the CPUs could do; 2× the
        // compute bound is an overload of the CPUs themselves.
        if let Some(b) = rep.capacity.as_ref().and_then(|c| c.compute_bound) {
            let (n, why) = capped(
                (2.0 * b).ceil() as usize,
                format!("2 × the compute bound {b:.1}"),
            );
            if n > plan[0].0 {
                plan.push((n, why));
            }
        }
        let d = Daemon::start(opts, "overload", &[])?;
        for (n, basis) in plan {
            // A short unmeasured run first, so per-stream and per-connection allocations
            // do not count as growth.
            let warm = run_once(
                &d,
                &spec("overload", n, false, Duration::from_secs(2)),
                &audio,
                opts,
            );
            if let Some(e) = &warm.error {
                log::warn!("overload warm-up: {e}");
            }
            gap();
            let r = run_once(&d, &spec("overload", n, false, opts.duration), &audio, opts);
            progress(&r);
            rep.overload.push(r);
            rep.overload_basis.push(basis);
            gap();
        }
    }

    if opts.scenarios.contains(&LoadScenario::Hog) {
        let mut configs: Vec<(&str, Vec<&str>, Vec<bool>)> =
            vec![("hog", vec![], vec![false, true])];
        if opts.hog_no_rt {
            configs.push(("hog-no-rt", vec!["--no-rt"], vec![false]));
        }
        for (tag, extra, paths) in configs {
            let d = Daemon::start(opts, tag, &extra)?;
            let hog = Hog::start(
                opts.hog_kind,
                opts.hog_workers.max(1),
                opts.duration * 3 + Duration::from_secs(30),
            )?;
            // Let the hog get going.
            std::thread::sleep(Duration::from_millis(500));
            for pty in paths {
                let mut s = spec("hog", opts.hog_streams, pty, opts.duration);
                s.beside = Some(format!(
                    "{}; daemon {}",
                    hog.desc,
                    if d.rt { "real-time" } else { "--no-rt" }
                ));
                let r = run_once(&d, &s, &audio, opts);
                progress(&r);
                rep.hog.push(r);
                gap();
            }
            drop(hog);
        }
    }
    rep.wall_s = started.elapsed().as_secs_f64();
    Ok(rep)
}

/// Attempts of a capacity search probe before its stream count counts as failed.
const PROBE_ATTEMPTS: usize = 2;

fn run_capacity(
    opts: &LoadOptions,
    audio: &Arc<Vec<Vec<u8>>>,
    confirm: bool,
) -> anyhow::Result<CapacityResult> {
    let d = Daemon::start(opts, "capacity", &[])?;
    let max = DAEMON_MAX_STREAMS;
    let mut stopped = HashMap::new();
    // A failed probe is repeated once: on a VM one stall (steal) fails a 6 s probe at
    // any load, and the search would bisect far below the real capacity. A count
    // passes the search if either attempt is clean; the confirming run decides.
    let (found, probes) = search_capacity(4, max, |n| {
        (0..PROBE_ATTEMPTS).any(|_| {
            let r = run_once(
                &d,
                &RunSpec {
                    scenario: "probe",
                    streams: n,
                    pty: false,
                    duration: opts.probe_duration,
                    stop_on_failure: true,
                    beside: None,
                },
                audio,
                opts,
            );
            progress(&r);
            stopped.insert(n, r.stopped_early);
            std::thread::sleep(Duration::from_millis(300));
            r.clean()
        })
    });
    let mut c = CapacityResult {
        probes: probes
            .iter()
            .map(|&(n, ok)| (n, ok, stopped.get(&n).copied().unwrap_or(false)))
            .collect(),
        probe_s: opts.probe_duration.as_secs_f64(),
        search_found: found,
        cores: cores(),
        ..Default::default()
    };
    if !confirm {
        c.capacity = (found > 0).then_some(found);
    } else {
        // Confirm over the full duration, stepping down on failure: n, n − n/8,
        // n − n/4, n/2, n/4. A failing run stops at its first miss or rejection; an attempt starts
        // only if it can end within 2 × the confirmation length of the first one.
        let started = Instant::now();
        for n in confirm_steps(found) {
            if started.elapsed() + opts.capacity_duration > 2 * opts.capacity_duration {
                break;
            }
            let r = run_once(
                &d,
                &RunSpec {
                    scenario: "capacity",
                    streams: n,
                    pty: false,
                    duration: opts.capacity_duration,
                    stop_on_failure: true,
                    beside: None,
                },
                audio,
                opts,
            );
            progress(&r);
            let clean = r.clean();
            if clean {
                c.compute_mean_us = Some(r.total.server_compute.mean_us).filter(|m| *m > 0.0);
            }
            c.confirms.push(r);
            if clean {
                c.capacity = Some(n);
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    c.at_stream_limit = c.capacity == Some(max);
    match status(&d.dev) {
        Err(e) => log::warn!("capacity: no status: {e:#}"),
        Ok(st) => {
            c.wcet_us = Some(st.wcet_us);
            c.typical_us = Some(st.typical_us);
            for stage in ["Vad", "Mel", "Embedding", "Head"] {
                if let Some(l) = st.latency.iter().find(|l| l.stage == stage) {
                    c.stage_p50_us.push((stage.to_lowercase(), l.p50_us));
                    c.stage_p999_us.push((stage.to_lowercase(), l.p999_us));
                }
            }
            c.compute_p50_us = c.stage_p50_us.iter().map(|s| u64::from(s.1)).sum();
        }
    }
    let period_us = FRAME_PERIOD.as_micros() as f64;
    if c.compute_p50_us > 0 {
        c.compute_bound = Some(c.cores as f64 * period_us / c.compute_p50_us as f64);
    }
    c.compute_bound_mean = c.compute_mean_us.map(|m| c.cores as f64 * period_us / m);
    Ok(c)
}

// ---------------------------------------------------------------------------------
// Report.

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn mib(kb: Option<u64>) -> String {
    kb.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

const RUN_HEADER: &str = "| path | streams | conns | frames | client p50 ms | p99 ms | p99.9 ms | max ms | server total p99 ms | results | misses | rejections | late | unanswered | rig lag max ms | steal ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";

fn late_cell(t: &TallySummary) -> String {
    if t.late_by_daemon_clock > 0 {
        format!("{} ({} by daemon clock)", t.late, t.late_by_daemon_clock)
    } else {
        t.late.to_string()
    }
}

/// The cells from frames to misses of a run table row (frames, client p50, p99, p99.9,
/// max, server total p99, results, misses), joined by ` | `.
fn latency_cells(t: &TallySummary) -> String {
    format!(
        "{} | {} | {} | {} | {} | {} | {} | {}",
        t.frames,
        ms(t.client.p50_us),
        ms(t.client.p99_us),
        ms(t.client.p999_us),
        ms(t.client.max_us),
        ms(t.server_total.p99_us),
        t.results,
        t.misses,
    )
}

fn run_row(
    label: &str,
    streams: usize,
    conns: usize,
    t: &TallySummary,
    rig: Option<&RunResult>,
) -> String {
    let rej = if t.rejections() == 0 {
        "0".to_owned()
    } else {
        format!(
            "{} ({} QueueFull, {} WouldMiss{})",
            t.rejections(),
            t.rejected_queue_full,
            t.rejected_would_miss,
            if t.rejected_other > 0 {
                format!(", {} other", t.rejected_other)
            } else {
                String::new()
            }
        )
    };
    format!(
        "| {label} | {streams} | {conns} | {} | {rej} | {} | {} | {} | {} |\n",
        latency_cells(t),
        late_cell(t),
        t.unanswered + t.duplicates,
        rig.map_or(String::new(), |r| ms(r.send_lag_max_us)),
        rig.and_then(|r| r.steal_ms)
            .map_or(String::new(), |s| s.to_string()),
    )
}

fn run_rows(r: &RunResult) -> String {
    let mut s = run_row(
        &if r.groups.len() > 1 {
            "pty + socket".to_owned()
        } else {
            r.path.clone()
        },
        r.streams,
        r.conns,
        &r.total,
        Some(r),
    );
    if r.groups.len() > 1 {
        for g in &r.groups {
            s.push_str(&run_row(
                &format!("  ↳ {} part", g.group),
                g.streams,
                g.conns,
                g,
                None,
            ));
        }
    }
    s
}

fn notes(runs: &[&RunResult]) -> String {
    let mut md = String::new();
    for r in runs {
        let label = format!("{} {} {} streams", r.scenario, r.path, r.streams);
        if let Some(e) = &r.error {
            md.push_str(&format!("\n**{label}: ERROR** {e}\n"));
        }
        if let (Some(d), Some(g), Some(st)) = (r.daemon_cpu_ms, r.rig_cpu_ms, r.steal_ms) {
            let avail = (r.wall_s * 1000.0 * cores() as f64).max(1.0);
            let rig = if r.beside.as_deref().is_some_and(|b| b.contains("busy-loop")) {
                "rig (with its busy-loop hog threads)"
            } else {
                "rig"
            };
            md.push_str(&format!(
                "\n- {label}: CPU over {:.1} s: daemon {d} ms ({:.0} %), {rig} {g} ms ({:.0} %), stolen by the hypervisor {st} ms ({:.0} %) of the {} cores.",
                r.wall_s,
                100.0 * d as f64 / avail,
                100.0 * g as f64 / avail,
                100.0 * st as f64 / avail,
                cores()
            ));
        }
        if let Some(d) = &r.daemon {
            let t = &r.total;
            if t.misses + t.rejections() + t.late > 0 || d.cancellations + d.late_writes > 0 {
                md.push_str(&format!(
                    "\n- {label}: daemon admission WCET after the run {} µs (typical {} µs, spread {} µs); {} runs cancelled at the deadline; {} answers written after their deadline (daemon's count); daemon stage max since boot: transport {} µs, write {} µs.",
                    d.wcet_us, d.typical_us, d.spread_us, d.cancellations, d.late_writes, d.transport_max_us, d.write_max_us
                ));
            }
            if d.deadline_misses != t.misses || d.rejections != t.rejections() {
                md.push_str(&format!(
                    "\n- {label}: the daemon counted {} misses / {} rejections, the rig {} / {}.",
                    d.deadline_misses,
                    d.rejections,
                    t.misses,
                    t.rejections()
                ));
            }
        }
        for p in r.total.problems.iter().take(5) {
            md.push_str(&format!("\n- {label}: {p}"));
        }
    }
    if !md.is_empty() {
        md.push('\n');
    }
    md
}

impl LoadReport {
    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut md = String::from("# outpost-hil bench-load\n\n");
        md.push_str(&format!(
            "{} logical CPUs (load average {} at the start). Real-time streams: one 1280-sample frame every 80 ms per stream, open loop, phases spread evenly over the period; audio: {}. Client latency = last byte of the frame written → last byte of its answer read, over **every** answer (results, misses, rejections). A **late** answer is one read more than deadline + {} ms after its frame was written. Rig I/O threads: {}. Extra daemon arguments: {}.\n\n",
            self.cores,
            self.loadavg_start,
            self.audio,
            self.late_allowance_us as f64 / 1000.0,
            self.rig_rt_priority.map_or("normal scheduling".into(), |p| format!("SCHED_FIFO {p}")),
            if self.daemon_args.is_empty() { "none".to_owned() } else { format!("`{}`", self.daemon_args.join(" ")) },
        ));
        if !self.load.is_empty() {
            md.push_str(&format!(
                "## Latency under load ({} s per row)\n\n",
                self.load[0].duration_s
            ));
            md.push_str(RUN_HEADER);
            for r in &self.load {
                md.push_str(&run_rows(r));
            }
            md.push_str("\nThe PTY is one serial line = one connection: it carries at most the handshake's `max_streams` (8); a PTY row with more streams puts the rest on socket connections beside it (rows “↳”). “unanswered” counts frames with no answer or more than one.\n");
            md.push_str(&notes(&self.load.iter().collect::<Vec<_>>()));
            md.push('\n');
        }
        if let Some(c) = &self.capacity {
            md.push_str("## Capacity (socket)\n\n");
            let cap = c.capacity.map_or("none confirmed".to_owned(), |n| {
                if c.at_stream_limit {
                    format!("≥ {n} (the daemon's stream limit)")
                } else {
                    n.to_string()
                }
            });
            let confirm_s = c.confirms.last().map_or(0.0, |r| r.duration_s);
            md.push_str("| capacity: streams with 0 misses, 0 rejections, 0 written late | over | compute bound (cores × 80 ms ÷ Σ stage p50) | Σ stage p50 (vad+mel+embedding+head) | bound from mean server compute | Σ stage p99.9 | admission WCET / typical (daemon) |\n|---:|---:|---:|---:|---:|---:|---:|\n");
            md.push_str(&format!(
                "| **{cap}** | {confirm_s} s | {} | {} µs ({}) | {} | {} µs | {} |\n\n",
                c.compute_bound
                    .map_or("?".into(), |b| format!("{:.1} ({} cores)", b, c.cores)),
                c.compute_p50_us,
                c.stage_p50_us
                    .iter()
                    .map(|(s, v)| format!("{s} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                match (c.compute_bound_mean, c.compute_mean_us) {
                    (Some(b), Some(m)) => format!("{b:.1} (mean {m:.0} µs)"),
                    _ => "?".into(),
                },
                c.stage_p999_us.iter().map(|s| u64::from(s.1)).sum::<u64>(),
                match (c.wcet_us, c.typical_us) {
                    (Some(w), Some(t)) => format!("{w} / {t} µs"),
                    _ => "?".into(),
                },
            ));
            md.push_str(&format!(
                "Search probes ({} s each, stopped at the first miss or rejection, a failed probe repeated once): {}.\n\n",
                c.probe_s,
                c.probes
                    .iter()
                    .map(|(n, ok, early)| format!(
                        "{n} {}",
                        if *ok {
                            "pass"
                        } else if *early {
                            "fail (stopped early)"
                        } else {
                            "fail"
                        }
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            if !c.confirms.is_empty() {
                md.push_str("Confirming runs:\n\n");
                md.push_str(RUN_HEADER);
                for r in &c.confirms {
                    md.push_str(&run_rows(r));
                }
                md.push_str(&notes(&c.confirms.iter().collect::<Vec<_>>()));
                md.push('\n');
            }
        }
        if !self.overload.is_empty() {
            md.push_str(&format!(
                "## Overload ({} s per row)\n\n",
                self.overload[0].duration_s
            ));
            for (r, b) in self.overload.iter().zip(&self.overload_basis) {
                md.push_str(&format!("- {} streams: {b}\n", r.streams));
            }
            md.push('\n');
            md.push_str(RUN_HEADER);
            for r in &self.overload {
                md.push_str(&run_rows(r));
            }
            md.push_str("\n| streams | frames | answered exactly once | late | daemon VmRSS first / max / last MiB | growth | VmHWM MiB |\n|---:|---:|---:|---:|---|---:|---:|\n");
        }
        for r in &self.overload {
            let t = &r.total;
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} / {} / {} | {} | {} |\n",
                r.streams,
                t.frames,
                t.answered_once,
                t.late,
                mib(r.memory.first_kb),
                mib(r.memory.max_kb),
                mib(r.memory.last_kb),
                r.memory.growth_kb().map_or("?".into(), |g| format!(
                    "{:+.1} MiB ({})",
                    g as f64 / 1024.0,
                    if g.unsigned_abs() <= MEMORY_FLAT_KB {
                        "flat"
                    } else {
                        "NOT flat"
                    }
                )),
                mib(r.memory.hwm_kb),
            ));
        }
        if !self.overload.is_empty() {
            md.push_str(&format!(
                "\nMemory sampled every second after a 2 s unmeasured warm-up at the same load; “flat” = |last − first| ≤ {} MiB.\n",
                MEMORY_FLAT_KB / 1024
            ));
            md.push_str(&notes(&self.overload.iter().collect::<Vec<_>>()));
            md.push('\n');
        }
        if !self.hog.is_empty() {
            md.push_str(&format!(
                "## CPU hog ({})\n\n",
                self.hog[0].beside.as_deref().unwrap_or("")
            ));
            md.push_str("| daemon | path | streams | frames | client p50 ms | p99 ms | p99.9 ms | max ms | server total p99 ms | results | misses | rejections | late | unanswered | rig lag max ms | steal ms |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for r in &self.hog {
                let t = &r.total;
                let daemon = if r.beside.as_deref().is_some_and(|b| b.contains("--no-rt")) {
                    "--no-rt"
                } else {
                    "real-time"
                };
                md.push_str(&format!(
                    "| {daemon} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    r.path,
                    r.streams,
                    latency_cells(t),
                    t.rejections(),
                    late_cell(t),
                    t.unanswered + t.duplicates,
                    ms(r.send_lag_max_us),
                    r.steal_ms.map_or("?".into(), |s| s.to_string()),
                ));
            }
            md.push_str(&notes(&self.hog.iter().collect::<Vec<_>>()));
            md.push('\n');
        }
        md.push_str(&format!(
            "Invariants (every frame answered exactly once, no late answer): **{}**. Total time {:.0} s.\n",
            if self.ok() { "held" } else { "BROKEN" },
            self.wall_s
        ));
        md
    }

    /// Writes `bench-load.md` and `bench-load.json` into `dir`.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn write(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let md = dir.join("bench-load.md");
        std::fs::write(&md, self.markdown())
            .with_context(|| format!("writing {}", md.display()))?;
        let json = dir.join("bench-load.json");
        std::fs::write(&json, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", json.display()))?;
        Ok(vec![md, json])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_respect_per_connection_limit() {
        let p = plan_connections(1, false, 8);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].streams, vec![(1, 0)]);

        let p = plan_connections(32, false, 8);
        assert_eq!(p.len(), 4);
        assert!(p.iter().all(|c| c.streams.len() == 8));

        let p = plan_connections(20, false, 8);
        assert_eq!(
            p.iter().map(|c| c.streams.len()).collect::<Vec<_>>(),
            vec![7, 7, 6]
        );

        let p = plan_connections(32, true, 8);
        assert_eq!(p[0].transport, Transport::Pty);
        assert_eq!(p[0].streams.len(), 8);
        assert_eq!(p.len(), 4);
        assert!(p[1..].iter().all(|c| c.transport == Transport::Socket));

        let p = plan_connections(3, true, 8);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].transport, Transport::Pty);

        // Every global index exactly once; stream ids unique within a connection.
        for (n, pty) in [(37, true), (64, false), (5, false)] {
            let p = plan_connections(n, pty, 8);
            let mut g: Vec<usize> = p
                .iter()
                .flat_map(|c| c.streams.iter().map(|s| s.1))
                .collect();
            g.sort_unstable();
            assert_eq!(g, (0..n).collect::<Vec<_>>());
            for c in &p {
                let mut ids: Vec<u16> = c.streams.iter().map(|s| s.0).collect();
                ids.dedup();
                assert_eq!(ids.len(), c.streams.len());
                assert!(c.streams.len() <= 8);
            }
        }
    }

    #[test]
    fn phases_spread_over_the_period() {
        assert_eq!(phase(0, 1), Duration::ZERO);
        assert_eq!(phase(1, 4), Duration::from_millis(20));
        assert_eq!(phase(3, 4), Duration::from_millis(60));
        assert!(phase(63, 64) < FRAME_PERIOD);
    }

    #[test]
    fn capacity_search_finds_the_boundary() {
        for cap in [0, 1, 3, 4, 5, 17, 31, 32, 33, 63, 64] {
            let (found, probes) = search_capacity(4, 64, |n| n <= cap);
            assert_eq!(found, cap, "{probes:?}");
            assert!(probes.len() <= 12, "{cap}: {probes:?}");
        }
    }

    fn got(id: u32, at: Instant, kind: AnswerKind) -> Got {
        Got { id, at, kind }
    }

    #[test]
    fn tally_counts_late_unanswered_duplicates_and_stray() {
        let t0 = Instant::now();
        let sent: Vec<Sent> = (0..5)
            .map(|i| Sent {
                id: 10 + i,
                stream: 1,
                seq: i,
                written: t0,
            })
            .collect();
        let miss = AnswerKind::DeadlineMissed {
            stream_id: 1,
            seq: 0,
            elapsed_us: 29_500,
        };
        let rej = AnswerKind::Rejected {
            stream_id: 1,
            seq: 1,
            reason: RejectReason::WouldMissDeadline,
        };
        let answers = vec![
            got(10, t0 + Duration::from_millis(29), miss.clone()),
            got(11, t0 + Duration::from_micros(100), rej.clone()),
            // 12: late (33 ms > 30 + 2).
            got(12, t0 + Duration::from_millis(33), miss.clone()),
            // 13: twice.
            got(13, t0 + Duration::from_millis(1), rej.clone()),
            got(13, t0 + Duration::from_millis(2), rej),
            // 14: none. 99: stray.
            got(99, t0, miss),
        ];
        let mut all = Tally::new("all");
        tally_conn(&sent, &answers, 30_000, 32_000, "test", &mut [&mut all]);
        let s = all.finish();
        assert_eq!(s.frames, 5);
        assert_eq!(s.answered_once, 3);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.unanswered, 1);
        assert_eq!(s.stray, 1);
        assert_eq!(s.misses, 2);
        assert_eq!(s.rejected_would_miss, 2);
        assert_eq!(s.late, 1);
        assert_eq!(s.client.count, 4);
        assert_eq!(s.client.max_us, 33_000);
    }

    #[test]
    fn confirmation_steps_down() {
        assert_eq!(confirm_steps(36), vec![36, 32, 27, 18, 9]);
        assert_eq!(confirm_steps(4), vec![4, 3, 2, 1]);
        assert_eq!(confirm_steps(2), vec![2, 1]);
        assert_eq!(confirm_steps(1), vec![1]);
        assert!(confirm_steps(0).is_empty());
    }

    #[test]
    fn process_cpu_time_is_parsed_after_the_command_name() {
        // A command name with spaces and a parenthesis; utime 250, stime 70 ticks.
        let text = "4242 (outpostd (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 70 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_process_cpu_ms(text), Some(3_200));
        assert_eq!(parse_process_cpu_ms("4242 (x) S 1 2"), None);
        assert!(
            process_cpu_ms(None).is_some(),
            "the rig's own /proc/self/stat"
        );
    }

    #[test]
    fn steal_is_parsed_from_proc_stat() {
        let text = "cpu  545787 0 68581 388379 4017 0 1006 9183 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_steal_ms(text), Some(91_830));
        assert_eq!(parse_steal_ms("cpu0 1 2\n"), None);
    }

    #[test]
    fn scenario_names_round_trip() {
        for s in LoadScenario::ALL {
            assert_eq!(LoadScenario::parse(s.name()), Ok(s));
        }
        assert!(LoadScenario::parse("nope").is_err());
    }

    #[test]
    fn hog_threads_stop_on_drop() {
        let h = Hog::start(HogKind::Spin, 1, Duration::from_secs(5)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        drop(h);
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
