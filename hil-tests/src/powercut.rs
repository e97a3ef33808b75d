//! `outpost-hil power-cut`: SIGKILL the real `outpost-provision install` and the real
//! `outpostd` during a `Reload`, at seeded random points, on real A/B slot directories,
//! and check that the daemon then boots a verified slot every time.
//!
//! Set-up (once): the dev bundle spec (`models/reference/bundle.toml`) is built and
//! signed with the development key as versions 1, 2 and 3 (`outpost-provision build`);
//! a *base* state directory gets v1 installed and proven (one daemon boot marks it good).
//! Every iteration starts from a fresh copy of the base, so an iteration depends only on
//! the seed and its number and can be replayed alone (`--first I --kills 1`).
//!
//! * **install kills**: the duration of an uninterrupted `install v2` is measured
//!   (the longest of [`MEASURE_RUNS`]); each iteration starts `install v2`, sends SIGKILL after a
//!   delay drawn uniformly from [0, that duration), and records where the install was by
//!   what is on disk ([`KillPoint`]). Then `outpostd --state-dir` must print
//!   `READY state=ready …` (not `SAFE-MODE`) serving v2 from slot b if the commit
//!   (`state.json` naming b) happened, else v1 from slot a; it is stopped, and
//!   `install v3` must then succeed.
//! * **reload kills**: the daemon serves v1, `install v2` runs beside it, and an admin
//!   `Reload` is sent; the daemon gets SIGKILL after a delay drawn from [0, the longest
//!   measured uninterrupted reload). A restarted daemon must print `READY` and serve
//!   v2 (installed, so active on trial, before the reload).
//!
//! SIGKILL is a process crash, not a power cut: the page cache survives it, so this
//! checks the order of the steps against a process dying between any two of them, not
//! the fsyncs (those are covered by the fault-injecting store in
//! `provisioning/tests/install.rs`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use outpost_protocol::Request;
use serde::Serialize;

use crate::link::SocketLink;
use crate::session::{AnswerKind, Session};
use crate::sim::{log_tail, ReadyLine, STOP_GRACE};

/// Uninterrupted runs measured to set a kill window (the longest is used).
pub const MEASURE_RUNS: usize = 5;
/// How long a daemon may take to print its first line.
pub const FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an uninterrupted reload may take.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// The bundle versions: proven in the base, installed (and killed), installed after.
pub const V_BASE: u32 = 1;
/// The version whose install (or reload) is killed.
pub const V_NEW: u32 = 2;
/// The version installed after the kill.
pub const V_LATER: u32 = 3;

/// `power-cut` options.
#[derive(Debug, Clone)]
pub struct PowerCutOptions {
    /// `outpostd`.
    pub outpostd: PathBuf,
    /// `outpost-provision`.
    pub provision: PathBuf,
    /// The dev bundle spec (`models/reference/bundle.toml`).
    pub spec: PathBuf,
    /// The development signing key (`.pk8`).
    pub key: PathBuf,
    /// Directory of trusted public keys for `install --keys`.
    pub keys_dir: PathBuf,
    /// `OUTPOST_MODELS` for the spec (the upstream ONNX files).
    pub models_dir: PathBuf,
    /// Install kills.
    pub kills: usize,
    /// Reload kills.
    pub reload_kills: usize,
    /// Seed of the kill points.
    pub seed: u64,
    /// Number of the first iteration (to replay one).
    pub first: usize,
    /// `--warmup-frames` of every daemon started.
    pub warmup_frames: u32,
    /// Extra `outpostd` arguments.
    pub daemon_args: Vec<String>,
    /// Where failing iterations' state directories are kept.
    pub report_dir: PathBuf,
}

/// Where an install was when it was killed, judged by what is on disk afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum KillPoint {
    /// It had exited (successfully or not) before the kill was due.
    ExitedBeforeKill,
    /// Nothing of it on disk: before staging (process start, lock, trial check).
    NothingOnDisk,
    /// `staging/` exists, the inactive slot untouched: copying or verifying.
    Staging,
    /// The inactive slot is being (or was) rewritten, `state.json` not switched yet.
    SlotWritten,
    /// `state.json` names the new slot: after the commit point (audit maybe missing).
    Committed,
}

