//! On-device checks of the appliance image (issue 19): scenarios that look at the
//! device from a shell on it rather than through the wire protocol.
//!
//! | scenario | passes when |
//! |---|---|
//! | `no-inet-listeners` | `/proc/net/{tcp,tcp6,udp,udp6}` hold no TCP socket in `LISTEN` and no UDP socket at all |
//! | `unix-sockets` | every Unix socket bound to a name (listening, or datagram) in `/proc/net/unix` is required or allowed by the device TOML, and every required one is there |
//! | `units-active` | `systemctl show` gives `LoadState=loaded`, `ActiveState=active` for every configured unit |
//! | `watchdog` | `systemctl show -p WatchdogUSec` of the daemon's unit is set (neither `0` nor `infinity`) |
//!
//! The shell is a rig-side command from the device TOML (`[device_checks] shell`):
//! the image has no network and no ssh, so it is a serial-console or USB-debug-link
//! executor, or `sh -c` when the rig runs on the appliance. The `/proc` tables are
//! parsed by `procfs` on the rig. On a simulated device (a local `outpostd`, not the
//! image) and on a device without a shell command the scenarios are skipped with the
//! reason, never passed.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use procfs::net::{TcpNetEntries, TcpState, UdpNetEntries, UnixNetEntries, UnixState};
use procfs::{ExplicitSystemInfo, FromBufRead as _, FromBufReadSI as _};

use crate::device::{DeviceChecksConfig, DeviceConfig, LinkConfig};
use crate::scenario::ScenarioResult;

/// Names of the on-device scenarios, in run order.
pub const DEVICE_SCENARIOS: [&str; 4] = [
    "no-inet-listeners",
    "unix-sockets",
    "units-active",
    "watchdog",
];

/// Why a shell command on the device gave no usable output.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The rig-side command could not be started.
    #[error("cannot start the device shell command {argv:?}: {source}")]
    Start {
        /// The configured argv prefix.
        argv: Vec<String>,
        /// The OS error.
        source: std::io::Error,
    },
    /// It ran longer than the configured time-out and was killed.
    #[error("the device shell command did not finish within {timeout_ms} ms (killed)")]
    Timeout {
        /// The time-out in ms.
        timeout_ms: u64,
    },
    /// It exited unsuccessfully.
    #[error("the device shell command exited with {status}: {stderr}")]
    Failed {
        /// Exit status as the OS reports it.
        status: String,
        /// The tail of its stderr.
        stderr: String,
    },
}

/// Something that runs one POSIX `sh` command line on the device and returns its stdout.
pub trait DeviceShell {
    /// Runs `line` on the device.
    ///
    /// # Errors
    /// [`ShellError`] when the line could not be run or exited unsuccessfully.
    fn run(&self, line: &str) -> Result<String, ShellError>;
}

/// The configured rig-side command: `argv… line`.
#[derive(Debug, Clone)]
pub struct CommandShell {
    argv: Vec<String>,
    timeout: Duration,
}

impl CommandShell {
    /// A shell running `argv` (non-empty) with the line appended, killed after `timeout`.
    pub fn new(argv: Vec<String>, timeout: Duration) -> Self {
        Self { argv, timeout }
    }
}

impl DeviceShell for CommandShell {
    fn run(&self, line: &str) -> Result<String, ShellError> {
        let start_err = |source| ShellError::Start {
            argv: self.argv.clone(),
            source,
        };
        let (prog, args) = self
            .argv
            .split_first()
            .ok_or_else(|| start_err(std::io::Error::other("empty argv")))?;
        let mut child = Command::new(prog)
            .args(args)
            .arg(line)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(start_err)?;
        // Read both pipes on their own threads so a full pipe never blocks the child.
        let drain = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut buf);
                }
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out = drain(child.stdout.take().map(|r| Box::new(r) as _));
        let err = drain(child.stderr.take().map(|r| Box::new(r) as _));
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if started.elapsed() < self.timeout => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ShellError::Timeout {
                        timeout_ms: self.timeout.as_millis() as u64,
                    });
                }
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        if !status.success() {
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            return Err(ShellError::Failed {
                status: status.to_string(),
                stderr: tail.into_iter().rev().collect::<Vec<_>>().join(" / "),
            });
        }
        Ok(stdout)
    }
}

