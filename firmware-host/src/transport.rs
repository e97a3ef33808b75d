//! Transports: a serial port (UART / USB CDC-ACM), a simulated serial port (PTY pair),
//! and the local Unix socket. Each hands byte streams to [`crate::server`].

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use outpost_protocol::{encode_frame, Response, WireError, MAX_FRAME_BYTES, MAX_PAYLOAD_BYTES};
use serialport::{SerialPort, TTYPort};

use crate::server::{serve_connection, TransportKind};
use crate::state::Daemon;

/// How often blocked reads wake up to notice shutdown.
const POLL: Duration = Duration::from_millis(100);

/// Opens a real serial device and serves it on a thread.
///
/// # Errors
/// When the device cannot be opened or configured (names the device and baud rate).
pub fn spawn_serial(
    daemon: &Arc<Daemon>,
    device: &str,
    baud: u32,
) -> Result<std::thread::JoinHandle<()>> {
    let port = serialport::new(device, baud)
        .timeout(POLL)
        .open_native()
        .with_context(|| format!("cannot open serial device {device} at {baud} baud"))?;
    spawn_tty(daemon, port, device.to_string())
}

fn spawn_tty(
    daemon: &Arc<Daemon>,
    port: TTYPort,
    name: String,
) -> Result<std::thread::JoinHandle<()>> {
    let writer = port
        .try_clone_native()
        .with_context(|| format!("cannot clone the handle of {name}"))?;
    let d = Arc::clone(daemon);
    Ok(std::thread::Builder::new()
        .name("outpost-serial".into())
        .spawn(move || {
            // A serial line is one long-lived connection: when it ends (device gone),
            // log and stop serving it.
            serve_connection(
                &d,
                Box::new(port),
                Box::new(writer),
                TransportKind::Serial,
                &name,
                false,
            );
        })?)
}

/// A simulated serial port: a PTY pair whose master side the daemon serves. A client
/// opens [`Pty::device`] like a serial device. The daemon keeps the slave open too, so
/// clients may come and go without the master seeing a hang-up.
#[derive(Debug)]
pub struct Pty {
    /// Path a client opens (`/dev/pts/N`).
    pub device: String,
    /// Optional stable symlink to `device`.
    pub link: Option<PathBuf>,
    _slave: TTYPort,
}

impl Drop for Pty {
    fn drop(&mut self) {
        // Only our own link: another process may have replaced it meanwhile.
        if let Some(l) = &self.link {
            if std::fs::read_link(l).is_ok_and(|t| t == Path::new(&self.device)) {
                let _ = std::fs::remove_file(l);
            }
        }
    }
}

/// Makes way for a `--pty-link` at `link`: a dangling link (its PTY closed) is removed;
/// a link to a PTY that still exists belongs to a live process and is refused, as is
/// anything that is not a symlink.
fn claim_pty_link(link: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(link) else {
        return Ok(());
    };
    if !meta.file_type().is_symlink() {
        anyhow::bail!(
            "--pty-link {} exists and is not a symlink; refusing to replace it",
            link.display()
        );
    }
    let target = std::fs::read_link(link)
        .with_context(|| format!("cannot read --pty-link {}", link.display()))?;
    if target.exists() {
        anyhow::bail!(
            "--pty-link {} points to {}, a PTY that is still open (another outpostd?); \
             stop it first or choose another link",
            link.display(),
            target.display()
        );
    }
    std::fs::remove_file(link)
        .with_context(|| format!("cannot remove stale PTY link {}", link.display()))
}

/// Creates a PTY pair and serves its master side on a thread.
///
/// # Errors
/// When no PTY can be allocated, or the link cannot be created.
pub fn spawn_pty(
    daemon: &Arc<Daemon>,
    link: Option<&Path>,
) -> Result<(Pty, std::thread::JoinHandle<()>)> {
    let (mut master, slave) = TTYPort::pair().context("cannot allocate a PTY pair")?;
    master.set_timeout(POLL)?;
    let device = slave.name().context("the PTY slave has no path")?;
    if let Some(l) = link {
        claim_pty_link(l)?;
        std::os::unix::fs::symlink(&device, l)
            .with_context(|| format!("cannot create PTY link {} -> {device}", l.display()))?;
    }
    let handle = spawn_tty(daemon, master, format!("pty {device}"))?;
    Ok((
        Pty {
            device,
            link: link.map(Path::to_path_buf),
            _slave: slave,
        },
        handle,
    ))
}

