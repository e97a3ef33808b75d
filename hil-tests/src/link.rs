//! Byte links to a device: a serial port (or a PTY slave, which is opened the same
//! way) and a Unix stream socket. Each [`Link`] hands out a boxed reader and writer
//! for [`outpost_protocol::client::Client`]; reads time out after the link's
//! poll interval so callers can enforce their own overall deadlines.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Reader half of a link.
pub type LinkReader = Box<dyn Read + Send>;
/// Writer half of a link.
pub type LinkWriter = Box<dyn Write + Send>;

/// Read poll interval used by the links in this crate: a blocked `read` returns
/// `TimedOut`/`WouldBlock` after this long so the caller can check its deadline.
pub const READ_POLL: Duration = Duration::from_millis(100);

/// Write timeout in this crate's links: a peer that stops reading for this long is
/// reported as an error rather than hanging the rig.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a link could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The serial device or PTY path could not be opened.
    #[error("cannot open serial port {path} at {baud} baud: {source}")]
    Serial {
        /// Device path.
        path: PathBuf,
        /// Baud rate asked for, in bit/s.
        baud: u32,
        /// The driver's error.
        source: serialport::Error,
    },
    /// The Unix socket could not be connected.
    #[error("cannot connect to Unix socket {path}: {source}")]
    Socket {
        /// Socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Splitting a handle into reader and writer failed.
    #[error("cannot duplicate the handle of {what}: {source}")]
    Clone {
        /// Link description.
        what: String,
        /// The OS error.
        source: io::Error,
    },
}

/// A connected byte link to a device.
pub trait Link: Send + std::fmt::Debug {
    /// Human-readable description for reports, e.g. `serial /dev/ttyUSB0 @ 921600`.
    fn description(&self) -> String;

    /// Splits the link into a reader (with a read timeout of [`READ_POLL`]) and a writer.
    ///
    /// # Errors
    /// [`LinkError::Clone`] when the OS handle cannot be duplicated.
    fn split(self: Box<Self>) -> Result<(LinkReader, LinkWriter), LinkError>;
}

/// A serial port or PTY slave in raw mode.
#[derive(Debug)]
pub struct SerialLink {
    path: PathBuf,
    baud: u32,
    port: serialport::TTYPort,
}

impl SerialLink {
    /// Opens `path` at `baud` bit/s, 8N1, no flow control, raw mode, with a read timeout
    /// of [`READ_POLL`]. For a PTY slave the baud rate is accepted and ignored.
    ///
    /// # Errors
    /// [`LinkError::Serial`] when the device does not exist, is busy (opened
    /// exclusively by another process) or refuses the settings.
    pub fn open(path: &Path, baud: u32) -> Result<Self, LinkError> {
        let port = serialport::new(path.to_string_lossy(), baud)
            .data_bits(serialport::DataBits::Eight)
            .parity(serialport::Parity::None)
            .stop_bits(serialport::StopBits::One)
            .flow_control(serialport::FlowControl::None)
            .timeout(READ_POLL)
            .open_native()
            .map_err(|source| LinkError::Serial {
                path: path.to_owned(),
                baud,
                source,
            })?;
        Ok(Self {
            path: path.to_owned(),
            baud,
            port,
        })
    }
}

impl Link for SerialLink {
    fn description(&self) -> String {
        format!("serial {} @ {} baud", self.path.display(), self.baud)
    }

    fn split(self: Box<Self>) -> Result<(LinkReader, LinkWriter), LinkError> {
        let what = self.description();
        let reader = self.port.try_clone_native().map_err(|e| LinkError::Clone {
            what,
            source: e.into(),
        })?;
        Ok((Box::new(reader), Box::new(self.port)))
    }
}

/// A connected Unix stream socket.
#[derive(Debug)]
pub struct SocketLink {
    path: PathBuf,
    stream: UnixStream,
}

impl SocketLink {
    /// Connects to the socket at `path`, with a read timeout of [`READ_POLL`] and a
    /// write timeout of [`WRITE_TIMEOUT`].
    ///
    /// # Errors
    /// [`LinkError::Socket`] when nothing listens there.
    pub fn connect(path: &Path) -> Result<Self, LinkError> {
        let err = |source| LinkError::Socket {
            path: path.to_owned(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(err)?;
        stream.set_read_timeout(Some(READ_POLL)).map_err(err)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT)).map_err(err)?;
        Ok(Self {
            path: path.to_owned(),
            stream,
        })
    }
}

impl Link for SocketLink {
    fn description(&self) -> String {
        format!("unix socket {}", self.path.display())
    }

    fn split(self: Box<Self>) -> Result<(LinkReader, LinkWriter), LinkError> {
        let reader = self.stream.try_clone().map_err(|source| LinkError::Clone {
            what: format!("unix socket {}", self.path.display()),
            source,
        })?;
        Ok((Box::new(reader), Box::new(self.stream)))
    }
}

/// True for the errors a read timeout produces (`TimedOut` on serial ports,
/// `WouldBlock` on sockets).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}