impl KillPoint {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            KillPoint::ExitedBeforeKill => "exited before the kill",
            KillPoint::NothingOnDisk => "before staging",
            KillPoint::Staging => "staging / verifying",
            KillPoint::SlotWritten => "slot written, not committed",
            KillPoint::Committed => "after the commit",
        }
    }

    /// The new slot must boot (the commit happened).
    pub fn committed(self) -> bool {
        matches!(self, KillPoint::Committed | KillPoint::ExitedBeforeKill)
    }

    /// Judges the kill point from what is on disk: `state_json` (its text), whether
    /// `new_slot` (`"b"`) has a directory, whether `staging/` exists, and whether the
    /// process had exited before the kill.
    pub fn classify(
        state_json: Option<&str>,
        new_slot: &str,
        slot_dir_exists: bool,
        staging_exists: bool,
        exited_before_kill: bool,
    ) -> Self {
        if exited_before_kill {
            return KillPoint::ExitedBeforeKill;
        }
        if active_slot(state_json).as_deref() == Some(new_slot) {
            KillPoint::Committed
        } else if slot_dir_exists {
            KillPoint::SlotWritten
        } else if staging_exists {
            KillPoint::Staging
        } else {
            KillPoint::NothingOnDisk
        }
    }
}

/// `active` of a `state.json` text (`None` when absent, null or unparsable).
pub fn active_slot(state_json: Option<&str>) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(state_json?).ok()?;
    v.get("active")?.as_str().map(str::to_owned)
}

/// The generator of iteration `i` of a kind (`salt`): depends only on the seed, the kind
/// and `i`, so one iteration can be replayed alone.
pub fn iteration_rng(seed: u64, salt: u64, i: usize) -> fastrand::Rng {
    let k = fastrand::Rng::with_seed(seed ^ salt.wrapping_mul(0xd6e8_feb8_6659_fd93)).u64(..);
    fastrand::Rng::with_seed(k ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Salt of the install-kill iterations.
pub const SALT_INSTALL: u64 = 1;
/// Salt of the reload-kill iterations.
pub const SALT_RELOAD: u64 = 2;

/// The kill delay of iteration `i`: uniform in `[0, window)`.
pub fn kill_delay(seed: u64, salt: u64, i: usize, window: Duration) -> Duration {
    window.mul_f64(iteration_rng(seed, salt, i).f64())
}

/// The kill window from uninterrupted runs: the longest, so the whole of a run
/// (including its commit near the end) is covered and some kills come after it ended.
/// Zero when none was measured.
pub fn kill_window(measured: &[Duration]) -> Duration {
    measured.iter().max().copied().unwrap_or_default()
}

/// The spec `text` (a bundle spec TOML in `spec_dir`) with its top-level `version`
/// set to `version` and every relative payload `path` made absolute, so the copy can
/// be built from anywhere.
///
/// # Errors
/// No top-level `version = …` line.
pub fn spec_for_version(text: &str, version: u32, spec_dir: &Path) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len() + 256);
    let mut in_table = false;
    let mut replaced = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            in_table = true;
        }
        if !in_table && !replaced && t.starts_with("version") && t.contains('=') {
            out.push_str(&format!("version = {version}\n"));
            replaced = true;
            continue;
        }
        if let Some(rest) = t.strip_prefix("path") {
            let v = rest.trim_start().strip_prefix('=').map(str::trim);
            if let Some(p) = v.and_then(|v| v.strip_prefix('"')?.strip_suffix('"')) {
                if !p.starts_with('/') && !p.starts_with('$') {
                    out.push_str(&format!(
                        "path = \"{}\"\n",
                        spec_dir.join(p).display().to_string().replace('"', "\\\"")
                    ));
                    continue;
                }
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    anyhow::ensure!(replaced, "the spec has no top-level `version = …` line");
    Ok(out)
}

/// One install kill.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InstallKill {
    /// Iteration number.
    pub iteration: usize,
    /// Kill delay after spawning the install, in µs.
    pub delay_us: u64,
    /// Where the install was ([`KillPoint::name`]).
    pub point: String,
    /// The commit had happened (so v2 must boot).
    pub committed: bool,
    /// The daemon's first stdout line afterwards.
    pub boot_line: String,
    /// It was `READY state=ready`.
    pub boot_ready: bool,
    /// It served the expected version from the expected slot.
    pub boot_expected: bool,
    /// The later install (v3) succeeded.
    pub later_install_ok: bool,
    /// What went wrong, if anything.
    pub failure: Option<String>,
}

