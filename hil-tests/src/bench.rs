//! `outpost-hil bench`: closed-loop latency of the simulated device over each path
//! (PTY, then Unix socket): one stream, send a frame, wait for its answer, send the
//! next. Measures latency, not throughput.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::clips::{self, Clip};
use crate::link::{Link, SerialLink, SocketLink};
use crate::procinfo::read_memory_kb;
use crate::report::{self, latency_table, PlotInfo};
use crate::scenario::CLIENT_NAME;
use crate::session::{AnswerKind, Session, StatusInfo};
use crate::sim::{ReadyLine, SimOptions, SimulatedDevice};
use crate::stats::{LatencySeries, LatencySummary};
use outpost_protocol::Stage;

/// Stages reported from `Status` in the bench table, in order.
pub const BENCH_STAGES: [Stage; 5] = [
    Stage::Vad,
    Stage::Mel,
    Stage::Embedding,
    Stage::Head,
    Stage::Total,
];

/// Bench options.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Measured frames per path.
    pub frames: usize,
    /// Frames sent before measuring, per path (not recorded).
    pub warmup_frames: usize,
    /// How to start the daemon.
    pub sim: SimOptions,
    /// Clips to cycle through (empty: synthetic tone + noise).
    pub clips: Vec<Clip>,
    /// Longest wait for one answer.
    pub answer_timeout: Duration,
}

/// Results on one path.
#[derive(Debug, Clone, Serialize)]
pub struct PathResult {
    /// `pty` or `socket`.
    pub path: String,
    /// Link description.
    pub link: String,
    /// Measured frames sent.
    pub frames: u64,
    /// Answered with a result.
    pub results: u64,
    /// Answered `DeadlineMissed`.
    pub deadline_misses: u64,
    /// Answered `Rejected`.
    pub rejections: u64,
    /// Answered `Error` (or anything else).
    pub errors: u64,
    /// First few non-result answers, for diagnosis.
    pub first_problems: Vec<String>,
    /// Wall time of the measured frames in s.
    pub wall_s: f64,
    /// Client round trip (µs).
    pub client_rtt: LatencySummary,
    /// Server `timing.total_us`.
    pub server_total: LatencySummary,
    /// Server `timing.compute_us`.
    pub server_compute: LatencySummary,
    /// Server `timing.queue_us`.
    pub server_queue: LatencySummary,
    /// Device status fetched right after this path (cumulative since boot).
    pub status: Option<StatusInfo>,
    /// Why the path could not be measured, if it could not.
    pub error: Option<String>,
    #[serde(skip)]
    series: Vec<LatencySeries>,
}

impl PathResult {
    /// Path `name` over `link`, with nothing measured yet.
    fn empty(name: &str, link: String) -> Self {
        Self {
            path: name.to_owned(),
            link,
            frames: 0,
            results: 0,
            deadline_misses: 0,
            rejections: 0,
            errors: 0,
            first_problems: Vec::new(),
            wall_s: 0.0,
            client_rtt: LatencySummary::default(),
            server_total: LatencySummary::default(),
            server_compute: LatencySummary::default(),
            server_queue: LatencySummary::default(),
            status: None,
            error: None,
            series: Vec::new(),
        }
    }
}

/// Everything the bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The daemon's READY line.
    pub ready: ReadyLine,
    /// Boot to ready in ms (READY `boot_ms`).
    pub boot_ms: Option<u64>,
    /// Daemon resident memory after the bench, kB (`VmRSS`).
    pub vm_rss_kb: Option<u64>,
    /// Daemon peak resident memory, kB (`VmHWM`).
    pub vm_hwm_kb: Option<u64>,
    /// Audio source.
    pub audio: String,
    /// Per path.
    pub paths: Vec<PathResult>,
    /// Plot, if drawn.
    pub plot: Option<PlotInfo>,
}

/// Frames of the clips, concatenated (with their silence tails), and a description;
/// a synthetic tone + noise when there are no clips.
pub(crate) fn bench_audio(clips: &[Clip]) -> (Vec<Vec<u8>>, String) {
    let mut frames = Vec::new();
    let mut used = 0;
    for c in clips {
        match clips::clip_frames(c) {
            Ok(f) => {
                frames.extend(f);
                used += 1;
            }
            Err(e) => log::warn!("bench: skipping clip: {e}"),
        }
    }
    if frames.is_empty() {
        let f = clips::to_frames(&clips::synth_tone_noise(2.0), clips::TAIL_SILENCE_FRAMES);
        (f, "synthetic tone + noise (no clips found)".into())
    } else {
        let n = frames.len();
        (frames, format!("{used} speech clips, {n} frames, cycled"))
    }
}

