//! `outpost-hil`: run scenarios against a device, or benchmark the simulated one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use outpost_hil::{bench, clips, load, powercut, runner, sim};

#[derive(Debug, Parser)]
#[command(
    name = "outpost-hil",
    version,
    about = "Outpost hardware-in-the-loop rig"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run scenarios against a device; exits 1 if any failed, 77 if the device is absent.
    Run {
        /// Device config (TOML).
        #[arg(long, default_value = "hil-tests/devices/sim.toml")]
        device: PathBuf,
        /// Scenario to run (repeatable): handshake, commands, faults, concurrency,
        /// no-inet-listeners, unix-sockets, units-active, watchdog. Default: all.
        #[arg(long = "scenario", value_name = "NAME")]
        scenarios: Vec<String>,
        /// outpostd binary (else $OUTPOSTD, else next to this executable).
        #[arg(long)]
        outpostd: Option<PathBuf>,
        /// Where to write report.json, summary.md, latency.png, outpostd.log.
        #[arg(long, default_value = "target/hil-report")]
        report_dir: PathBuf,
        /// clips.tsv from scripts/make-clips (default: $OUTPOST_CLIPS/clips.tsv or .outpost/clips/clips.tsv).
        #[arg(long)]
        clips: Option<PathBuf>,
        /// Parallel clients for the concurrency scenario (overrides the device config).
        #[arg(long)]
        clients: Option<usize>,
    },
    /// Closed-loop latency of the simulated device over the PTY and the socket.
    Bench {
        /// Measured frames per path.
        #[arg(long, default_value_t = 10_000)]
        frames: usize,
        /// Unmeasured frames per path before measuring.
        #[arg(long, default_value_t = 100)]
        warmup: usize,
        /// outpostd binary (else $OUTPOSTD, else next to this executable).
        #[arg(long)]
        outpostd: Option<PathBuf>,
        /// Extra outpostd argument (repeatable), e.g. --daemon-arg=--workers=2.
        #[arg(long = "daemon-arg", allow_hyphen_values = true)]
        daemon_args: Vec<String>,
        /// Where to write bench.md, bench.json, bench-latency.png, outpostd.log.
        #[arg(long, default_value = "target/hil-report")]
        report_dir: PathBuf,
        /// clips.tsv (as for `run`).
        #[arg(long)]
        clips: Option<PathBuf>,
    },
    /// Real-time streams against the simulated device: latency under load, capacity,
    /// overload at 2× capacity, and beside a CPU hog. Exits 1 only if a frame went
    /// unanswered (or twice) or an answer came late.
    BenchLoad {
        /// Scenario (repeatable): load, capacity, overload, hog, flood. Default: all but
        /// flood.
        #[arg(long = "scenario", value_name = "NAME", value_parser = load::LoadScenario::parse)]
        scenarios: Vec<load::LoadScenario>,
        /// About a minute in all: 3 s runs, 2 s probes, 8 s capacity confirmation
        /// (explicit durations still win).
        #[arg(long)]
        quick: bool,
        /// Stream counts of the load scenario.
        #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
        streams: Vec<usize>,
        /// Length of each load, overload and hog run in s [default: 20; quick: 3].
        #[arg(long)]
        duration_s: Option<f64>,
        /// Length of the run confirming the capacity in s [default: 60; quick: 8].
        #[arg(long)]
        capacity_duration_s: Option<f64>,
        /// Length of each capacity search probe in s [default: 6; quick: 2].
        #[arg(long)]
        probe_s: Option<f64>,
        /// Capacity for the overload scenario when capacity is not run.
        #[arg(long)]
        capacity: Option<usize>,
        /// CPU hog: auto (stress-ng if installed, else spinning threads), stress-ng, spin.
        #[arg(long, default_value = "auto")]
        hog: String,
        /// Busy loops in the hog [default: logical CPUs].
        #[arg(long)]
        hog_workers: Option<usize>,
        /// Streams in the hog runs.
        #[arg(long, default_value_t = 8)]
        hog_streams: usize,
        /// Skip the hog row against a daemon started with --no-rt.
        #[arg(long)]
        no_hog_no_rt: bool,
        /// Late allowance in ms beyond the deadline (transport + rig wake-up).
        #[arg(long, default_value_t = 2.0)]
        late_allowance_ms: f64,
        /// SCHED_FIFO priority of the rig's I/O threads; 0 = normal scheduling.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(0..=99))]
        rig_rt_priority: u8,
        /// outpostd binary (else $OUTPOSTD, else next to this executable).
        #[arg(long)]
        outpostd: Option<PathBuf>,
        /// Extra outpostd argument (repeatable), e.g. --daemon-arg=--workers=2.
        #[arg(long = "daemon-arg", allow_hyphen_values = true)]
        daemon_args: Vec<String>,
        /// Where to write bench-load.md, bench-load.json, outpostd-<scenario>.log.
        #[arg(long, default_value = "target/hil-report")]
        report_dir: PathBuf,
        /// clips.tsv (as for `run`).
        #[arg(long)]
        clips: Option<PathBuf>,
        /// flood: length of the victim's run without, and of the one with, the flood, in s
        /// [default: 20; quick: 5].
        #[arg(long)]
        flood_phase_s: Option<f64>,
        /// flood: wait after the flood before the last look at the daemon's memory and fds,
        /// in s [default: 5; quick: 2].
        #[arg(long)]
        flood_settle_s: Option<f64>,
        /// flood: connect/disconnect churn, connections per minute.
        #[arg(long, default_value_t = load::flood::DEFAULT_CHURN_PER_MIN)]
        flood_churn_per_min: u32,
        /// flood: streams of the victim client (one socket connection).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=8))]
        flood_victim_streams: u64,
        /// flood: seed of the garbage the flood sends.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// SIGKILL `outpost-provision install` at random points, and `outpostd` during a
    /// reload, on real A/B slot directories; the daemon must then boot a verified slot
    /// every time. Exits 1 on any failure (each listed with its replay command).
    PowerCut {
        /// Install kills.
        #[arg(long, default_value_t = 100)]
        kills: usize,
        /// Reload kills (SIGKILL of outpostd during a Reload).
        #[arg(long, default_value_t = 20)]
        reload_kills: usize,
        /// Seed of the kill points [default: from the clock, printed].
        #[arg(long)]
        seed: Option<u64>,
        /// Number of the first iteration (replay one with --first I --kills 1).
        #[arg(long, default_value_t = 0)]
        first: usize,
        /// outpostd binary (else $OUTPOSTD, else next to this executable).
        #[arg(long)]
        outpostd: Option<PathBuf>,
        /// outpost-provision binary [default: next to this executable].
        #[arg(long)]
        provision: Option<PathBuf>,
        /// Bundle spec built as v1, v2, v3.
        #[arg(long, default_value = "models/reference/bundle.toml")]
        spec: PathBuf,
        /// Development signing key.
        #[arg(
            long,
            default_value = "models/reference/dev-keys/outpost-dev-DO-NOT-DEPLOY.pk8"
        )]
        key: PathBuf,
        /// Trusted public keys for install.
        #[arg(long, default_value = "models/reference/dev-keys")]
        keys: PathBuf,
        /// OUTPOST_MODELS for the spec (from scripts/setup).
        #[arg(long, default_value = ".outpost/models")]
        models: PathBuf,
        /// --warmup-frames of every daemon started.
        #[arg(long, default_value_t = 10)]
        warmup_frames: u32,
        /// Extra outpostd argument (repeatable).
        #[arg(long = "daemon-arg", allow_hyphen_values = true)]
        daemon_args: Vec<String>,
        /// Where to write power-cut.md, power-cut.json and failing iterations' state.
        #[arg(long, default_value = "target/hil-report")]
        report_dir: PathBuf,
    },
}

