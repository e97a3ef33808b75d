//! The `flood` scenario's hostile clients: connections on the daemon's Unix socket that
//! send random garbage, ~200 kB without a frame delimiter, half frames that never
//! finish, bursts of bad-CRC frames, and connect/disconnect churn. The daemon throttles a
//! connection after 16 errors in a row and closes it after 256, so every worker
//! reconnects whenever its connection ends. Started with [`Flood::start`], stopped (and
//! its counts returned) with [`Flood::stop`].

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use outpost_protocol::Request;
use serde::Serialize;

use crate::faults::{bad_crc_frame, valid_frame};

/// Bytes of one no-delimiter flood before the connection is dropped.
pub const NO_DELIMITER_BYTES: usize = 200 * 1024;
/// Bad-CRC frames per burst.
pub const BAD_CRC_BURST: usize = 64;
/// Pause between bad-CRC bursts.
pub const BAD_CRC_PAUSE: Duration = Duration::from_millis(50);
/// How long a half frame is held open before the connection is dropped.
pub const HALF_FRAME_HOLD: Duration = Duration::from_secs(3);
/// Random garbage a connection sends at most before it is dropped (the daemon normally
/// closes it first, at 256 errors ≈ 64 KiB of random bytes).
pub const GARBAGE_MAX_BYTES: usize = 1024 * 1024;
/// Default connect/disconnect churn, connections per minute.
pub const DEFAULT_CHURN_PER_MIN: u32 = 1200;

/// What one flood worker sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FloodKind {
    /// Random bytes (a `0x00` about every 256 bytes: short garbage frames).
    Garbage,
    /// [`NO_DELIMITER_BYTES`] of non-zero bytes, then the connection is dropped.
    NoDelimiter,
    /// The first half of a valid Ping frame, held [`HALF_FRAME_HOLD`], then dropped.
    HalfFrame,
    /// Bursts of [`BAD_CRC_BURST`] Pings with a flipped CRC bit, [`BAD_CRC_PAUSE`] apart.
    BadCrc,
    /// Connect and disconnect at once, paced to a rate per minute.
    Churn,
}

impl FloodKind {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            FloodKind::Garbage => "random garbage",
            FloodKind::NoDelimiter => "200 kB without delimiter",
            FloodKind::HalfFrame => "half frames never finished",
            FloodKind::BadCrc => "bad-CRC bursts",
            FloodKind::Churn => "connect/disconnect churn",
        }
    }
}

/// The workers of a flood: kind and how many connections of it at once. At most 9
/// connections at once, so with the victim and the rig's status connections the daemon's
/// 16-client limit is not reached by design (a refusal is still counted).
pub const FLOOD_WORKERS: [(FloodKind, usize); 5] = [
    (FloodKind::Garbage, 2),
    (FloodKind::NoDelimiter, 1),
    (FloodKind::HalfFrame, 2),
    (FloodKind::BadCrc, 2),
    (FloodKind::Churn, 1),
];

/// Counts of one kind of flood worker.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FloodStats {
    /// The kind's name.
    pub kind: String,
    /// Workers (connections at once).
    pub workers: usize,
    /// Connections made.
    pub connections: u64,
    /// Connections that could not be made.
    pub connect_failures: u64,
    /// Bytes written.
    pub bytes_sent: u64,
    /// Frames read back (answers, mostly `Error`), counted by delimiter.
    pub answers_read: u64,
    /// Connections the daemon ended (EOF, reset or broken pipe) while the worker still
    /// used them.
    pub closed_by_daemon: u64,
}

impl FloodStats {
    fn add(&mut self, o: &FloodStats) {
        self.workers += o.workers;
        self.connections += o.connections;
        self.connect_failures += o.connect_failures;
        self.bytes_sent += o.bytes_sent;
        self.answers_read += o.answers_read;
        self.closed_by_daemon += o.closed_by_daemon;
    }
}

/// Running flood workers.
#[derive(Debug)]
pub struct Flood {
    stop: Arc<AtomicBool>,
    threads: Vec<(FloodKind, JoinHandle<FloodStats>)>,
}

/// One connection of a worker: written to with a short timeout, drained of answers
/// without waiting.
struct FloodConn {
    s: UnixStream,
}

/// How a write or drain ended.
enum Io {
    Ok,
    /// The daemon ended the connection.
    Closed,
    /// The daemon stopped reading for a while (throttled): not an end.
    Stalled,
}

impl FloodConn {
    fn connect(path: &Path) -> std::io::Result<Self> {
        let s = UnixStream::connect(path)?;
        s.set_write_timeout(Some(Duration::from_millis(200)))?;
        s.set_read_timeout(Some(Duration::from_millis(1)))?;
        Ok(Self { s })
    }

    fn write(&mut self, bytes: &[u8], st: &mut FloodStats) -> Io {
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.s.write(rest) {
                Ok(0) => return Io::Closed,
                Ok(n) => {
                    st.bytes_sent += n as u64;
                    rest = &rest[n..];
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Io::Stalled
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Io::Closed,
            }
        }
        Io::Ok
    }

    /// Reads what the daemon has sent so far (answers are counted by their `0x00`).
    fn drain(&mut self, st: &mut FloodStats) -> Io {
        let mut buf = [0u8; 8192];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => return Io::Closed,
                Ok(n) => st.answers_read += buf[..n].iter().filter(|&&b| b == 0).count() as u64,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Io::Ok
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Io::Closed,
            }
        }
    }
}