/// One reload kill.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadKill {
    /// Iteration number.
    pub iteration: usize,
    /// Kill delay after sending `Reload`, in µs.
    pub delay_us: u64,
    /// The `Reloaded` answer had arrived before the kill.
    pub answered_before_kill: bool,
    /// `state.json` still had the trial flag after the kill (v2 not yet marked good).
    pub trial_after_kill: Option<bool>,
    /// The restarted daemon's first stdout line.
    pub boot_line: String,
    /// It was `READY state=ready`.
    pub boot_ready: bool,
    /// It served v2.
    pub boot_expected: bool,
    /// What went wrong, if anything.
    pub failure: Option<String>,
}

/// Everything `power-cut` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PowerCutReport {
    /// Seed.
    pub seed: u64,
    /// First iteration number.
    pub first: usize,
    /// Uninterrupted install durations measured (spawn → exit), in µs.
    pub install_measured_us: Vec<u64>,
    /// Install kill window (the longest of them), in µs.
    pub install_window_us: u64,
    /// Uninterrupted reload durations measured (`Reload` sent → `Reloaded` read), in µs.
    pub reload_measured_us: Vec<u64>,
    /// Reload kill window (the longest of them), in µs.
    pub reload_window_us: u64,
    /// Install kills.
    pub install: Vec<InstallKill>,
    /// Reload kills.
    pub reload: Vec<ReloadKill>,
    /// Set-up problems (no iteration could run).
    pub setup_error: Option<String>,
    /// Wall time in s.
    pub wall_s: f64,
}

