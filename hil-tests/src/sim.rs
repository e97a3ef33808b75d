//! The simulated device: a local `outpostd` serving a PTY pair and a Unix socket.
//!
//! [`SimulatedDevice::start`] runs `outpostd --dev --pty --socket <tmp>/outpostd.sock`,
//! waits for its `READY key=value ...` line on stdout, and stops the daemon when
//! dropped (SIGTERM, then SIGKILL after [`STOP_GRACE`]). The daemon's stderr (and any
//! stdout after READY) goes to a log file whose tail is quoted in every error.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long the daemon may take from spawn to its READY line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the daemon gets to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// Lines of the daemon log quoted in errors.
pub const LOG_TAIL_LINES: usize = 40;

/// The daemon's `READY ...` line, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReadyLine {
    /// PTY slave path for clients (`pty=`), when the daemon serves a PTY.
    pub pty: Option<PathBuf>,
    /// Unix socket path (`socket=`), when the daemon serves one.
    pub socket: Option<PathBuf>,
    /// Loaded bundle id (`bundle=`).
    pub bundle: Option<String>,
    /// Time from process start to ready, in ms (`boot_ms=`).
    pub boot_ms: Option<u64>,
    /// Daemon process id (`pid=`).
    pub pid: Option<u32>,
    /// Keys this rig does not know, kept for the report.
    pub other: BTreeMap<String, String>,
}

/// Why a READY line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadyError {
    /// The line does not start with the word `READY`.
    #[error("not a READY line (expected `READY key=value ...`): {0:?}")]
    NotReady(String),
    /// The daemon came up in safe mode (`SAFE-MODE ... reason=...`): no bundle serves.
    #[error("outpostd is in safe mode: {0}")]
    SafeMode(String),
    /// A field is not `key=value`.
    #[error("READY field {0:?} is not key=value")]
    BadField(String),
    /// A numeric field does not parse.
    #[error("READY field {key}={value:?} is not a non-negative integer")]
    BadNumber {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
}

impl ReadyLine {
    /// Parses `READY pty=/dev/pts/3 socket=/tmp/x.sock bundle=dev-1 boot_ms=812 pid=42`.
    /// Fields may come in any order; unknown keys are kept in [`ReadyLine::other`].
    ///
    /// # Errors
    /// [`ReadyError`] when the line is not a READY line or a field is malformed.
    pub fn parse(line: &str) -> Result<Self, ReadyError> {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("READY") => {}
            Some("SAFE-MODE") => {
                let reason = line
                    .split_once(" reason=")
                    .map_or("no reason given", |(_, r)| r);
                return Err(ReadyError::SafeMode(reason.to_owned()));
            }
            _ => return Err(ReadyError::NotReady(line.to_owned())),
        }
        let mut r = ReadyLine::default();
        for field in words {
            let (key, value) = field
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| ReadyError::BadField(field.to_owned()))?;
            let number = || {
                value.parse::<u64>().map_err(|_| ReadyError::BadNumber {
                    key: key.to_owned(),
                    value: value.to_owned(),
                })
            };
            match key {
                "pty" => r.pty = Some(PathBuf::from(value)),
                "socket" => r.socket = Some(PathBuf::from(value)),
                "bundle" => r.bundle = Some(value.to_owned()),
                "boot_ms" => r.boot_ms = Some(number()?),
                "pid" => {
                    r.pid = Some(u32::try_from(number()?).map_err(|_| ReadyError::BadNumber {
                        key: key.to_owned(),
                        value: value.to_owned(),
                    })?)
                }
                _ => {
                    r.other.insert(key.to_owned(), value.to_owned());
                }
            }
        }
        Ok(r)
    }
}

