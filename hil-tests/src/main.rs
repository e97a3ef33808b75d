//! `outpost-hil`: run scenarios against a device, or benchmark the simulated one.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use outpost_hil::{bench, clips, runner, sim};

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
        /// Scenario to run (repeatable): handshake, commands, faults, concurrency. Default: all.
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
            let mut sim = sim::SimOptions::new(sim::find_outpostd(outpostd.as_deref()));
            sim.extra_args = daemon_args;
            sim.keep_log_to = Some(report_dir.join("outpostd.log"));
            let (clips, _) =
                runner::load_clips(&clips_tsv.unwrap_or_else(clips::default_clips_tsv));
            let opts = bench::BenchOptions {
                frames,
                warmup_frames: warmup,
                sim,
                clips,
                answer_timeout: Duration::from_secs(5),
            };
            let mut rep = bench::run_bench(&opts)?;
            rep.write(&report_dir)?;
            println!("{}", rep.markdown());
            println!("reports: {}", report_dir.display());
            Ok(if rep.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
