//! One connection of a run, through `outpost-protocol`'s client split in two: the
//! [`ClientWriter`] goes to the pacer thread, the [`ClientReader`] to the reader thread.
//! Here: opening a connection (resynchronise, Ping, Hello, open its streams), closing
//! it, and reading answers with the rig's time-outs.

use std::io;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use outpost_protocol::client::{Client, ClientReader, ClientWriter, Received};
use outpost_protocol::{Hello, OpenStream, Request, FRAME_SAMPLES, SAMPLE_RATE_HZ};

use super::plan::{ConnPlan, Transport};
use super::SETUP_TIMEOUT;
use crate::link::{is_timeout, Link, LinkReader, LinkWriter, SerialLink, SocketLink};
use crate::scenario::CLIENT_NAME;
use crate::session::{Answer, AnswerKind};
use crate::sim::SimulatedDevice;

/// The sending half of a connection.
pub(super) type Tx = ClientWriter<LinkWriter>;
/// The receiving half of a connection.
pub(super) type Rx = ClientReader<LinkReader>;

/// A connected, handshaken connection with its streams open.
pub(super) struct Conn {
    /// Its streams.
    pub(super) plan: ConnPlan,
    /// Name in problems and errors, e.g. `conn 2 (socket)`.
    pub(super) desc: String,
    /// Sending half.
    pub(super) tx: Tx,
    /// Receiving half.
    pub(super) rx: Rx,
    /// The largest deadline the daemon gave its streams, in µs.
    pub(super) deadline_us: u32,
    /// Stage 2's deadline from the handshake, in µs after a verification's end frame;
    /// 0: the bundle has no verifier.
    pub(super) verify_deadline_us: u32,
}

/// Sends a request; returns its id and the instant its last byte was written (the
/// writer flushes before returning).
///
/// # Errors
/// I/O errors from the link.
pub(super) fn send(tx: &mut Tx, req: &Request<'_>) -> io::Result<(u32, Instant)> {
    let id = tx.send(req)?;
    Ok((id, Instant::now()))
}

/// One receive: blocks until an answer arrives or the link's read poll interval
/// passes, and pushes the answer (if any) onto `out`, stamped with the instant the read
/// that completed it returned. A damaged frame becomes an answer with request id 0.
///
/// # Errors
/// I/O errors other than the poll time-out; `UnexpectedEof` when the daemon closed the
/// connection.
pub(super) fn poll(rx: &mut Rx, out: &mut Vec<Answer>) -> io::Result<()> {
    match rx.recv() {
        Ok(Received::Frame(f)) => out.push(Answer::from_frame(&f)),
        Ok(Received::Damaged(e)) => out.push(Answer {
            request_id: 0,
            kind: AnswerKind::Damaged(e),
            received_at: rx.last_read_at(),
        }),
        Err(e) if is_timeout(&e) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection",
            ))
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Waits up to `timeout` for the answer to `id`, dropping answers to other ids (such
/// as a late answer on the PTY line from an earlier run).
///
/// # Errors
/// I/O errors, or no answer in time; both name `doing`.
pub(super) fn wait(
    rx: &mut Rx,
    id: u32,
    timeout: Duration,
    doing: &str,
) -> anyhow::Result<AnswerKind> {
    let end = Instant::now() + timeout;
    let mut got = Vec::new();
    loop {
        poll(rx, &mut got).with_context(|| format!("reading the answer to {doing}"))?;
        if let Some(g) = got.drain(..).find(|g| g.request_id == id) {
            return Ok(g.kind);
        }
        anyhow::ensure!(
            Instant::now() < end,
            "no answer to {doing} within {} ms",
            timeout.as_millis()
        );
    }
}

/// Sends a set-up request and waits up to [`SETUP_TIMEOUT`] for its answer.
fn call(tx: &mut Tx, rx: &mut Rx, req: &Request<'_>, doing: &str) -> anyhow::Result<AnswerKind> {
    let (id, _) = send(tx, req).with_context(|| format!("sending {doing}"))?;
    wait(rx, id, SETUP_TIMEOUT, doing)
}

/// Opens the connection `plan` asks for on `dev`, resynchronises the line, shakes
/// hands and opens its streams.
///
/// # Errors
/// The link cannot be opened, or an answer is missing or of the wrong kind.
pub(super) fn open_conn(dev: &SimulatedDevice, plan: &ConnPlan) -> anyhow::Result<Conn> {
    let link: Box<dyn Link> = match plan.transport {
        Transport::Pty => Box::new(SerialLink::open(dev.pty_path(), 921_600)?),
        Transport::Socket => Box::new(SocketLink::connect(dev.socket_path())?),
    };
    let desc = link.description();
    let (r, w) = link.split()?;
    let (mut rx, mut tx) = Client::new(r, w).split();
    // Resynchronise (stale bytes on the PTY line from an earlier run), then a handshake,
    // which on a serial line also closes streams an earlier session left open.
    tx.resync().context("resync delimiter")?;
    let nonce = 0x4c4f_4144; // "LOAD"
    match call(&mut tx, &mut rx, &Request::Ping { nonce }, "Ping")? {
        AnswerKind::Pong { nonce: n } if n == nonce => {}
        other => anyhow::bail!("{desc}: Ping answered {}", other.describe()),
    }
    let verify_deadline_us = match call(
        &mut tx,
        &mut rx,
        &Request::Hello(Hello {
            client: CLIENT_NAME,
        }),
        "Hello",
    )? {
        AnswerKind::Hello(h) => h.verify_deadline_us,
        other => anyhow::bail!("{desc}: Hello answered {}", other.describe()),
    };
    let mut deadline_us = 0;
    for &(sid, _) in &plan.streams {
        let req = Request::OpenStream(OpenStream {
            stream_id: sid,
            sample_rate_hz: SAMPLE_RATE_HZ,
            frame_samples: FRAME_SAMPLES as u16,
            deadline_us: 0,
        });
        match call(&mut tx, &mut rx, &req, "OpenStream")? {
            AnswerKind::StreamOpened {
                stream_id,
                deadline_us: d,
            } if stream_id == sid => deadline_us = deadline_us.max(d),
            other => anyhow::bail!("{desc}: OpenStream {sid} answered {}", other.describe()),
        }
    }
    Ok(Conn {
        plan: plan.clone(),
        desc,
        tx,
        rx,
        deadline_us,
        verify_deadline_us,
    })
}

/// Closes the connection's streams (best effort: the daemon also drops them when a
/// socket closes, and a new handshake on the PTY line closes them).
pub(super) fn close_conn(mut c: Conn) {
    for &(sid, _) in &c.plan.streams {
        if let Ok((id, _)) = send(&mut c.tx, &Request::CloseStream { stream_id: sid }) {
            let _ = wait(&mut c.rx, id, Duration::from_secs(2), "CloseStream");
        }
    }
}