/// Why the simulated device could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The daemon binary does not exist.
    #[error("outpostd not found at {0} (build it with `cargo build -p outpost-host`, or pass --outpostd PATH / set OUTPOSTD)")]
    NotFound(PathBuf),
    /// Setting up the temp dir, log or process failed.
    #[error("cannot start {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The daemon exited before READY.
    #[error("outpostd exited with {status} before printing READY; log {log}:\n{tail}")]
    Exited {
        /// Exit status.
        status: std::process::ExitStatus,
        /// Log file path.
        log: PathBuf,
        /// Last lines of the log.
        tail: String,
    },
    /// No READY line within the timeout.
    #[error("outpostd printed no READY line within {timeout_s} s; log {log}:\n{tail}")]
    Timeout {
        /// Timeout in s.
        timeout_s: u64,
        /// Log file path.
        log: PathBuf,
        /// Last lines of the log.
        tail: String,
    },
    /// The daemon came up in safe mode (its `SAFE-MODE … reason=…` line): it serves no
    /// bundle, so the rig stops it at once rather than waiting for a READY line.
    #[error("outpostd came up in safe mode: {reason}; log {log}:\n{tail}")]
    SafeMode {
        /// The reason the daemon gave.
        reason: String,
        /// Log file path.
        log: PathBuf,
        /// Last lines of the log.
        tail: String,
    },
    /// The READY line is malformed or lacks a path the rig needs.
    #[error("outpostd READY line unusable: {problem}; log {log}:\n{tail}")]
    BadReady {
        /// What was wrong.
        problem: String,
        /// Log file path.
        log: PathBuf,
        /// Last lines of the log.
        tail: String,
    },
}

/// Options for [`SimulatedDevice::start`].
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The `outpostd` binary.
    pub outpostd: PathBuf,
    /// Extra arguments after `--dev --pty --socket PATH` (e.g. `--workers 2`).
    pub extra_args: Vec<String>,
    /// Extra environment variables for the daemon (e.g. `RUST_LOG`, `ORT_DYLIB_PATH`).
    pub env: Vec<(String, String)>,
    /// Working directory of the daemon (the dev bundle path is relative to it);
    /// `None` = the rig's own.
    pub workdir: Option<PathBuf>,
    /// Where to copy the daemon log when the device is dropped (e.g. the report dir).
    pub keep_log_to: Option<PathBuf>,
    /// READY timeout (default [`READY_TIMEOUT`]).
    pub ready_timeout: Duration,
}

impl SimOptions {
    /// Options with defaults for `outpostd` at `outpostd`.
    pub fn new(outpostd: impl Into<PathBuf>) -> Self {
        Self {
            outpostd: outpostd.into(),
            extra_args: Vec::new(),
            env: Vec::new(),
            workdir: None,
            keep_log_to: None,
            ready_timeout: READY_TIMEOUT,
        }
    }
}

/// A running local `outpostd`; stopped on drop.
#[derive(Debug)]
pub struct SimulatedDevice {
    child: Child,
    ready: ReadyLine,
    pty: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    keep_log_to: Option<PathBuf>,
    // Held for its Drop (removes the temp dir); declared last so it outlives the rest.
    dir: tempfile::TempDir,
}

impl SimulatedDevice {
    /// Spawns the daemon and waits for READY.
    ///
    /// # Errors
    /// [`SimError`] with the daemon log's tail when it cannot be spawned, exits, stays
    /// silent past the timeout, or prints an unusable READY line.
    pub fn start(opts: &SimOptions) -> Result<Self, SimError> {
        if !opts.outpostd.is_file() {
            return Err(SimError::NotFound(opts.outpostd.clone()));
        }
        let io = |what: &str| {
            let what = what.to_owned();
            move |source| SimError::Io { what, source }
        };
        let dir = tempfile::Builder::new()
            .prefix("outpost-hil-")
            .tempdir()
            .map_err(io("temp dir"))?;
        let socket = dir.path().join("outpostd.sock");
        let log = dir.path().join("outpostd.log");
        let log_file = File::create(&log).map_err(io("daemon log file"))?;
        let stderr = log_file.try_clone().map_err(io("daemon log file"))?;

        let mut cmd = Command::new(&opts.outpostd);
        cmd.arg("--dev")
            .arg("--pty")
            .arg("--socket")
            .arg(&socket)
            .args(&opts.extra_args)
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(wd) = &opts.workdir {
            cmd.current_dir(wd);
        }
        log::info!("starting {:?}", cmd);
        let mut child = cmd
            .spawn()
            .map_err(io(&format!("{}", opts.outpostd.display())))?;

        // Stdout reader: forwards the first READY (or SAFE-MODE) line, appends everything
        // to the log.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel::<String>();
        let mut log_out = log_file;
        std::thread::Builder::new()
            .name("outpostd-stdout".into())
            .spawn(move || {
                let mut sent = false;
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = writeln!(log_out, "[stdout] {line}");
                    if !sent && (line.starts_with("READY") || line.starts_with("SAFE-MODE")) {
                        sent = tx.send(line).is_ok();
                    }
                }
            })
            .map_err(io("stdout reader thread"))?;