fn bench_path(
    name: &str,
    link: Box<dyn Link>,
    audio: &[Vec<u8>],
    opts: &BenchOptions,
) -> PathResult {
    let mut r = PathResult::empty(name, link.description());
    let mut rtt = LatencySeries::new(format!("{name} client round trip"));
    let mut total = LatencySeries::new(format!("{name} server total"));
    let mut compute = LatencySeries::new(format!("{name} server compute"));
    let mut queue = LatencySeries::new(format!("{name} server queue"));
    let run = (|| -> Result<(), crate::session::SessionError> {
        let mut s = Session::new(link, opts.answer_timeout)?;
        s.sync()?;
        s.hello(CLIENT_NAME)?;
        const STREAM: u16 = 1;
        s.open_stream(STREAM)?;
        let n = opts.warmup_frames + opts.frames;
        let mut t0 = Instant::now();
        for i in 0..n {
            if i == opts.warmup_frames {
                t0 = Instant::now();
            }
            let rec = s.audio(STREAM, i as u32, &audio[i % audio.len()])?;
            if i < opts.warmup_frames {
                continue;
            }
            r.frames += 1;
            match &rec.answer {
                AnswerKind::Frame(f) => {
                    r.results += 1;
                    // Round trips of results only: a rejection is answered at once and
                    // would flatter the percentiles.
                    rtt.record(rec.rtt_us);
                    total.record(u64::from(f.timing.total_us));
                    compute.record(u64::from(f.timing.compute_us));
                    queue.record(u64::from(f.timing.queue_us));
                }
                AnswerKind::DeadlineMissed { .. } => r.deadline_misses += 1,
                AnswerKind::Rejected { .. } => r.rejections += 1,
                _ => r.errors += 1,
            }
            if !matches!(rec.answer, AnswerKind::Frame(_)) && r.first_problems.len() < 5 {
                r.first_problems
                    .push(format!("seq {}: {}", rec.seq, rec.answer.describe()));
            }
        }
        r.wall_s = t0.elapsed().as_secs_f64();
        s.close_stream(STREAM)?;
        r.status = Some(s.status()?);
        Ok(())
    })();
    if let Err(e) = run {
        r.error = Some(e.to_string());
    }
    r.client_rtt = rtt.summary();
    r.server_total = total.summary();
    r.server_compute = compute.summary();
    r.server_queue = queue.summary();
    r.series = vec![rtt, total];
    r
}

/// Starts the simulated device and measures both paths.
///
/// # Errors
/// When the daemon cannot be started (with its log tail).
pub fn run_bench(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let (audio, audio_desc) = bench_audio(&opts.clips);
    let dev = SimulatedDevice::start(&opts.sim)?;
    let ready = dev.ready().clone();
    let mut paths = Vec::new();
    eprintln!(
        "bench: daemon ready (pid {}, boot {} ms); {} frames per path, audio: {audio_desc}",
        dev.pid(),
        ready.boot_ms.map_or("?".into(), |b| b.to_string()),
        opts.frames
    );
    let pty: anyhow::Result<Box<dyn Link>> = SerialLink::open(dev.pty_path(), 921_600)
        .map(|l| Box::new(l) as Box<dyn Link>)
        .map_err(Into::into);
    for (name, link) in [
        ("pty", pty),
        (
            "socket",
            SocketLink::connect(dev.socket_path())
                .map(|l| Box::new(l) as Box<dyn Link>)
                .map_err(Into::into),
        ),
    ] {
        let res = match link {
            Ok(link) => bench_path(name, link, &audio, opts),
            Err(e) => {
                let mut r = bench_path_failed(name, e.to_string());
                r.link = name.into();
                r
            }
        };
        eprintln!(
            "bench: {name}: {} frames, rtt p50 {} µs p99 {} µs{}",
            res.frames,
            res.client_rtt.p50_us,
            res.client_rtt.p99_us,
            res.error
                .as_ref()
                .map(|e| format!(" — ERROR: {e}"))
                .unwrap_or_default()
        );
        paths.push(res);
    }
    let (vm_rss_kb, vm_hwm_kb) = read_memory_kb(dev.pid());
    let mut report = BenchReport {
        boot_ms: ready.boot_ms,
        ready,
        vm_rss_kb,
        vm_hwm_kb,
        audio: audio_desc,
        paths,
        plot: None,
    };
    if report.paths.iter().any(|p| p.error.is_some()) {
        let tail = dev.log_tail(20);
        for p in report.paths.iter_mut().filter(|p| p.error.is_some()) {
            if let Some(e) = &mut p.error {
                e.push_str(&format!("\n--- outpostd log tail ---\n{tail}"));
            }
        }
    }
    drop(dev);
    Ok(report)
}