/// Why the on-device checks cannot run on this device, if they cannot.
pub fn skip_reason(config: &DeviceConfig) -> Option<String> {
    if let LinkConfig::Simulated { .. } = config.link {
        return Some(
            "simulated device: a local outpostd is not the appliance image (no systemd \
             units, and the rig host's sockets are not the device's); run on a real rig \
             with [device_checks] shell set"
                .into(),
        );
    }
    if config.device_checks.shell.is_empty() {
        return Some(
            "no [device_checks] shell command in the device TOML: these checks need a \
             shell on the appliance (serial console or USB debug link; see \
             hil-tests/README.md)"
                .into(),
        );
    }
    None
}

/// Runs on-device scenario `name` (one of [`DEVICE_SCENARIOS`]) for `config`: skipped
/// with the reason when [`skip_reason`] gives one, else through its configured shell.
pub fn run_device_scenario(name: &str, config: &DeviceConfig) -> ScenarioResult {
    if let Some(reason) = skip_reason(config) {
        return ScenarioResult::new(name).skip(reason);
    }
    let c = &config.device_checks;
    let shell = CommandShell::new(c.shell.clone(), Duration::from_millis(c.shell_timeout_ms));
    run_with_shell(name, c, &shell)
}

/// Runs on-device scenario `name` through `shell` (the seam the tests use).
pub fn run_with_shell(
    name: &str,
    config: &DeviceChecksConfig,
    shell: &dyn DeviceShell,
) -> ScenarioResult {
    let mut r = ScenarioResult::new(name);
    let outcome = match name {
        "no-inet-listeners" => no_inet_listeners(&mut r, shell),
        "unix-sockets" => unix_sockets(&mut r, config, shell),
        "units-active" => units_active(&mut r, config, shell),
        "watchdog" => watchdog(&mut r, config, shell),
        other => {
            return r.skip(format!(
                "unknown on-device scenario {other:?} (known: {})",
                DEVICE_SCENARIOS.join(", ")
            ))
        }
    };
    if let Err(e) = outcome {
        r.fail(e.to_string());
    }
    r
}