fn secs(s: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        s.is_finite() && s > 0.0 && s <= 3600.0,
        "durations must be in (0, 3600] s, got {s}"
    );
    Ok(Duration::from_secs_f64(s))
}

/// How to start the simulated device: `outpostd` (as `sim::find_outpostd` finds it) with
/// `daemon_args` after its own.
fn sim_options(outpostd: Option<PathBuf>, daemon_args: Vec<String>) -> sim::SimOptions {
    let mut sim = sim::SimOptions::new(sim::find_outpostd(outpostd.as_deref()));
    sim.extra_args = daemon_args;
    sim
}

/// The clips `clips_tsv` lists (default: `clips::default_clips_tsv`); none when it is
/// missing or unreadable.
fn load_clips(clips_tsv: Option<PathBuf>) -> Vec<clips::Clip> {
    runner::load_clips(&clips_tsv.unwrap_or_else(clips::default_clips_tsv)).0
}

/// Prints a bench report's Markdown and where its files are; the exit code for `ok`.
fn finish(markdown: &str, report_dir: &Path, ok: bool) -> ExitCode {
    println!("{markdown}");
    println!("reports: {}", report_dir.display());
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> anyhow::Result<ExitCode> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match Cli::parse().command {
        Command::Run {
            device,
            scenarios,
            outpostd,
            report_dir,
            clips: clips_tsv,
            clients,
        } => {
            let opts = runner::RunOptions {
                device,
                scenarios,
                outpostd: sim::find_outpostd(outpostd.as_deref()),
                report_dir,
                clips_tsv: clips_tsv.unwrap_or_else(clips::default_clips_tsv),
                clients,
            };
            match runner::run(&opts).with_context(|| format!("device {}", opts.device.display()))? {
                runner::RunOutcome::Skipped(reason) => {
                    println!("SKIPPED: {reason}");
                    Ok(ExitCode::from(runner::EXIT_SKIPPED as u8))
                }
                runner::RunOutcome::Ran(rep) => {
                    print!("{}", rep.console_table());
                    println!("reports: {}", opts.report_dir.display());
                    Ok(if rep.passed() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    })
                }
            }
        }
        Command::Bench {
            frames,
            warmup,
            outpostd,
            daemon_args,
            report_dir,
            clips: clips_tsv,
        } => {
            let mut sim = sim_options(outpostd, daemon_args);
            sim.keep_log_to = Some(report_dir.join("outpostd.log"));
            let opts = bench::BenchOptions {
                frames,
                warmup_frames: warmup,
                sim,
                clips: load_clips(clips_tsv),
                answer_timeout: Duration::from_secs(5),
            };
            let mut rep = bench::run_bench(&opts)?;
            rep.write(&report_dir)?;
            Ok(finish(&rep.markdown(), &report_dir, rep.ok()))
        }
        Command::BenchLoad {
            scenarios,
            quick,
            streams,
            duration_s,
            capacity_duration_s,
            probe_s,
            capacity,
            hog,
            hog_workers,
            hog_streams,
            no_hog_no_rt,
            late_allowance_ms,
            rig_rt_priority,
            outpostd,
            daemon_args,
            report_dir,
            clips: clips_tsv,
            flood_phase_s,
            flood_settle_s,
            flood_churn_per_min,
            flood_victim_streams,
            seed,
        } => {
            let hog_kind = match hog.as_str() {
                "auto" => load::HogKind::Auto,
                "stress-ng" => load::HogKind::StressNg,
                "spin" => load::HogKind::Spin,
                other => anyhow::bail!("--hog {other:?}: expected auto, stress-ng or spin"),
            };
            anyhow::ensure!(
                streams
                    .iter()
                    .all(|&n| (1..=load::DAEMON_MAX_STREAMS).contains(&n)),
                "--streams: each count must be 1..={}",
                load::DAEMON_MAX_STREAMS
            );
            anyhow::ensure!(
                (1..=load::DAEMON_MAX_STREAMS).contains(&hog_streams),
                "--hog-streams must be 1..={}",
                load::DAEMON_MAX_STREAMS
            );
            anyhow::ensure!(
                late_allowance_ms.is_finite() && late_allowance_ms >= 0.0,
                "--late-allowance-ms must be ≥ 0"
            );
            let pick =
                |v: Option<f64>, full: f64, q: f64| secs(v.unwrap_or(if quick { q } else { full }));
            let opts = load::LoadOptions {
                sim: sim_options(outpostd, daemon_args),
                clips: load_clips(clips_tsv),
                scenarios: if scenarios.is_empty() {
                    load::LoadScenario::DEFAULT.to_vec()
                } else {
                    scenarios
                },
                stream_counts: streams,
                duration: pick(duration_s, 20.0, 3.0)?,
                capacity_duration: pick(capacity_duration_s, 60.0, 8.0)?,
                probe_duration: pick(probe_s, 6.0, 2.0)?,
                capacity_hint: capacity,
                hog_streams,
                hog_workers: hog_workers.unwrap_or_else(load::cores),
                hog_kind,
                hog_no_rt: !no_hog_no_rt,
                late_allowance_us: (late_allowance_ms * 1000.0).round() as u64,
                rig_rt_priority: (rig_rt_priority > 0).then_some(rig_rt_priority),
                log_dir: Some(report_dir.clone()),
                flood_phase: pick(flood_phase_s, 20.0, 5.0)?,
                flood_settle: pick(flood_settle_s, 5.0, 2.0)?,
                flood_churn_per_min,
                flood_victim_streams: flood_victim_streams as usize,
                seed,
            };
            let rep = load::run_bench_load(&opts)?;
            rep.write(&report_dir)?;
            Ok(finish(&rep.markdown(), &report_dir, rep.ok()))
        }
        Command::PowerCut {
            kills,
            reload_kills,
            seed,
            first,
            outpostd,
            provision,
            spec,
            key,
            keys,
            models,
            warmup_frames,
            daemon_args,
            report_dir,
        } => {
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_secs())
            });
            eprintln!("power-cut: seed {seed}");
            let abs = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
            let opts = powercut::PowerCutOptions {
                outpostd: abs(sim::find_outpostd(outpostd.as_deref())),
                provision: abs(provision.unwrap_or_else(|| sibling("outpost-provision"))),
                spec,
                key: abs(key),
                keys_dir: abs(keys),
                models_dir: abs(models),
                kills,
                reload_kills,
                seed,
                first,
                warmup_frames,
                daemon_args,
                report_dir: report_dir.clone(),
            };
            let rep = powercut::run_power_cut(&opts);
            rep.write(&report_dir)?;
            Ok(finish(&rep.markdown(), &report_dir, rep.ok()))
        }
    }
}

/// `name` next to this executable.
fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .map(|d| d.join(name))
        .unwrap_or_else(|| name.into())
}