fn bench_path_failed(name: &str, error: String) -> PathResult {
    PathResult {
        error: Some(error),
        ..PathResult::empty(name, String::new())
    }
}

impl BenchReport {
    /// The Markdown report: latency table (rows path × measure; columns p50, p99,
    /// p99.9, max in µs), answer counts, memory and boot time.
    pub fn markdown(&self) -> String {
        let mut md = String::from("# outpost-hil bench\n\n");
        md.push_str(&format!(
            "Closed loop, one stream per path, one frame (1280 samples, 80 ms) in flight. Audio: {}.\n\n",
            self.audio
        ));
        let mut rows: Vec<(String, LatencySummary)> = Vec::new();
        for p in &self.paths {
            rows.push((
                format!("{} · client round trip (results)", p.path),
                p.client_rtt.clone(),
            ));
            rows.push((format!("{} · server total", p.path), p.server_total.clone()));
            rows.push((
                format!("{} · server compute", p.path),
                p.server_compute.clone(),
            ));
            rows.push((format!("{} · server queue", p.path), p.server_queue.clone()));
            if let Some(st) = &p.status {
                for stage in BENCH_STAGES {
                    if let Some(l) = st.latency.iter().find(|l| l.stage == stage.name()) {
                        rows.push((
                            format!("{} · device {stage} (status)", p.path),
                            LatencySummary {
                                name: stage.name().to_owned(),
                                count: l.count,
                                p50_us: u64::from(l.p50_us),
                                p99_us: u64::from(l.p99_us),
                                p999_us: u64::from(l.p999_us),
                                max_us: u64::from(l.max_us),
                                mean_us: 0.0,
                            },
                        ));
                    }
                }
            }
        }
        md.push_str(&latency_table(&rows));
        md.push_str(
            "\nRows “device … (status)” are the daemon's own per-stage statistics from `Status`, fetched after each path: cumulative since boot (the socket rows include the PTY run), i.e. model compute alone, measured in the same run.\n\n",
        );
        md.push_str("| path | frames | results | deadline misses | rejections | errors | frames/s |\n|---|---:|---:|---:|---:|---:|---:|\n");
        for p in &self.paths {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {:.0} |\n",
                p.path,
                p.frames,
                p.results,
                p.deadline_misses,
                p.rejections,
                p.errors,
                if p.wall_s > 0.0 {
                    p.frames as f64 / p.wall_s
                } else {
                    0.0
                }
            ));
        }
        let kb = |v: Option<u64>| v.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        md.push_str(&format!(
            "\nDaemon memory after the bench: VmRSS {}, VmHWM (peak) {}. Boot to ready: {} ms.\n",
            kb(self.vm_rss_kb),
            kb(self.vm_hwm_kb),
            self.boot_ms.map_or("?".into(), |b| b.to_string())
        ));
        for p in &self.paths {
            if let Some(e) = &p.error {
                md.push_str(&format!("\n**{} failed:** {e}\n", p.path));
            }
            for q in &p.first_problems {
                md.push_str(&format!("\n- {}: {q}", p.path));
            }
        }
        if let Some(plot) = &self.plot {
            md.push_str("\n\n");
            md.push_str(&plot.caption());
        }
        md
    }

    /// True when every path measured all its frames without error answers.
    pub fn ok(&self) -> bool {
        self.paths
            .iter()
            .all(|p| p.error.is_none() && p.errors == 0 && p.frames > 0)
    }

    /// Draws the histogram PNG and writes `bench.md` and `bench.json` into `dir`.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn write(&mut self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        use anyhow::Context as _;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut files = Vec::new();
        let png = dir.join("bench-latency.png");
        let series: Vec<&LatencySeries> = self.paths.iter().flat_map(|p| p.series.iter()).collect();
        match report::plot_histograms(
            &png,
            &series,
            Some(u64::from(outpost_protocol::DEFAULT_DEADLINE_US)),
        ) {
            Ok(info) => {
                self.plot = Some(info);
                files.push(png);
            }
            Err(e) => log::warn!("bench: no plot: {e}"),
        }
        let md = dir.join("bench.md");
        std::fs::write(&md, self.markdown())
            .with_context(|| format!("writing {}", md.display()))?;
        let json = dir.join("bench.json");
        std::fs::write(&json, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", json.display()))?;
        files.push(md);
        files.push(json);
        Ok(files)
    }
}