impl PowerCutReport {
    /// No failure and no set-up error.
    pub fn ok(&self) -> bool {
        self.setup_error.is_none()
            && self.install.iter().all(|k| k.failure.is_none())
            && self.reload.iter().all(|k| k.failure.is_none())
    }

    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut md = String::from("# outpost-hil power-cut\n\n");
        md.push_str(&format!(
            "Seed {}, iterations from {}. Every iteration starts from a copy of a state directory with v{V_BASE} installed and proven. SIGKILL is a process crash: the page cache survives it.\n\n",
            self.seed, self.first
        ));
        if let Some(e) = &self.setup_error {
            md.push_str(&format!("**SET-UP FAILED**: {e}\n\n"));
        }
        if !self.install.is_empty() {
            let n = |p: KillPoint| self.install.iter().filter(|k| k.point == p.name()).count();
            let count =
                |f: &dyn Fn(&InstallKill) -> bool| self.install.iter().filter(|k| f(k)).count();
            md.push_str(&format!(
                "## SIGKILL of `outpost-provision install v{V_NEW}`\n\nKill delay uniform in [0, {:.1} ms) after spawn: the longest of {} uninterrupted installs ({} ms).\n\n",
                self.install_window_us as f64 / 1000.0,
                self.install_measured_us.len(),
                self.install_measured_us
                    .iter()
                    .map(|u| format!("{:.1}", *u as f64 / 1000.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            md.push_str("| kills | before staging | staging / verifying | slot written, not committed | after the commit | exited before the kill | daemon READY | served the expected slot | later install OK | failures |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n\n",
                self.install.len(),
                n(KillPoint::NothingOnDisk),
                n(KillPoint::Staging),
                n(KillPoint::SlotWritten),
                n(KillPoint::Committed),
                n(KillPoint::ExitedBeforeKill),
                count(&|k| k.boot_ready),
                count(&|k| k.boot_expected),
                count(&|k| k.later_install_ok),
                count(&|k| k.failure.is_some()),
            ));
            md.push_str(&format!("Expected: v{V_BASE} from slot a before the commit, v{V_NEW} from slot b (on trial) after it. Later install: v{V_LATER}.\n\n"));
            for k in self.install.iter().filter(|k| k.failure.is_some()) {
                md.push_str(&format!(
                    "- **FAIL** install kill {} (delay {} µs, {}): {} — replay: `outpost-hil power-cut --seed {} --first {} --kills 1 --reload-kills 0`\n",
                    k.iteration,
                    k.delay_us,
                    k.point,
                    k.failure.as_deref().unwrap_or(""),
                    self.seed,
                    k.iteration
                ));
            }
        }
        if !self.reload.is_empty() {
            let count =
                |f: &dyn Fn(&ReloadKill) -> bool| self.reload.iter().filter(|k| f(k)).count();
            md.push_str(&format!(
                "\n## SIGKILL of `outpostd` during `Reload`\n\nThe daemon serves v{V_BASE}; v{V_NEW} is installed beside it; `Reload` is sent and the daemon killed after a delay uniform in [0, {:.1} ms): the longest of {} uninterrupted reloads ({} ms).\n\n",
                self.reload_window_us as f64 / 1000.0,
                self.reload_measured_us.len(),
                self.reload_measured_us
                    .iter()
                    .map(|u| format!("{:.1}", *u as f64 / 1000.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            md.push_str("| kills | answered before the kill | v2 still on trial after the kill | restart READY | served v2 | failures |\n|---:|---:|---:|---:|---:|---:|\n");
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n\n",
                self.reload.len(),
                count(&|k| k.answered_before_kill),
                count(&|k| k.trial_after_kill == Some(true)),
                count(&|k| k.boot_ready),
                count(&|k| k.boot_expected),
                count(&|k| k.failure.is_some()),
            ));
            for k in self.reload.iter().filter(|k| k.failure.is_some()) {
                md.push_str(&format!(
                    "- **FAIL** reload kill {} (delay {} µs): {} — replay: `outpost-hil power-cut --seed {} --first {} --kills 0 --reload-kills 1`\n",
                    k.iteration,
                    k.delay_us,
                    k.failure.as_deref().unwrap_or(""),
                    self.seed,
                    k.iteration
                ));
            }
        }
        md.push_str(&format!(
            "\nResult: **{}**. Total time {:.0} s.\n",
            if self.ok() {
                "every kill left a bootable, verified slot"
            } else {
                "FAILURES"
            },
            self.wall_s
        ));
        md
    }

    /// Writes `power-cut.md` and `power-cut.json` into `dir`.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let md = dir.join("power-cut.md");
        std::fs::write(&md, self.markdown())
            .with_context(|| format!("writing {}", md.display()))?;
        let json = dir.join("power-cut.json");
        std::fs::write(&json, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", json.display()))?;
        Ok(())
    }
}

/// Copies the directory tree `from` to `to` (regular files and directories).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let t = e.file_type()?;
        let dest = to.join(e.file_name());
        if t.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else if t.is_file() {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

/// A daemon started on a state directory.
struct SlotDaemon {
    child: Child,
    first_line: String,
    socket: PathBuf,
    log: PathBuf,
}

impl SlotDaemon {
    /// Starts `outpostd --dev --state-dir STATE --socket DIR/d.sock` and waits for its
    /// first stdout line (READY or SAFE-MODE).
    fn start(opts: &PowerCutOptions, state: &Path, dir: &Path) -> anyhow::Result<Self> {
        let socket = dir.join("d.sock");
        let _ = std::fs::remove_file(&socket);
        let log = dir.join("outpostd.log");
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(&opts.outpostd)
            .arg("--dev")
            .arg("--state-dir")
            .arg(state)
            .arg("--socket")
            .arg(&socket)
            .arg("--warmup-frames")
            .arg(opts.warmup_frames.to_string())
            .args(&opts.daemon_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", opts.outpostd.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            // Keep draining so the daemon never blocks on a full pipe.
            for _ in lines {}
        });
        let started = Instant::now();
        let first_line = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(l) => break l,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let st = child.wait();
                    anyhow::bail!(
                        "outpostd printed nothing and exited ({st:?}); log:\n{}",
                        log_tail(&log, 15)
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if started.elapsed() > FIRST_LINE_TIMEOUT {
                        let _ = child.kill();
                        let _ = child.wait();
                        anyhow::bail!(
                            "outpostd printed nothing within {} s; log:\n{}",
                            FIRST_LINE_TIMEOUT.as_secs(),
                            log_tail(&log, 15)
                        );
                    }
                }
            }
        };
        Ok(Self {
            child,
            first_line,
            socket,
            log,
        })
    }

    /// The first line parsed: `(bundle, slot)` of a READY line.
    fn served(&self) -> Option<(String, String)> {
        let r = ReadyLine::parse(&self.first_line).ok()?;
        if !self.first_line.starts_with("READY state=ready") {
            return None;
        }
        Some((
            r.bundle.unwrap_or_default(),
            r.other.get("slot").cloned().unwrap_or_default(),
        ))
    }

    /// SIGKILL (the child is unreaped, so its pid is still its own).
    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL after [`STOP_GRACE`].
    fn stop(mut self) {
        if let Ok(None) = self.child.try_wait() {
            crate::sim::sigterm(&self.child);
        }
        let t = Instant::now();
        while t.elapsed() < STOP_GRACE {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        log::warn!("outpostd did not stop on SIGTERM; killing it");
        self.kill9();
    }
}

/// `READY` serving `version` from `slot` (`"a"` or `"b"`, trial or not)?
fn serves(served: Option<&(String, String)>, version: u32, slot: &str) -> bool {
    served.is_some_and(|(b, s)| b.ends_with(&format!("@{version}")) && s.starts_with(slot))
}

/// Runs `outpost-provision install` to completion.
fn install(opts: &PowerCutOptions, bundle: &Path, state: &Path) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let out = install_cmd(opts, bundle, state)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running outpost-provision install")?;
    let d = t.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "install {} failed ({}): {}",
        bundle.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(d)
}

fn install_cmd(opts: &PowerCutOptions, bundle: &Path, state: &Path) -> Command {
    let mut c = Command::new(&opts.provision);
    c.arg("install")
        .arg(bundle)
        .arg("--state-dir")
        .arg(state)
        .arg("--keys")
        .arg(&opts.keys_dir)
        .arg("--allow-development")
        .stdin(Stdio::null());
    c
}

/// What the set-up made: bundles and the base state directory.
struct Setup {
    work: tempfile::TempDir,
    bundles: [PathBuf; 3],
    base: PathBuf,
}

impl Setup {
    fn new(opts: &PowerCutOptions) -> anyhow::Result<Self> {
        let work = tempfile::Builder::new()
            .prefix("outpost-power-cut-")
            .tempdir()
            .context("temp dir")?;
        let text = std::fs::read_to_string(&opts.spec)
            .with_context(|| format!("reading {}", opts.spec.display()))?;
        let spec_dir = std::fs::canonicalize(opts.spec.parent().unwrap_or(Path::new(".")))?;
        let mut bundles = Vec::new();
        for v in [V_BASE, V_NEW, V_LATER] {
            let spec = work.path().join(format!("spec-v{v}.toml"));
            std::fs::write(&spec, spec_for_version(&text, v, &spec_dir)?)?;
            let out = work.path().join(format!("v{v}.bundle"));
            let o = Command::new(&opts.provision)
                .arg("build")
                .arg("--spec")
                .arg(&spec)
                .arg("--key")
                .arg(&opts.key)
                .arg("--out")
                .arg(&out)
                .env("OUTPOST_MODELS", &opts.models_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .context("running outpost-provision build")?;
            anyhow::ensure!(
                o.status.success(),
                "building v{v}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            bundles.push(out);
        }
        let bundles: [PathBuf; 3] = bundles.try_into().expect("three");
        let base = work.path().join("base");
        install(opts, &bundles[0], &base)?;
        let d = SlotDaemon::start(opts, &base, work.path())?;
        let ok = serves(d.served().as_ref(), V_BASE, "a");
        let line = d.first_line.clone();
        d.stop();
        anyhow::ensure!(ok, "the base slot did not boot: {line}");
        let st = std::fs::read_to_string(base.join("state.json")).unwrap_or_default();
        anyhow::ensure!(st.contains("\"trial\":false"), "base not proven: {st}");
        Ok(Self {
            work,
            bundles,
            base,
        })
    }

    /// A fresh copy of the base for iteration `tag`.
    fn fresh(&self, tag: &str) -> anyhow::Result<PathBuf> {
        let d = self.work.path().join(tag);
        let _ = std::fs::remove_dir_all(&d);
        copy_dir(&self.base, &d.join("state")).context("copying the base state")?;
        Ok(d)
    }

    /// Keeps a failing iteration's directory in the report dir.
    fn keep(&self, opts: &PowerCutOptions, dir: &Path, tag: &str) {
        let dest = opts.report_dir.join("power-cut-failures").join(tag);
        if let Err(e) = copy_dir(dir, &dest) {
            log::warn!("cannot keep {}: {e}", dest.display());
        }
    }
}

/// Runs the install kills and the reload kills.
pub fn run_power_cut(opts: &PowerCutOptions) -> PowerCutReport {
    let started = Instant::now();
    let mut rep = PowerCutReport {
        seed: opts.seed,
        first: opts.first,
        ..Default::default()
    };
    match Setup::new(opts) {
        Err(e) => rep.setup_error = Some(format!("{e:#}")),
        Ok(s) => {
            if let Err(e) = install_kills(opts, &s, &mut rep) {
                rep.setup_error = Some(format!("install kills: {e:#}"));
            }
            if let Err(e) = reload_kills(opts, &s, &mut rep) {
                rep.setup_error = Some(format!("reload kills: {e:#}"));
            }
        }
    }
    rep.wall_s = started.elapsed().as_secs_f64();
    rep
}

fn install_kills(
    opts: &PowerCutOptions,
    s: &Setup,
    rep: &mut PowerCutReport,
) -> anyhow::Result<()> {
    if opts.kills == 0 {
        return Ok(());
    }
    let mut measured = Vec::new();
    for i in 0..MEASURE_RUNS {
        let d = s.fresh(&format!("measure-{i}"))?;
        measured.push(install(opts, &s.bundles[1], &d.join("state"))?);
        let _ = std::fs::remove_dir_all(&d);
    }
    let window = kill_window(&measured);
    rep.install_measured_us = measured.iter().map(|d| d.as_micros() as u64).collect();
    rep.install_window_us = window.as_micros() as u64;
    eprintln!(
        "power-cut: uninterrupted install v{V_NEW}: longest {:.1} ms; {} kills, seed {}",
        window.as_secs_f64() * 1000.0,
        opts.kills,
        opts.seed
    );
    for i in opts.first..opts.first + opts.kills {
        let tag = format!("install-{i}");
        let dir = s.fresh(&tag)?;
        let k = install_kill(opts, s, &dir, i, window);
        if let Some(f) = &k.failure {
            eprintln!("power-cut: install kill {i}: FAIL: {f}");
            s.keep(opts, &dir, &tag);
        }
        let _ = std::fs::remove_dir_all(&dir);
        rep.install.push(k);
        if (i + 1 - opts.first).is_multiple_of(20) {
            eprintln!("power-cut: {} install kills done", i + 1 - opts.first);
        }
    }
    Ok(())
}

fn install_kill(
    opts: &PowerCutOptions,
    s: &Setup,
    dir: &Path,
    i: usize,
    window: Duration,
) -> InstallKill {
    let state = dir.join("state");
    let delay = kill_delay(opts.seed, SALT_INSTALL, i, window);
    let mut k = InstallKill {
        iteration: i,
        delay_us: delay.as_micros() as u64,
        ..Default::default()
    };
    let mut child = match install_cmd(opts, &s.bundles[1], &state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            k.failure = Some(format!("spawning install: {e}"));
            return k;
        }
    };
    let t = Instant::now();
    if let Some(rest) = delay.checked_sub(t.elapsed()) {
        std::thread::sleep(rest);
    }
    let exited = matches!(child.try_wait(), Ok(Some(_)));
    if !exited {
        let _ = child.kill();
    }
    let _ = child.wait();
    let point = KillPoint::classify(
        std::fs::read_to_string(state.join("state.json"))
            .ok()
            .as_deref(),
        "b",
        state.join("slots/b").exists(),
        state.join("staging").exists(),
        exited,
    );
    k.point = point.name().to_owned();
    k.committed = point.committed();
    let mut problems = Vec::new();
    match SlotDaemon::start(opts, &state, dir) {
        Err(e) => problems.push(format!("daemon: {e:#}")),
        Ok(d) => {
            k.boot_line = d.first_line.clone();
            let served = d.served();
            k.boot_ready = served.is_some();
            let (v, slot) = if k.committed {
                (V_NEW, "b")
            } else {
                (V_BASE, "a")
            };
            k.boot_expected = serves(served.as_ref(), v, slot);
            if !k.boot_ready {
                problems.push(format!(
                    "daemon did not boot a verified slot: {}; log:\n{}",
                    d.first_line,
                    log_tail(&d.log, 10)
                ));
            } else if !k.boot_expected {
                problems.push(format!(
                    "expected v{v} from slot {slot} ({}), got: {}",
                    point.name(),
                    d.first_line
                ));
            }
            d.stop();
        }
    }
    match install(opts, &s.bundles[2], &state) {
        Ok(_) => k.later_install_ok = true,
        Err(e) => problems.push(format!("later install: {e:#}")),
    }
    if !problems.is_empty() {
        k.failure = Some(problems.join("; "));
    }
    k
}

/// Sends `Reload` on a new admin connection; returns the session (to read the answer).
fn send_reload(socket: &Path) -> anyhow::Result<(Session, u32, Instant)> {
    let link = SocketLink::connect(socket)?;
    let mut s = Session::new(Box::new(link), RELOAD_TIMEOUT)?;
    let (id, at) = s.send(&Request::Reload)?;
    Ok((s, id, at))
}

fn reload_kills(opts: &PowerCutOptions, s: &Setup, rep: &mut PowerCutReport) -> anyhow::Result<()> {
    if opts.reload_kills == 0 {
        return Ok(());
    }
    let mut measured = Vec::new();
    for i in 0..MEASURE_RUNS {
        let dir = s.fresh(&format!("measure-reload-{i}"))?;
        let state = dir.join("state");
        let d = SlotDaemon::start(opts, &state, &dir)?;
        anyhow::ensure!(
            serves(d.served().as_ref(), V_BASE, "a"),
            "measuring reload: the base did not boot: {}",
            d.first_line
        );
        install(opts, &s.bundles[1], &state)?;
        let (mut sess, id, at) = send_reload(&d.socket)?;
        let a = sess.wait_for(id, "Reload")?;
        let took = at.elapsed();
        d.stop();
        match a.kind {
            AnswerKind::Reloaded {
                ok: true,
                bundle_version,
                ..
            } if bundle_version == V_NEW => {}
            other => anyhow::bail!("an uninterrupted reload answered {}", other.describe()),
        }
        measured.push(took);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let window = kill_window(&measured);
    rep.reload_measured_us = measured.iter().map(|d| d.as_micros() as u64).collect();
    rep.reload_window_us = window.as_micros() as u64;
    eprintln!(
        "power-cut: uninterrupted reload to v{V_NEW}: longest {:.1} ms; {} kills",
        window.as_secs_f64() * 1000.0,
        opts.reload_kills
    );
    for i in opts.first..opts.first + opts.reload_kills {
        let tag = format!("reload-{i}");
        let dir = s.fresh(&tag)?;
        let k = reload_kill(opts, s, &dir, i, window);
        if let Some(f) = &k.failure {
            eprintln!("power-cut: reload kill {i}: FAIL: {f}");
            s.keep(opts, &dir, &tag);
        }
        let _ = std::fs::remove_dir_all(&dir);
        rep.reload.push(k);
    }
    Ok(())
}

fn reload_kill(
    opts: &PowerCutOptions,
    s: &Setup,
    dir: &Path,
    i: usize,
    window: Duration,
) -> ReloadKill {
    let state = dir.join("state");
    let delay = kill_delay(opts.seed, SALT_RELOAD, i, window);
    let mut k = ReloadKill {
        iteration: i,
        delay_us: delay.as_micros() as u64,
        ..Default::default()
    };
    let fail = |mut k: ReloadKill, why: String| {
        k.failure = Some(why);
        k
    };
    let d = match SlotDaemon::start(opts, &state, dir) {
        Ok(d) => d,
        Err(e) => return fail(k, format!("set-up daemon: {e:#}")),
    };
    if !serves(d.served().as_ref(), V_BASE, "a") {
        let line = d.first_line.clone();
        d.stop();
        return fail(k, format!("set-up daemon did not serve v{V_BASE}: {line}"));
    }
    if let Err(e) = install(opts, &s.bundles[1], &state) {
        d.stop();
        return fail(k, format!("set-up install: {e:#}"));
    }
    let (mut sess, id, at) = match send_reload(&d.socket) {
        Ok(x) => x,
        Err(e) => {
            d.stop();
            return fail(k, format!("sending Reload: {e:#}"));
        }
    };
    if let Some(rest) = delay.checked_sub(at.elapsed()) {
        std::thread::sleep(rest);
    }
    d.kill9();
    // Whatever the daemon wrote before it died is still in the socket.
    while let Ok(Some(a)) = sess.next_answer(Duration::from_millis(10)) {
        if a.request_id == id {
            k.answered_before_kill = true;
        }
    }
    let st = std::fs::read_to_string(state.join("state.json")).ok();
    k.trial_after_kill = st.as_deref().and_then(|t| {
        let v: serde_json::Value = serde_json::from_str(t).ok()?;
        v.get("trial")?.as_bool()
    });
    match SlotDaemon::start(opts, &state, dir) {
        Err(e) => k.failure = Some(format!("restart: {e:#}")),
        Ok(d) => {
            k.boot_line = d.first_line.clone();
            let served = d.served();
            k.boot_ready = served.is_some();
            k.boot_expected = serves(served.as_ref(), V_NEW, "b");
            if !k.boot_ready {
                k.failure = Some(format!(
                    "restarted daemon did not boot a verified slot: {}; log:\n{}",
                    d.first_line,
                    log_tail(&d.log, 10)
                ));
            } else if !k.boot_expected {
                k.failure = Some(format!(
                    "restarted daemon serves something else than v{V_NEW} (installed before the reload): {}; state.json after the kill: {}",
                    d.first_line,
                    st.unwrap_or_default()
                ));
            }
            d.stop();
        }
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_delays_are_seeded_per_iteration_and_inside_the_window() {
        let w = Duration::from_millis(25);
        let a: Vec<Duration> = (0..200)
            .map(|i| kill_delay(42, SALT_INSTALL, i, w))
            .collect();
        assert!(a.iter().all(|d| *d < w));
        // Replaying one iteration alone gives the same delay.
        assert_eq!(kill_delay(42, SALT_INSTALL, 137, w), a[137]);
        assert_ne!(kill_delay(43, SALT_INSTALL, 137, w), a[137]);
        assert_ne!(kill_delay(42, SALT_RELOAD, 137, w), a[137]);
        // Spread over the window: every fifth of it gets some.
        for q in 0..5 {
            let lo = w * q / 5;
            let hi = w * (q + 1) / 5;
            assert!(
                a.iter().filter(|d| **d >= lo && **d < hi).count() > 10,
                "{q}"
            );
        }
    }

    #[test]
    fn kill_points_are_judged_from_the_disk() {
        let a = Some(r#"{"active":"a","trial":false,"floor":1,"rejected":[]}"#);
        let b = Some(r#"{"active":"b","trial":true,"floor":1,"rejected":[]}"#);
        use KillPoint::*;
        assert_eq!(
            KillPoint::classify(a, "b", false, false, false),
            NothingOnDisk
        );
        assert_eq!(KillPoint::classify(a, "b", false, true, false), Staging);
        assert_eq!(KillPoint::classify(a, "b", true, true, false), SlotWritten);
        assert_eq!(KillPoint::classify(b, "b", true, false, false), Committed);
        assert_eq!(
            KillPoint::classify(b, "b", true, false, true),
            ExitedBeforeKill
        );
        assert_eq!(
            KillPoint::classify(None, "b", false, false, false),
            NothingOnDisk
        );
        assert!(Committed.committed() && ExitedBeforeKill.committed());
        assert!(!SlotWritten.committed());
        assert_eq!(active_slot(Some("{\"active\":null}")), None);
        assert_eq!(active_slot(Some("not json")), None);
    }

    #[test]
    fn kill_window_is_the_longest_run() {
        let ms = Duration::from_millis;
        assert_eq!(kill_window(&[ms(5), ms(1), ms(3)]), ms(5));
        assert_eq!(kill_window(&[]), Duration::ZERO);
    }

    #[test]
    fn spec_gets_the_version_and_absolute_paths() {
        let spec = "name = \"x\"\nversion = 1\n\n[pipeline]\nversion = 9\n\n[[payload]]\nname = \"a\"\npath = \"${M}/a.onnx\"\n\n[[payload]]\nname = \"h\"\npath = \"head.onnx\"\n";
        let out = spec_for_version(spec, 7, Path::new("/r/models")).unwrap();
        assert!(out.contains("\nversion = 7\n"), "{out}");
        assert!(
            out.contains("[pipeline]\nversion = 9\n"),
            "only the top level: {out}"
        );
        assert!(out.contains("path = \"${M}/a.onnx\""), "{out}");
        assert!(out.contains("path = \"/r/models/head.onnx\""), "{out}");
        assert!(spec_for_version("[t]\nversion = 1\n", 2, Path::new("/")).is_err());
    }

    #[test]
    fn report_lists_failures_with_a_replay_command() {
        let mut rep = PowerCutReport {
            seed: 9,
            install_window_us: 25_000,
            install_measured_us: vec![25_000],
            ..Default::default()
        };
        rep.install.push(InstallKill {
            iteration: 3,
            point: KillPoint::Committed.name().into(),
            committed: true,
            boot_ready: true,
            boot_expected: true,
            later_install_ok: true,
            ..Default::default()
        });
        rep.install.push(InstallKill {
            iteration: 4,
            point: KillPoint::Staging.name().into(),
            failure: Some("daemon did not boot".into()),
            ..Default::default()
        });
        assert!(!rep.ok());
        let md = rep.markdown();
        assert!(
            md.contains("| 2 | 0 | 1 | 0 | 1 | 0 | 1 | 1 | 1 | 1 |"),
            "{md}"
        );
        assert!(
            md.contains("`outpost-hil power-cut --seed 9 --first 4 --kills 1 --reload-kills 0`"),
            "{md}"
        );
        assert!(md.contains("FAILURES"), "{md}");
    }
}
