//! `outpost-hil run`: bring a device up, run scenarios, write the reports.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::clips::{self, Clip};
use crate::device::{Device, DeviceConfig, DeviceError};
use crate::report::{self, RunReport};
use crate::scenario::{Rig, ALL_SCENARIOS};
use crate::sim::SimOptions;

/// Exit code for a run that was skipped because the device is not attached
/// (automake's "skipped" code): not a pass, not a failure.
pub const EXIT_SKIPPED: i32 = 77;

/// Options of `outpost-hil run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Device TOML.
    pub device: PathBuf,
    /// Scenarios to run, in order (empty: all).
    pub scenarios: Vec<String>,
    /// `outpostd` binary for simulated devices.
    pub outpostd: PathBuf,
    /// Report directory.
    pub report_dir: PathBuf,
    /// `clips.tsv`.
    pub clips_tsv: PathBuf,
    /// Overrides the config's concurrency client count.
    pub clients: Option<usize>,
}

/// How a run ended.
#[derive(Debug)]
pub enum RunOutcome {
    /// Scenarios ran; the report says whether they passed.
    Ran(Box<RunReport>),
    /// The device is not attached; nothing ran.
    Skipped(String),
}

/// Loads clips, or returns none with the reason.
pub fn load_clips(tsv: &Path) -> (Vec<Clip>, String) {
    if !tsv.exists() {
        return (
            Vec::new(),
            format!("{} not found: run scripts/make-clips", tsv.display()),
        );
    }
    match clips::load_clips_tsv(tsv) {
        Ok(c) if c.is_empty() => (Vec::new(), format!("{} lists no clips", tsv.display())),
        Ok(c) => {
            let n = c.len();
            (c, format!("{n} clips from {}", tsv.display()))
        }
        Err(e) => (Vec::new(), e.to_string()),
    }
}

/// Runs the scenarios on the configured device and writes `report.json`,
/// `summary.md` and `latency.png` into the report directory.
///
/// # Errors
/// Config errors, a simulated daemon that does not start, report I/O errors.
pub fn run(opts: &RunOptions) -> anyhow::Result<RunOutcome> {
    let config = DeviceConfig::load(&opts.device)?;
    let mut sim = SimOptions::new(&opts.outpostd);
    sim.keep_log_to = Some(opts.report_dir.join("outpostd.log"));
    let device = match Device::bring_up(config, &sim) {
        Ok(d) => d,
        Err(DeviceError::Unavailable { name, reason }) => {
            return Ok(RunOutcome::Skipped(format!("device {name}: {reason}")))
        }
        Err(e) => return Err(e.into()),
    };
    let (clips, clips_source) = load_clips(&opts.clips_tsv);
    eprintln!("device {}: {clips_source}", device.config.name);
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let names: Vec<String> = if opts.scenarios.is_empty() {
        ALL_SCENARIOS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        opts.scenarios.clone()
    };
    let mut rig = Rig::new(&device, clips, clips_source.clone());
    if let Some(n) = opts.clients {
        rig.clients = n;
    }
    let mut results = Vec::new();
    for name in &names {
        eprintln!("scenario {name} ...");
        let r = rig.run(name);
        eprintln!(
            "scenario {name}: {} ({} ms) {}",
            r.outcome, r.duration_ms, r.summary
        );
        results.push(r);
    }
    let status = match rig.primary().and_then(|s| s.status()) {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("no status after the run: {e}");
            None
        }
    };
    let latency = vec![
        rig.rtt.summary(),
        rig.server_total.summary(),
        rig.server_compute.summary(),
    ];
    std::fs::create_dir_all(&opts.report_dir)?;
    let png = opts.report_dir.join("latency.png");
    let plot = if rig.rtt.is_empty() {
        None
    } else {
        match report::plot_histograms(
            &png,
            &[&rig.rtt, &rig.server_total, &rig.server_compute],
            rig.hello.as_ref().map(|h| u64::from(h.default_deadline_us)),
        ) {
            Ok(p) => Some(p),
            Err(e) => {
                log::warn!("no latency plot: {e}");
                None
            }
        }
    };
    let mut rep = RunReport {
        device: device.config.name.clone(),
        config: opts.device.clone(),
        started_unix_s,
        ready: device.sim().map(|s| s.ready().clone()),
        hello: rig.hello.clone(),
        status,
        clips: clips_source,
        scenarios: results,
        latency,
        files: Vec::new(),
        plot: plot.clone(),
    };
    if plot.is_some() {
        rep.files.push(png);
    }
    rep.files.push(opts.report_dir.join("report.json"));
    rep.files.push(opts.report_dir.join("summary.md"));
    if device.sim().is_some() {
        rep.files.push(opts.report_dir.join("outpostd.log"));
    }
    report::write_run_report(&opts.report_dir, &rep)?;
    drop(rig);
    drop(device);
    Ok(RunOutcome::Ran(Box::new(rep)))
}