/// The shell line that prints each `/proc/net/<name>` file after a `### <name>` line
/// (a missing file, e.g. `tcp6` without IPv6, prints nothing).
fn cat_proc_net(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("echo '### {n}'; cat /proc/net/{n} 2>/dev/null"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Splits the output of [`cat_proc_net`] into `(name, text)` sections.
fn sections(out: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    for line in out.lines() {
        if let Some(name) = line.strip_prefix("### ") {
            v.push((name.trim().to_owned(), String::new()));
        } else if let Some((_, text)) = v.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    v
}

/// The device is a little-endian Linux (aarch64 Jetson): addresses in `/proc/net/*`
/// are in its byte order. Only `is_little_endian` is used by the parsers.
const DEVICE_INFO: ExplicitSystemInfo = ExplicitSystemInfo {
    boot_time_secs: 0,
    ticks_per_second: 100,
    page_size: 4096,
    is_little_endian: true,
};

/// Inet sockets from `/proc/net/{tcp,tcp6,udp,udp6}` text: `(listening, other)`,
/// each a line per socket (`tcp 0.0.0.0:22 LISTEN uid 0`). Listening = TCP `LISTEN`
/// or any UDP socket (every bound UDP socket receives datagrams).
///
/// # Errors
/// A table that does not parse, named.
pub fn inet_sockets(out: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let (mut listening, mut other) = (Vec::new(), Vec::new());
    for (name, text) in sections(out) {
        let bad = |e: procfs::ProcError| format!("/proc/net/{name} does not parse: {e}");
        if name.starts_with("tcp") {
            let t = TcpNetEntries::from_buf_read(text.as_bytes(), &DEVICE_INFO).map_err(bad)?;
            for e in t.0 {
                let line = format!(
                    "{name} {} {:?} uid {} inode {}",
                    e.local_address, e.state, e.uid, e.inode
                );
                if e.state == TcpState::Listen {
                    listening.push(line);
                } else {
                    other.push(line);
                }
            }
        } else if name.starts_with("udp") {
            let t = UdpNetEntries::from_buf_read(text.as_bytes(), &DEVICE_INFO).map_err(bad)?;
            for e in t.0 {
                listening.push(format!(
                    "{name} {} {:?} uid {} inode {}",
                    e.local_address, e.state, e.uid, e.inode
                ));
            }
        }
    }
    Ok((listening, other))
}

fn no_inet_listeners(r: &mut ScenarioResult, shell: &dyn DeviceShell) -> Result<(), ShellError> {
    let out = shell.run(&cat_proc_net(&["tcp", "tcp6", "udp", "udp6"]))?;
    match inet_sockets(&out) {
        Err(e) => r.fail(e),
        Ok((listening, other)) => {
            for l in &listening {
                r.fail(format!("listening inet socket: {l}"));
            }
            for o in &other {
                r.note(format!("inet socket (not listening): {o}"));
            }
            if listening.is_empty() {
                r.check(true, "no TCP socket in LISTEN, no UDP socket");
            }
            r.summary = format!(
                "{} listening inet sockets, {} others",
                listening.len(),
                other.len()
            );
        }
    }
    Ok(())
}

/// Paths of the Unix sockets bound to a name and not connected (listening stream or
/// seqpacket sockets, bound datagram sockets) in `/proc/net/unix` text, sorted, without
/// repeats. Abstract names start with `@`.
///
/// # Errors
/// The table does not parse.
pub fn bound_unix_sockets(text: &str) -> Result<Vec<String>, String> {
    let t = UnixNetEntries::from_buf_read(text.as_bytes())
        .map_err(|e| format!("/proc/net/unix does not parse: {e}"))?;
    let mut v: Vec<String> =
        t.0.into_iter()
            .filter(|e| e.state == UnixState::UNCONNECTED)
            .filter_map(|e| e.path.map(|p| p.display().to_string()))
            .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// Whether `path` matches `pattern` (exact, or a prefix before a trailing `*`).
pub fn socket_matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    }
}

fn unix_sockets(
    r: &mut ScenarioResult,
    c: &DeviceChecksConfig,
    shell: &dyn DeviceShell,
) -> Result<(), ShellError> {
    let out = shell.run("cat /proc/net/unix")?;
    let bound = match bound_unix_sockets(&out) {
        Ok(b) => b,
        Err(e) => {
            r.fail(e);
            return Ok(());
        }
    };
    for req in &c.unix_sockets_required {
        r.check(
            bound.iter().any(|b| socket_matches(req, b)),
            format!("required Unix socket {req} is bound"),
        );
    }
    let mut unexpected = 0;
    for b in &bound {
        let ok = c
            .unix_sockets_required
            .iter()
            .chain(&c.unix_sockets_allowed)
            .any(|p| socket_matches(p, b));
        if ok {
            r.note(format!("bound Unix socket {b} (expected)"));
        } else {
            unexpected += 1;
            r.fail(format!("unexpected bound Unix socket {b}"));
        }
    }
    r.summary = format!(
        "{} bound Unix sockets, {unexpected} unexpected",
        bound.len()
    );
    Ok(())
}

/// Quotes `s` for a POSIX shell line.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `key=value` lines of `systemctl show` into pairs, in order (blank lines between
/// units kept as `("", "")` separators).
pub fn parse_systemctl_show(out: &str) -> Vec<(String, String)> {
    out.lines()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.trim().to_owned(), v.trim().to_owned()),
            None => (String::new(), String::new()),
        })
        .collect()
}

fn units_active(
    r: &mut ScenarioResult,
    c: &DeviceChecksConfig,
    shell: &dyn DeviceShell,
) -> Result<(), ShellError> {
    let mut active = 0;
    for unit in &c.units {
        let out = shell.run(&format!(
            "systemctl show --property=LoadState,ActiveState,SubState {}",
            sh_quote(unit)
        ))?;
        let props = parse_systemctl_show(&out);
        let get = |k: &str| {
            props
                .iter()
                .find(|(key, _)| key == k)
                .map_or("?", |(_, v)| v.as_str())
        };
        let (load, state, sub) = (get("LoadState"), get("ActiveState"), get("SubState"));
        let ok = load == "loaded" && state == "active";
        active += usize::from(ok);
        r.check(
            ok,
            format!("{unit}: LoadState={load} ActiveState={state} SubState={sub} (expected loaded, active)"),
        );
    }
    r.summary = format!("{active} of {} units active", c.units.len());
    Ok(())
}

/// Whether a `WatchdogUSec` value from `systemctl show` means the watchdog is set.
pub fn watchdog_is_set(value: &str) -> bool {
    !matches!(value.trim(), "" | "0" | "infinity")
}

