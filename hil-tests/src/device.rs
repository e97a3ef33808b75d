//! Devices under test, configured by a TOML file per device (`hil-tests/devices/`).
//!
//! ```toml
//! name = "sim"
//! description = "local outpostd over a PTY pair and a Unix socket"
//!
//! [link]
//! kind = "simulated"            # "simulated" | "serial" | "socket"
//! args = ["--workers", "2"]     # simulated: extra outpostd arguments
//!
//! [expect]
//! labels = 13                   # handshake: labels announced, including "none"
//!
//! [scenarios]
//! clients = 4                   # concurrency: parallel clients
//! commands_min_accuracy = 1.0   # commands: fraction of clips that must pass
//! ```
//!
//! A real device: `kind = "serial"`, `path = "/dev/ttyUSB0"`, `baud = 921600`, and
//! optionally `socket = "/run/outpost/outpostd.sock"` when the rig runs on the
//! appliance itself (a second link for the fault-isolation and concurrency checks).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::link::{Link, LinkError, SerialLink, SocketLink};
use crate::sim::{SimError, SimOptions, SimulatedDevice};

/// One device config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Short name for reports.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// How to reach the device.
    pub link: LinkConfig,
    /// What the handshake must announce.
    #[serde(default)]
    pub expect: Expect,
    /// Scenario parameters.
    #[serde(default)]
    pub scenarios: ScenarioConfig,
    /// The on-device checks (a shell on the appliance; see [`crate::device_checks`]).
    #[serde(default)]
    pub device_checks: DeviceChecksConfig,
}

/// How to reach the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LinkConfig {
    /// A local `outpostd --dev --pty --socket ...` started by the rig.
    Simulated {
        /// Extra daemon arguments.
        #[serde(default)]
        args: Vec<String>,
    },
    /// A real device on a serial port (UART or USB CDC-ACM).
    Serial {
        /// Device path, e.g. `/dev/ttyUSB0`.
        path: PathBuf,
        /// Baud rate in bit/s.
        #[serde(default = "default_baud")]
        baud: u32,
        /// Optional Unix socket of the same daemon (when the rig runs on the appliance).
        #[serde(default)]
        socket: Option<PathBuf>,
    },
    /// A daemon reached only through its Unix socket.
    Socket {
        /// Socket path.
        path: PathBuf,
    },
}

fn default_baud() -> u32 {
    921_600
}

/// What the handshake must announce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Number of labels, including `none`.
    #[serde(default = "default_labels")]
    pub labels: usize,
}

fn default_labels() -> usize {
    13
}

impl Default for Expect {
    fn default() -> Self {
        Self {
            labels: default_labels(),
        }
    }
}

/// Scenario parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioConfig {
    /// Parallel clients in `concurrency`.
    #[serde(default = "default_clients")]
    pub clients: usize,
    /// Fraction (0–1) of clips that must be recognised exactly for `commands` to pass.
    #[serde(default = "default_accuracy")]
    pub commands_min_accuracy: f64,
    /// Longest wait for any single answer, in ms.
    #[serde(default = "default_answer_timeout_ms")]
    pub answer_timeout_ms: u64,
}

fn default_clients() -> usize {
    4
}
fn default_accuracy() -> f64 {
    1.0
}
fn default_answer_timeout_ms() -> u64 {
    5_000
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        Self {
            clients: default_clients(),
            commands_min_accuracy: default_accuracy(),
            answer_timeout_ms: default_answer_timeout_ms(),
        }
    }
}

