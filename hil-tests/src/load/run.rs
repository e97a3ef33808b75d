//! One run: open the connections of the plan, start a pacer (writer) and a reader
//! thread per connection, sample the daemon's memory every second, then tally every
//! frame with its answers and read the daemon's counters, CPU time and steal.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use outpost_protocol::{Audio, Request, Stage};
use serde::Serialize;

use super::conn::{close_conn, open_conn, poll, send, Conn, Rx, Tx};
use super::plan::{phase, plan_connections, ConnPlan, Transport};
use super::report::ms;
use super::rt::spawn_rig_thread;
use super::tally::{tally_conn, Sent, Tally, TallySummary};
use super::{LoadOptions, DRAIN_TIMEOUT, FRAME_PERIOD, SETUP_TIMEOUT, STREAMS_PER_CONN};
use crate::link::SocketLink;
use crate::procinfo::{process_cpu_ms, read_memory_kb, steal_ms};
use crate::scenario::CLIENT_NAME;
use crate::session::{Answer, AnswerKind, Session, StatusInfo};
use crate::sim::SimulatedDevice;

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
    /// to the first byte written (docs/DESIGN.md §4), and the delay after it is the rig's or
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

/// The daemon's `Status`, over a new socket connection.
///
/// # Errors
/// The socket cannot be connected, or no valid answer.
pub(super) fn status(dev: &SimulatedDevice) -> anyhow::Result<StatusInfo> {
    let link = SocketLink::connect(dev.socket_path())?;
    let mut s = Session::new(Box::new(link), SETUP_TIMEOUT)?;
    Ok(s.status()?)
}

/// A running daemon plus what the rig learnt from its handshake.
pub(super) struct Daemon {
    /// The simulated device.
    pub(super) dev: SimulatedDevice,
    /// Streams per connection: the handshake's `max_streams`, at most [`STREAMS_PER_CONN`].
    pub(super) per_conn: usize,
    /// Started with real-time scheduling (no `--no-rt`).
    pub(super) rt: bool,
}

impl Daemon {
    /// Starts `outpostd` with `extra` arguments, its log kept as `outpostd-<tag>.log`,
    /// and checks it serves.
    ///
    /// # Errors
    /// The daemon does not start, or is not in state `Ready` (safe mode).
    pub(super) fn start(opts: &LoadOptions, tag: &str, extra: &[&str]) -> anyhow::Result<Self> {
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
pub(super) fn run_once(
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
    type ReaderOut = (Rx, Vec<Answer>, Option<String>);
    // Per connection: its plan, name, stage-2 deadline (µs) and threads.
    type ConnRun = (
        ConnPlan,
        String,
        u32,
        JoinHandle<WriterOut>,
        JoinHandle<ReaderOut>,
    );
    let mut handles: Vec<ConnRun> = Vec::new();
    for c in conns {
        let Conn {
            plan,
            desc,
            tx,
            rx,
            verify_deadline_us,
            ..
        } = c;
        // Verdicts still owed after the last frame's answer come within stage 2's
        // deadline of their end frame, which is at latest the last frame.
        let verdict_wait = match verify_deadline_us {
            0 => Duration::ZERO,
            d => Duration::from_micros(u64::from(d)) + Duration::from_millis(100),
        };
        let sent_count = Arc::new(AtomicU64::new(0));
        let writer_done = Arc::new(AtomicBool::new(false));
        let first_audio_id = tx.next_id();
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
                    match send(&mut tx, &req) {
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
        // Reader: everything that comes back, until all frames are answered (and, with a
        // verifier, the verdicts still owed could have come) or the drain timeout after
        // the writer finished. Verdicts carry their trigger frame's request id, so they
        // are not counted as frame answers.
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
                    if let Err(e) = poll(&mut rx, &mut chunk) {
                        err = Some(format!("reading answers: {e}"));
                        break;
                    }
                    for g in chunk.drain(..) {
                        if g.request_id >= first_audio_id
                            && !matches!(g.kind, AnswerKind::Verification(_))
                        {
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
                        let answered = audio_answers >= sent_count.load(Ordering::SeqCst);
                        if (answered && t.elapsed() >= verdict_wait) || t.elapsed() > DRAIN_TIMEOUT
                        {
                            break;
                        }
                    }
                }
                (rx, got, err)
            })
            .expect("spawn reader")
        };
        handles.push((plan, desc, verify_deadline_us, wh, rh));
    }

    let late_after_us = u64::from(r.deadline_us) + opts.late_allowance_us;
    let mut total = Tally::new("all");
    let mut groups: Vec<(Transport, Tally)> = Vec::new();
    let mut errors = Vec::new();
    let mut first_written: Option<Instant> = None;
    let mut last_answer: Option<Instant> = None;
    let mut back = Vec::new();
    for (plan, desc, verify_deadline_us, wh, rh) in handles {
        let (tx, sent, lag, werr) = wh.join().expect("writer thread");
        let (rx, got, rerr) = rh.join().expect("reader thread");
        r.send_lag_max_us = r.send_lag_max_us.max(lag);
        errors.extend(werr.into_iter().chain(rerr).map(|e| format!("{desc}: {e}")));
        if let Some(f) = sent.first() {
            first_written = Some(first_written.map_or(f.written, |x| x.min(f.written)));
        }
        if let Some(g) = got.iter().map(|g| g.received_at).max() {
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
            verify_deadline_us,
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
            write_max_us: stage_max(&a, Stage::Write),
            transport_max_us: stage_max(&a, Stage::Transport),
        });
    }
    if !errors.is_empty() {
        r.error = Some(errors.join("; "));
    }
    r
}

/// The `max_us` of `stage` in a `Status`, 0 when absent.
fn stage_max(st: &StatusInfo, stage: Stage) -> u32 {
    st.latency
        .iter()
        .find(|l| l.stage == stage.name())
        .map_or(0, |l| l.max_us)
}

/// One line on stderr per run.
pub(super) fn progress(r: &RunResult) {
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