/// A bound Unix socket file: removed on drop only while it is still the one this
/// daemon bound (same device and inode), so a daemon never deletes another's socket.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds the Unix socket and accepts clients on a thread, one thread per client, up to
/// the client bound. An existing socket file is replaced only when nothing answers on
/// it (a stale file left by a crash); one a live process serves is refused, naming its
/// pid (`SO_PEERCRED`).
///
/// # Errors
/// When the path exists and is not a socket, another process serves it, or binding
/// fails.
pub fn spawn_socket(
    daemon: &Arc<Daemon>,
    path: &Path,
) -> Result<(SocketFile, std::thread::JoinHandle<()>)> {
    use std::os::unix::fs::MetadataExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            if let Ok(live) = std::os::unix::net::UnixStream::connect(path) {
                let who = peer_credentials(&live)
                    .map_or("a running process".to_string(), |(pid, _)| {
                        format!("pid {pid}")
                    });
                anyhow::bail!(
                    "{} is served by {who} (another outpostd?); refusing to take it over: \
                     stop it first or choose another --socket path",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
        } else {
            anyhow::bail!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            );
        }
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot bind Unix socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set permissions on {}", path.display()))?;
    listener.set_nonblocking(true)?;
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?;
    let file = SocketFile {
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
    };
    let d = Arc::clone(daemon);
    let handle = std::thread::Builder::new()
        .name("outpost-accept".into())
        .spawn(move || accept_loop(&d, &listener))?;
    Ok((file, handle))
}

fn accept_loop(d: &Arc<Daemon>, listener: &UnixListener) {
    while !d.stopping.load(Ordering::Relaxed) {
        let (stream, _) = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => {
                log::warn!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let _ = stream.set_nonblocking(false);
        if !d.try_add_client() {
            let mut scratch = [0u8; MAX_PAYLOAD_BYTES];
            let mut out = [0u8; MAX_FRAME_BYTES];
            let e = Response::Error(WireError::TooManyClients {
                max: d.limits.max_clients as u16,
            });
            if let Ok(n) = encode_frame(0, &e, &mut scratch, &mut out) {
                let _ = io::Write::write_all(&mut &stream, &out[..n]);
            }
            // Read what the client sent before closing: closing a Unix socket with
            // unread input resets the peer, which would lose the answer above.
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let _ = stream.set_read_timeout(Some(Duration::from_millis(10)));
            let mut sink = [0u8; 4096];
            for _ in 0..16 {
                match io::Read::read(&mut &stream, &mut sink) {
                    Ok(n) if n > 0 => continue,
                    _ => break,
                }
            }
            log::warn!(
                "refused a client: {} connected (limit)",
                d.limits.max_clients
            );
            continue;
        }
        let _ = stream.set_read_timeout(Some(POLL));
        let (peer, admin) = match peer_credentials(&stream) {
            Some((pid, uid)) => {
                let me = nix::unistd::geteuid().as_raw();
                (format!("pid {pid} uid {uid}"), uid == 0 || uid == me)
            }
            None => ("unknown peer".to_string(), false),
        };
        let writer = match stream.try_clone() {
            Ok(w) => w,
            Err(e) => {
                log::warn!("cannot clone a client socket: {e}");
                d.release_client();
                continue;
            }
        };
        let dd = Arc::clone(d);
        let spawned = std::thread::Builder::new()
            .name("outpost-conn".into())
            .spawn(move || {
                serve_connection(
                    &dd,
                    Box::new(stream),
                    Box::new(writer),
                    TransportKind::UnixSocket,
                    &peer,
                    admin,
                );
                dd.release_client();
            });
        if let Err(e) = spawned {
            log::error!("cannot spawn a connection thread: {e}");
            d.release_client();
        }
    }
}

/// The peer's `(pid, uid)` from `SO_PEERCRED`, or `None` if the kernel does not say.
fn peer_credentials(stream: &std::os::unix::net::UnixStream) -> Option<(i32, u32)> {
    let cred = getsockopt(stream, PeerCredentials).ok()?;
    Some((cred.pid(), cred.uid()))
}