/// Sleeps up to `d` in short steps; false when told to stop.
fn nap(stop: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

fn worker(
    kind: FloodKind,
    socket: &Path,
    seed: u64,
    churn_per_min: u32,
    stop: &AtomicBool,
) -> FloodStats {
    let mut st = FloodStats {
        kind: kind.name().to_owned(),
        workers: 1,
        ..Default::default()
    };
    let mut rng = fastrand::Rng::with_seed(seed);
    let churn_gap = Duration::from_secs_f64(60.0 / f64::from(churn_per_min.max(1)));
    let mut next_churn = Instant::now();
    let mut nonce = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let mut c = match FloodConn::connect(socket) {
            Ok(c) => c,
            Err(_) => {
                st.connect_failures += 1;
                nap(stop, Duration::from_millis(20));
                continue;
            }
        };
        st.connections += 1;
        // How the connection ended: by the daemon (true) or by the worker.
        let mut closed = false;
        match kind {
            FloodKind::Garbage => {
                let mut buf = [0u8; 4096];
                let mut sent = 0;
                while sent < GARBAGE_MAX_BYTES && !stop.load(Ordering::Relaxed) {
                    rng.fill(&mut buf);
                    let w = c.write(&buf, &mut st);
                    if matches!(w, Io::Closed) || matches!(c.drain(&mut st), Io::Closed) {
                        closed = true;
                        break;
                    }
                    sent += buf.len();
                }
            }
            FloodKind::NoDelimiter => {
                let mut buf = [0u8; 4096];
                let mut sent = 0;
                while sent < NO_DELIMITER_BYTES && !stop.load(Ordering::Relaxed) {
                    rng.fill(&mut buf);
                    for b in &mut buf {
                        *b |= 1; // never 0x00
                    }
                    let n = buf.len().min(NO_DELIMITER_BYTES - sent);
                    let w = c.write(&buf[..n], &mut st);
                    if matches!(w, Io::Closed) || matches!(c.drain(&mut st), Io::Closed) {
                        closed = true;
                        break;
                    }
                    if matches!(w, Io::Ok) {
                        sent += n;
                    }
                }
            }
            FloodKind::HalfFrame => {
                nonce = nonce.wrapping_add(1);
                let f = valid_frame(nonce, &Request::Ping { nonce });
                if matches!(c.write(&f[..f.len() / 2], &mut st), Io::Closed) {
                    closed = true;
                } else {
                    let end = Instant::now() + HALF_FRAME_HOLD;
                    while Instant::now() < end && nap(stop, Duration::from_millis(100)) {
                        if matches!(c.drain(&mut st), Io::Closed) {
                            closed = true;
                            break;
                        }
                    }
                }
            }
            FloodKind::BadCrc => {
                while !stop.load(Ordering::Relaxed) {
                    let mut burst = Vec::new();
                    for _ in 0..BAD_CRC_BURST {
                        nonce = nonce.wrapping_add(1);
                        burst.extend_from_slice(&bad_crc_frame(nonce, nonce));
                    }
                    let w = c.write(&burst, &mut st);
                    if matches!(w, Io::Closed) || matches!(c.drain(&mut st), Io::Closed) {
                        closed = true;
                        break;
                    }
                    nap(stop, BAD_CRC_PAUSE);
                }
            }
            FloodKind::Churn => {
                // Connected: drop it at once, then wait for the next slot of the pace.
                next_churn += churn_gap;
                let now = Instant::now();
                if next_churn > now {
                    drop(c);
                    nap(stop, next_churn - now);
                } else {
                    // Behind (connects slower than the pace): do not try to catch up.
                    next_churn = now;
                }
                continue;
            }
        }
        if closed {
            st.closed_by_daemon += 1;
        }
    }
    st
}

impl Flood {
    /// Starts the [`FLOOD_WORKERS`] against the Unix socket `socket`; `churn_per_min`
    /// paces the churn worker; `seed` makes the garbage reproducible.
    ///
    /// # Errors
    /// A worker thread cannot be spawned.
    pub fn start(socket: &Path, seed: u64, churn_per_min: u32) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut i = 0u64;
        for (kind, n) in FLOOD_WORKERS {
            for _ in 0..n {
                i += 1;
                let stop = Arc::clone(&stop);
                let socket: PathBuf = socket.to_owned();
                let seed = seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let h = std::thread::Builder::new()
                    .name(format!("flood-{i}"))
                    .spawn(move || worker(kind, &socket, seed, churn_per_min, &stop))?;
                threads.push((kind, h));
            }
        }
        Ok(Self { stop, threads })
    }

    /// Stops every worker, closes its connection and returns the counts per kind, in
    /// [`FLOOD_WORKERS`] order.
    pub fn stop(self) -> Vec<FloodStats> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out: Vec<(FloodKind, FloodStats)> = Vec::new();
        for (kind, h) in self.threads {
            let st = h.join().unwrap_or_default();
            match out.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, acc)) => acc.add(&st),
                None => out.push((kind, st)),
            }
        }
        out.into_iter().map(|(_, s)| s).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_stays_under_the_daemon_client_limit() {
        let conns: usize = FLOOD_WORKERS.iter().map(|w| w.1).sum();
        assert!(conns + 2 < 16, "{conns} flood connections");
    }

    #[test]
    fn stats_add_up() {
        let mut a = FloodStats {
            workers: 1,
            connections: 2,
            bytes_sent: 10,
            ..Default::default()
        };
        a.add(&FloodStats {
            workers: 1,
            connections: 3,
            closed_by_daemon: 1,
            ..Default::default()
        });
        assert_eq!((a.workers, a.connections, a.bytes_sent), (2, 5, 10));
        assert_eq!(a.closed_by_daemon, 1);
    }
}