fn watchdog(
    r: &mut ScenarioResult,
    c: &DeviceChecksConfig,
    shell: &dyn DeviceShell,
) -> Result<(), ShellError> {
    let unit = &c.watchdog_unit;
    let out = shell.run(&format!(
        "systemctl show --property=WatchdogUSec,Type,NotifyAccess {}",
        sh_quote(unit)
    ))?;
    let props = parse_systemctl_show(&out);
    let get = |k: &str| {
        props
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let wd = get("WatchdogUSec");
    r.check(
        wd.as_deref().is_some_and(watchdog_is_set),
        format!(
            "{unit}: WatchdogUSec={} (expected set: neither 0 nor infinity)",
            wd.as_deref().unwrap_or("(missing)")
        ),
    );
    r.note(format!(
        "{unit}: Type={} NotifyAccess={}",
        get("Type").unwrap_or_else(|| "?".into()),
        get("NotifyAccess").unwrap_or_else(|| "?".into())
    ));
    r.summary = format!(
        "{unit} WatchdogUSec={}",
        wd.as_deref().unwrap_or("(missing)")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Outcome;

    /// Answers by the first line whose key the command line contains.
    struct FakeShell(Vec<(&'static str, &'static str)>);

    impl DeviceShell for FakeShell {
        fn run(&self, line: &str) -> Result<String, ShellError> {
            self.0
                .iter()
                .find(|(k, _)| line.contains(k))
                .map(|(_, v)| (*v).to_owned())
                .ok_or_else(|| ShellError::Failed {
                    status: "exit status: 127".into(),
                    stderr: format!("fake shell: no answer for {line:?}"),
                })
        }
    }

    const TCP_HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
    const UDP_HEADER: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n";
    const UNIX: &str = "Num       RefCount Protocol Flags    Type St Inode Path\n\
        0000000000000000: 00000002 00000000 00010000 0001 01 12345 /run/outpostd/outpostd.sock\n\
        0000000000000000: 00000002 00000000 00000000 0002 01 12346 /run/systemd/notify\n\
        0000000000000000: 00000003 00000000 00000000 0001 03 12347 /run/outpostd/outpostd.sock\n\
        0000000000000000: 00000003 00000000 00000000 0001 03 12348\n\
        0000000000000000: 00000002 00000000 00010000 0001 01 12349 /run/debug-agent.sock\n";

    fn clean_net() -> String {
        format!("### tcp\n{TCP_HEADER}### tcp6\n{TCP_HEADER}### udp\n{UDP_HEADER}### udp6\n")
    }

    fn run(name: &str, shell: &FakeShell) -> ScenarioResult {
        run_with_shell(name, &DeviceChecksConfig::default(), shell)
    }

    #[test]
    fn inet_listeners_fail_and_a_clean_image_passes() {
        let clean = clean_net();
        let fake = FakeShell(vec![("/proc/net/tcp", Box::leak(clean.into_boxed_str()))]);
        assert_eq!(run("no-inet-listeners", &fake).outcome, Outcome::Pass);

        // sshd on 0.0.0.0:22, a connected TCP socket, and a UDP socket on :68.
        let dirty = format!(
            "### tcp\n{TCP_HEADER}   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 1002 1 0000000000000000 20 4 30 10 -1\n### udp\n{UDP_HEADER}  100: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1003 2 0000000000000000 0\n"
        );
        let (listening, other) = inet_sockets(&dirty).unwrap();
        assert_eq!(listening.len(), 2, "{listening:?}");
        assert!(
            listening[0].starts_with("tcp 0.0.0.0:22 Listen"),
            "{listening:?}"
        );
        assert!(listening[1].starts_with("udp 0.0.0.0:68"), "{listening:?}");
        assert_eq!(other.len(), 1);
        let fake = FakeShell(vec![("/proc/net/tcp", Box::leak(dirty.into_boxed_str()))]);
        let r = run("no-inet-listeners", &fake);
        assert_eq!(r.outcome, Outcome::Fail);
        assert!(
            r.details.iter().any(|d| d.contains("0.0.0.0:22")),
            "{:?}",
            r.details
        );
    }

    #[test]
    fn only_required_and_allowed_unix_sockets_pass() {
        assert_eq!(
            bound_unix_sockets(UNIX).unwrap(),
            vec![
                "/run/debug-agent.sock",
                "/run/outpostd/outpostd.sock",
                "/run/systemd/notify"
            ]
        );
        let r = run("unix-sockets", &FakeShell(vec![("/proc/net/unix", UNIX)]));
        assert_eq!(r.outcome, Outcome::Fail);
        let failed: Vec<_> = r
            .details
            .iter()
            .filter(|d| d.starts_with("FAILED"))
            .collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].contains("/run/debug-agent.sock"));

        let clean: String = UNIX
            .lines()
            .filter(|l| !l.contains("debug-agent"))
            .map(|l| format!("{l}\n"))
            .collect();
        let fake = FakeShell(vec![("/proc/net/unix", Box::leak(clean.into_boxed_str()))]);
        assert_eq!(run("unix-sockets", &fake).outcome, Outcome::Pass);

        // The daemon's socket missing fails too.
        let r = run(
            "unix-sockets",
            &FakeShell(vec![(
                "/proc/net/unix",
                "Num RefCount Protocol Flags Type St Inode Path\n",
            )]),
        );
        assert_eq!(r.outcome, Outcome::Fail);
        assert!(socket_matches(
            "/run/systemd/*",
            "/run/systemd/journal/socket"
        ));
        assert!(!socket_matches("/run/udev/control", "/run/udev/control2"));
    }

    #[test]
    fn units_must_be_loaded_and_active() {
        let ok = FakeShell(vec![(
            "systemctl show",
            "LoadState=loaded\nActiveState=active\nSubState=running\n",
        )]);
        assert_eq!(run("units-active", &ok).outcome, Outcome::Pass);
        let failed = FakeShell(vec![(
            "systemctl show",
            "LoadState=loaded\nActiveState=failed\nSubState=failed\n",
        )]);
        assert_eq!(run("units-active", &failed).outcome, Outcome::Fail);
        let missing = FakeShell(vec![(
            "systemctl show",
            "LoadState=not-found\nActiveState=inactive\nSubState=dead\n",
        )]);
        assert_eq!(run("units-active", &missing).outcome, Outcome::Fail);
    }

    #[test]
    fn watchdog_must_be_set() {
        let set = FakeShell(vec![(
            "WatchdogUSec",
            "WatchdogUSec=10s\nType=notify\nNotifyAccess=main\n",
        )]);
        let r = run("watchdog", &set);
        assert_eq!(r.outcome, Outcome::Pass, "{:?}", r.details);
        assert_eq!(r.summary, "outpostd.service WatchdogUSec=10s");
        for unset in [
            "WatchdogUSec=0\n",
            "WatchdogUSec=infinity\n",
            "Type=simple\n",
        ] {
            let r = run("watchdog", &FakeShell(vec![("WatchdogUSec", unset)]));
            assert_eq!(r.outcome, Outcome::Fail, "{unset}");
        }
        assert!(watchdog_is_set("30000000"));
    }

    #[test]
    fn shell_errors_fail_the_scenario() {
        let r = run("watchdog", &FakeShell(vec![]));
        assert_eq!(r.outcome, Outcome::Fail);
        assert!(
            r.details.iter().any(|d| d.contains("exit status: 127")),
            "{:?}",
            r.details
        );
    }

    #[test]
    fn command_shell_runs_the_line_and_reports_failures() {
        let sh = CommandShell::new(vec!["sh".into(), "-c".into()], Duration::from_secs(10));
        assert_eq!(sh.run("echo 'a b'; echo c").unwrap(), "a b\nc\n");
        match sh.run("echo oops >&2; exit 3") {
            Err(ShellError::Failed { status, stderr }) => {
                assert!(status.contains('3'), "{status}");
                assert_eq!(stderr, "oops");
            }
            other => panic!("{other:?}"),
        }
        let slow = CommandShell::new(vec!["sh".into(), "-c".into()], Duration::from_millis(100));
        assert!(matches!(
            slow.run("sleep 5"),
            Err(ShellError::Timeout { .. })
        ));
        let absent = CommandShell::new(
            vec!["/nonexistent/console-exec".into()],
            Duration::from_secs(1),
        );
        assert!(matches!(absent.run("true"), Err(ShellError::Start { .. })));
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn skipped_with_a_reason_on_sim_and_without_a_shell() {
        let sim = DeviceConfig::from_toml(
            "name = \"sim\"\n[link]\nkind = \"simulated\"\n",
            std::path::Path::new("sim.toml"),
        )
        .unwrap();
        for name in DEVICE_SCENARIOS {
            let r = run_device_scenario(name, &sim);
            assert_eq!(r.outcome, Outcome::Skip);
            assert!(r.summary.contains("simulated device"), "{}", r.summary);
        }
        let serial = DeviceConfig::from_toml(
            "name = \"orin\"\n[link]\nkind = \"serial\"\npath = \"/dev/ttyUSB0\"\n",
            std::path::Path::new("orin.toml"),
        )
        .unwrap();
        let r = run_device_scenario("watchdog", &serial);
        assert_eq!(r.outcome, Outcome::Skip);
        assert!(
            r.summary.contains("no [device_checks] shell"),
            "{}",
            r.summary
        );
    }
}