        let started = Instant::now();
        let line = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => break line,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed without READY: wait briefly for the exit status.
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Let the stdout thread flush what it had.
                std::thread::sleep(Duration::from_millis(50));
                if let Ok(line) = rx.try_recv() {
                    break line;
                }
                return Err(SimError::Exited {
                    status,
                    tail: log_tail(&log, LOG_TAIL_LINES),
                    log,
                });
            }
            if started.elapsed() > opts.ready_timeout {
                stop_child(&mut child);
                return Err(SimError::Timeout {
                    timeout_s: opts.ready_timeout.as_secs(),
                    tail: log_tail(&log, LOG_TAIL_LINES),
                    log,
                });
            }
        };
        log::info!("outpostd: {line}");
        let bad = |problem: String, child: &mut Child| {
            stop_child(child);
            SimError::BadReady {
                problem,
                tail: log_tail(&log, LOG_TAIL_LINES),
                log: log.clone(),
            }
        };
        let ready = match ReadyLine::parse(&line) {
            Ok(r) => r,
            Err(ReadyError::SafeMode(reason)) => {
                stop_child(&mut child);
                return Err(SimError::SafeMode {
                    reason,
                    tail: log_tail(&log, LOG_TAIL_LINES),
                    log,
                });
            }
            Err(e) => return Err(bad(e.to_string(), &mut child)),
        };
        let Some(pty) = ready.pty.clone() else {
            return Err(bad(format!("no pty= in {line:?}"), &mut child));
        };
        let socket = ready.socket.clone().unwrap_or(socket);
        Ok(Self {
            child,
            ready,
            pty,
            socket,
            log,
            keep_log_to: opts.keep_log_to.clone(),
            dir,
        })
    }

    /// The parsed READY line.
    pub fn ready(&self) -> &ReadyLine {
        &self.ready
    }

    /// PTY slave path to open as a serial port.
    pub fn pty_path(&self) -> &Path {
        &self.pty
    }

    /// Unix socket path.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The daemon's process id (from READY, else the child's).
    pub fn pid(&self) -> u32 {
        self.ready.pid.unwrap_or_else(|| self.child.id())
    }

    /// The daemon log file (stderr, and stdout after READY).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The temp dir holding the socket and log (removed on drop).
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Last `lines` lines of the daemon log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// `Some(status)` if the daemon has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for SimulatedDevice {
    fn drop(&mut self) {
        stop_child(&mut self.child);
        if let Some(dest) = &self.keep_log_to {
            if let Some(parent) = dest.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            match std::fs::copy(&self.log, dest) {
                Ok(_) => log::info!("daemon log kept at {}", dest.display()),
                Err(e) => log::warn!("cannot keep daemon log at {}: {e}", dest.display()),
            }
        }
    }
}

/// SIGTERM, wait up to [`STOP_GRACE`], then SIGKILL; always reaps the child.
fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    sigterm(child);
    let t = Instant::now();
    while t.elapsed() < STOP_GRACE {
        if let Ok(Some(status)) = child.try_wait() {
            log::info!("outpostd stopped: {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    log::warn!(
        "outpostd did not stop within {} s of SIGTERM; killing it",
        STOP_GRACE.as_secs()
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends SIGTERM to `child`. Call it only while the child is unreaped (its last
/// `try_wait` returned `None`): then its pid cannot have been reused. Errors (the child
/// exited meanwhile) are ignored: the caller waits and kills anyway.
pub(crate) fn sigterm(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

/// Last `lines` lines of a text file (at most the last 64 KiB are read); a note
/// when the file cannot be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    let read = File::open(path).and_then(|mut f| {
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(())
    });
    if let Err(e) = read {
        return format!("(log {} unreadable: {e})", path.display());
    }
    let all: Vec<&str> = text.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    if tail.is_empty() {
        "(log is empty)".to_owned()
    } else {
        tail.join("\n")
    }
}

/// Where `outpostd` is: `explicit`, else `$OUTPOSTD`, else `outpostd` next to the
/// running executable (the same cargo target dir).
pub fn find_outpostd(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    if let Some(p) = std::env::var_os("OUTPOSTD").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_owned).unwrap_or_default();
    // Test binaries live in target/<profile>/deps; the daemon is one level up.
    let candidates = [dir.join("outpostd"), dir.join("../outpostd")];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| candidates[0].clone())
}