/// The on-device checks: how the rig gets a shell on the appliance, and what it must
/// find there. The image has no network and no ssh: the shell comes over the serial
/// console (the Orin's debug UART, a USB-serial adapter on the rig) or a USB debug link,
/// through a helper the rig provides; on the appliance itself it is `["sh", "-c"]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceChecksConfig {
    /// argv of a rig-side command that runs one POSIX `sh` command line on the device:
    /// the line is appended as the last argument; the command's stdout must be the
    /// line's stdout and its exit status the line's. Empty: the checks are skipped.
    #[serde(default)]
    pub shell: Vec<String>,
    /// Longest time one shell command may take, in ms (a console log-in included).
    #[serde(default = "default_shell_timeout_ms")]
    pub shell_timeout_ms: u64,
    /// systemd units that must be active (`units-active`).
    #[serde(default = "default_units")]
    pub units: Vec<String>,
    /// The unit whose systemd watchdog (`WatchdogUSec`) must be set (`watchdog`).
    #[serde(default = "default_watchdog_unit")]
    pub watchdog_unit: String,
    /// Unix socket paths that must be bound on the device (`unix-sockets`).
    #[serde(default = "default_required_sockets")]
    pub unix_sockets_required: Vec<String>,
    /// Further Unix socket paths that may be bound; a trailing `*` matches any rest
    /// (`/run/systemd/*`), a leading `@` names an abstract socket. Anything bound that
    /// is neither required nor allowed fails `unix-sockets`.
    #[serde(default = "default_allowed_sockets")]
    pub unix_sockets_allowed: Vec<String>,
}

fn default_shell_timeout_ms() -> u64 {
    20_000
}
fn default_units() -> Vec<String> {
    vec!["outpostd.service".into()]
}
fn default_watchdog_unit() -> String {
    "outpostd.service".into()
}
fn default_required_sockets() -> Vec<String> {
    // The daemon's socket in the image (yocto-layer: RuntimeDirectory=outpostd).
    vec!["/run/outpostd/outpostd.sock".into()]
}
fn default_allowed_sockets() -> Vec<String> {
    // systemd, journald and udevd of a systemd image without D-Bus services.
    vec![
        "/run/systemd/*".into(),
        "/run/udev/control".into(),
        "/run/dbus/system_bus_socket".into(),
    ]
}

impl Default for DeviceChecksConfig {
    fn default() -> Self {
        Self {
            shell: Vec::new(),
            shell_timeout_ms: default_shell_timeout_ms(),
            units: default_units(),
            watchdog_unit: default_watchdog_unit(),
            unix_sockets_required: default_required_sockets(),
            unix_sockets_allowed: default_allowed_sockets(),
        }
    }
}

/// Why a device config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read device config {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The TOML is invalid or has unknown fields.
    #[error("invalid device config {path}: {source}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Parser error.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("invalid device config {path}: {problem}")]
    Value {
        /// File.
        path: PathBuf,
        /// What is wrong and what is expected.
        problem: String,
    },
}

impl DeviceConfig {
    /// Parses a config from TOML text; `origin` names it in errors.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for bad TOML or unknown fields, [`ConfigError::Value`] for
    /// out-of-range values.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let cfg: DeviceConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            source: Box::new(e),
        })?;
        let bad = |problem: String| ConfigError::Value {
            path: origin.to_owned(),
            problem,
        };
        if !(0.0..=1.0).contains(&cfg.scenarios.commands_min_accuracy) {
            return Err(bad(format!(
                "scenarios.commands_min_accuracy = {} (expected 0.0 to 1.0)",
                cfg.scenarios.commands_min_accuracy
            )));
        }
        if cfg.scenarios.clients == 0 || cfg.scenarios.clients > 64 {
            return Err(bad(format!(
                "scenarios.clients = {} (expected 1 to 64)",
                cfg.scenarios.clients
            )));
        }
        if cfg.device_checks.shell_timeout_ms == 0 {
            return Err(bad(
                "device_checks.shell_timeout_ms = 0 (expected a time in ms)".into(),
            ));
        }
        if let LinkConfig::Serial { baud: 0, .. } = cfg.link {
            return Err(bad("link.baud = 0 (expected a baud rate in bit/s)".into()));
        }
        Ok(cfg)
    }

    /// Reads and parses a config file.
    ///
    /// # Errors
    /// As [`DeviceConfig::from_toml`], plus [`ConfigError::Read`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// `Some(reason)` when the device is not attached and its runs must be skipped
    /// (a serial port or socket path that does not exist).
    pub fn unavailable_reason(&self) -> Option<String> {
        match &self.link {
            LinkConfig::Simulated { .. } => None,
            LinkConfig::Serial { path, .. } if !path.exists() => Some(format!(
                "serial port {} does not exist: no device attached to this rig",
                path.display()
            )),
            LinkConfig::Socket { path } if !path.exists() => Some(format!(
                "socket {} does not exist: no daemon is listening",
                path.display()
            )),
            _ => None,
        }
    }
}

/// A device ready to be connected to.
#[derive(Debug)]
pub struct Device {
    /// The config it came from.
    pub config: DeviceConfig,
    primary: Endpoint,
    socket: Option<PathBuf>,
    sim: Option<SimulatedDevice>,
}

#[derive(Debug, Clone)]
enum Endpoint {
    Serial { path: PathBuf, baud: u32 },
    Socket(PathBuf),
}

/// Why a device could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The simulated daemon did not start.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// The device is not attached (runs are skipped, not passed).
    #[error("device {name} skipped: {reason}")]
    Unavailable {
        /// Device name.
        name: String,
        /// Why.
        reason: String,
    },
}

impl Device {
    /// Brings the device up: starts the simulated daemon (with `sim` options) or checks
    /// that the real device's port exists.
    ///
    /// # Errors
    /// [`DeviceError::Unavailable`] when the port is missing, [`DeviceError::Sim`] when
    /// the daemon does not start.
    pub fn bring_up(config: DeviceConfig, sim: &SimOptions) -> Result<Self, DeviceError> {
        if let Some(reason) = config.unavailable_reason() {
            return Err(DeviceError::Unavailable {
                name: config.name.clone(),
                reason,
            });
        }
        match &config.link {
            LinkConfig::Simulated { args } => {
                let mut opts = sim.clone();
                opts.extra_args.extend(args.iter().cloned());
                let dev = SimulatedDevice::start(&opts)?;
                Ok(Self::simulated(config, dev))
            }
            LinkConfig::Serial { path, baud, socket } => Ok(Self {
                primary: Endpoint::Serial {
                    path: path.clone(),
                    baud: *baud,
                },
                socket: socket.clone(),
                config,
                sim: None,
            }),
            LinkConfig::Socket { path } => Ok(Self {
                primary: Endpoint::Socket(path.clone()),
                socket: Some(path.clone()),
                config,
                sim: None,
            }),
        }
    }

    /// Wraps an already started simulated device.
    pub fn simulated(config: DeviceConfig, dev: SimulatedDevice) -> Self {
        Self {
            primary: Endpoint::Serial {
                path: dev.pty_path().to_owned(),
                baud: default_baud(),
            },
            socket: Some(dev.socket_path().to_owned()),
            config,
            sim: Some(dev),
        }
    }

    /// Opens the primary link: the serial port / PTY, or the socket for socket-only devices.
    ///
    /// # Errors
    /// [`LinkError`] when it cannot be opened.
    pub fn open_primary(&self) -> Result<Box<dyn Link>, LinkError> {
        match &self.primary {
            Endpoint::Serial { path, baud } => Ok(Box::new(SerialLink::open(path, *baud)?)),
            Endpoint::Socket(path) => Ok(Box::new(SocketLink::connect(path)?)),
        }
    }

    /// True when the primary link is a serial port or PTY (one client at a time).
    pub fn primary_is_serial(&self) -> bool {
        matches!(self.primary, Endpoint::Serial { .. })
    }

    /// Opens a new socket connection, if the device has a socket.
    ///
    /// # Errors
    /// [`LinkError`] when it cannot be connected.
    pub fn open_socket(&self) -> Option<Result<Box<dyn Link>, LinkError>> {
        self.socket
            .as_ref()
            .map(|p| SocketLink::connect(p).map(|l| Box::new(l) as Box<dyn Link>))
    }

    /// True when the device has a socket for extra connections.
    pub fn has_socket(&self) -> bool {
        self.socket.is_some()
    }

    /// The simulated daemon, if this device is one.
    pub fn sim(&self) -> Option<&SimulatedDevice> {
        self.sim.as_ref()
    }

    /// The simulated daemon, mutably.
    pub fn sim_mut(&mut self) -> Option<&mut SimulatedDevice> {
        self.sim.as_mut()
    }
}
