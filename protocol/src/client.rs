//! A blocking client over any byte stream (`std` feature): serial port, PTY, Unix
//! socket, or an in-memory pipe in tests. Used by the `outpost` CLI and the HIL rig.
//! It opens nothing itself: the caller hands it a reader and a writer.
//!
//! [`Client`] is one request/response conversation. [`Client::split`] turns it into a
//! [`ClientReader`] and a [`ClientWriter`] that can live on two threads: a pacer that
//! writes frames on a schedule while another thread reads the answers as they come
//! (open-loop load, as the rig's `bench-load` does). Request ids continue where the
//! client left them.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};
use std::vec::Vec;

use crate::{
    decode_payload, encode_frame, DecodeFailure, Envelope, FrameDecoder, Request, Response,
    WireError, MAX_FRAME_BYTES, MAX_PAYLOAD_BYTES,
};

/// Bytes asked of the reader per `read` call.
const READ_CHUNK_BYTES: usize = 8192;

/// One received frame, owned; [`ResponseFrame::decode`] borrows a [`Response`] from it.
#[derive(Debug, Clone)]
pub struct ResponseFrame {
    payload: Vec<u8>,
    /// When the frame's last byte was read: the instant the `read` call that delivered
    /// it returned (frames completed by one `read` share it).
    pub received_at: Instant,
}

impl ResponseFrame {
    /// Decodes the envelope.
    ///
    /// # Errors
    /// [`DecodeFailure`] when the payload is not a response of this protocol version.
    pub fn decode(&self) -> Result<Envelope<Response<'_>>, DecodeFailure> {
        decode_payload(&self.payload)
    }

    /// `Error(TooManyClients)`: the device refused the connection (sent with request id
    /// 0, before it read any request) and closes it.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self.decode(),
            Ok(Envelope {
                request_id: 0,
                body: Response::Error(WireError::TooManyClients { .. }),
                ..
            })
        )
    }

    /// The request id the frame carries, also when its body does not decode (0 for
    /// frame-level errors the daemon could not attribute).
    pub fn request_id(&self) -> u32 {
        match self.decode() {
            Ok(env) => env.request_id,
            Err(e) => e.request_id,
        }
    }
}

/// What arrived: a frame, or a frame spoiled on the way (bad CRC, …).
#[derive(Debug, Clone)]
pub enum Received {
    /// A CRC-checked frame.
    Frame(ResponseFrame),
    /// A damaged frame; the stream continues.
    Damaged(WireError),
}

/// The receiving half: reads bytes, cuts them into frames, checks their CRC.
///
/// Made by [`Client::split`] (or [`ClientReader::new`]); owns its reader.
#[derive(Debug)]
pub struct ClientReader<R: Read> {
    reader: R,
    decoder: FrameDecoder<MAX_FRAME_BYTES>,
    read_buf: Vec<u8>,
    read_pos: usize,
    read_len: usize,
    read_at: Instant,
    ready: VecDeque<Received>,
}

impl<R: Read> ClientReader<R> {
    /// A reader half over `reader`.
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            decoder: FrameDecoder::new(),
            read_buf: vec![0; READ_CHUNK_BYTES],
            read_pos: 0,
            read_len: 0,
            read_at: Instant::now(),
            ready: VecDeque::new(),
        }
    }

    /// Blocks until the next frame arrives (or the reader's timeout elapses). Frames
    /// put back by [`Client::call`] come first, in their order of arrival.
    ///
    /// # Errors
    /// I/O errors from the reader (`TimedOut`/`WouldBlock` on timeout), or
    /// `UnexpectedEof` when the peer closed.
    pub fn recv(&mut self) -> io::Result<Received> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Ok(r);
            }
            if self.read_pos == self.read_len {
                let n = self.reader.read(&mut self.read_buf)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed the connection",
                    ));
                }
                self.read_pos = 0;
                self.read_len = n;
                self.read_at = Instant::now();
            }
            while self.read_pos < self.read_len {
                let b = self.read_buf[self.read_pos];
                self.read_pos += 1;
                if let Some(r) = self.decoder.push(b) {
                    self.ready.push_back(match r {
                        Ok(p) => Received::Frame(ResponseFrame {
                            payload: p.to_vec(),
                            received_at: self.read_at,
                        }),
                        Err(e) => Received::Damaged(e),
                    });
                    break;
                }
            }
        }
    }

    /// When the last `read` that returned bytes returned: the arrival time of the frame
    /// (or damaged frame) [`ClientReader::recv`] returned last. Before any read, when the
    /// reader was made.
    pub fn last_read_at(&self) -> Instant {
        self.read_at
    }

    /// Puts frames back in front of the queue, oldest first, for the next `recv` calls.
    fn unread(&mut self, frames: Vec<Received>) {
        for f in frames.into_iter().rev() {
            self.ready.push_front(f);
        }
    }
}

/// The sending half: encodes requests into frames and numbers them.
///
/// Made by [`Client::split`] (or [`ClientWriter::new`]); owns its writer.
#[derive(Debug)]
pub struct ClientWriter<W: Write> {
    writer: W,
    next_id: u32,
    scratch: Vec<u8>,
    out: Vec<u8>,
}

impl<W: Write> ClientWriter<W> {
    /// A writer half over `writer`; the first request id is 1.
    pub fn new(writer: W) -> Self {
        Self {
            writer,
            next_id: 1,
            scratch: vec![0; MAX_PAYLOAD_BYTES],
            out: vec![0; MAX_FRAME_BYTES],
        }
    }

    /// The request id the next [`ClientWriter::send`] will use (ids count up from 1,
    /// wrap around and skip 0).
    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    /// Sends a request with a fresh request id and returns that id. The frame is
    /// written and flushed before this returns.
    ///
    /// # Errors
    /// I/O errors from the writer; `InvalidInput` if the request does not fit a frame.
    pub fn send(&mut self, request: &Request<'_>) -> io::Result<u32> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.send_with_id(id, request)?;
        Ok(id)
    }

    /// Sends a request with a given request id.
    ///
    /// # Errors
    /// As [`ClientWriter::send`].
    pub fn send_with_id(&mut self, id: u32, request: &Request<'_>) -> io::Result<()> {
        let n = encode_frame(id, request, &mut self.scratch, &mut self.out)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.writer.write_all(&self.out[..n])?;
        self.writer.flush()
    }

    /// Writes a lone frame delimiter so the peer drops any partial frame a previous
    /// user of the line left behind. Call it first on a serial line.
    ///
    /// # Errors
    /// I/O errors from the writer.
    pub fn resync(&mut self) -> io::Result<()> {
        self.send_raw(&[0])
    }

    /// Writes raw bytes (for fault injection: corrupt or partial frames).
    ///
    /// # Errors
    /// I/O errors from the writer.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    /// The underlying writer (e.g. to shut a socket down).
    pub fn writer_mut(&mut self) -> &mut W {
        &mut self.writer
    }
}

/// Blocking request/response client: a [`ClientReader`] and a [`ClientWriter`] used
/// together from one thread.
#[derive(Debug)]
pub struct Client<R: Read, W: Write> {
    rx: ClientReader<R>,
    tx: ClientWriter<W>,
    /// How long [`Client::call`] waits for its answer (default 5 s).
    pub call_timeout: Duration,
}

impl<R: Read, W: Write> Client<R, W> {
    /// A client over `reader` / `writer` (e.g. two handles of one socket).
    pub fn new(reader: R, writer: W) -> Self {
        Self {
            rx: ClientReader::new(reader),
            tx: ClientWriter::new(writer),
            call_timeout: Duration::from_secs(5),
        }
    }

    /// Splits the client into its reading and its writing half, to be used from two
    /// threads. Frames already received but not yet returned stay with the reader;
    /// request ids continue from where this client was.
    pub fn split(self) -> (ClientReader<R>, ClientWriter<W>) {
        (self.rx, self.tx)
    }

    /// Sends a request with a fresh request id and returns that id.
    ///
    /// # Errors
    /// I/O errors from the writer; `InvalidInput` if the request does not fit a frame.
    pub fn send(&mut self, request: &Request<'_>) -> io::Result<u32> {
        self.tx.send(request)
    }

    /// Sends a request with a given request id.
    ///
    /// # Errors
    /// As [`Client::send`].
    pub fn send_with_id(&mut self, id: u32, request: &Request<'_>) -> io::Result<()> {
        self.tx.send_with_id(id, request)
    }

    /// Writes a lone frame delimiter so the peer drops any partial frame a previous
    /// user of the line left behind. Call it first on a serial line.
    ///
    /// # Errors
    /// I/O errors from the writer.
    pub fn resync(&mut self) -> io::Result<()> {
        self.tx.resync()
    }

    /// Writes raw bytes (for fault injection: corrupt or partial frames).
    ///
    /// # Errors
    /// I/O errors from the writer.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tx.send_raw(bytes)
    }

    /// Blocks until the next frame arrives (or the reader's timeout elapses).
    ///
    /// # Errors
    /// I/O errors from the reader (`TimedOut`/`WouldBlock` on timeout), or
    /// `UnexpectedEof` when the peer closed.
    pub fn recv(&mut self) -> io::Result<Received> {
        self.rx.recv()
    }

    /// Sends `request` and waits up to [`Client::call_timeout`] for the frame answering
    /// it, or an error about the whole connection (`TooManyClients`, request id 0: the
    /// device refused it and closes it); frames for other request ids that arrive
    /// meanwhile are kept, in order, for later `recv` calls. Reader time-outs shorter
    /// than the call time-out are retried.
    ///
    /// # Errors
    /// As [`Client::send`] and [`Client::recv`]; `TimedOut` when no answer came in time.
    pub fn call(&mut self, request: &Request<'_>) -> io::Result<ResponseFrame> {
        let id = self.send(request)?;
        let until = Instant::now() + self.call_timeout;
        let mut others = Vec::new();
        let result = loop {
            match self.rx.recv() {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                    ) && Instant::now() < until =>
                {
                    continue
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock) => {
                    break Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no answer within the call time-out",
                    ))
                }
                Ok(Received::Frame(f)) => {
                    if f.request_id() == id || f.is_connection_error() {
                        break Ok(f);
                    }
                    others.push(Received::Frame(f));
                }
                Ok(d) => others.push(d),
                Err(e) => break Err(e),
            }
        };
        self.rx.unread(others);
        result
    }

    /// The underlying writer (e.g. to shut a socket down).
    pub fn writer_mut(&mut self) -> &mut W {
        self.tx.writer_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode_frame, FrameDecoder, Request, Response};
    use std::os::unix::net::UnixStream;
    use std::thread;

    /// Encodes `response` as a frame with `id`.
    fn frame(id: u32, response: &Response<'_>) -> Vec<u8> {
        let mut scratch = vec![0; MAX_PAYLOAD_BYTES];
        let mut out = vec![0; MAX_FRAME_BYTES];
        let n = encode_frame(id, response, &mut scratch, &mut out).unwrap();
        out[..n].to_vec()
    }

    /// A peer that answers every Ping with a Pong carrying its nonce, until EOF.
    fn echo_peer(peer: UnixStream) -> thread::JoinHandle<usize> {
        thread::spawn(move || {
            let mut r = peer.try_clone().unwrap();
            let mut w = peer;
            let mut dec: FrameDecoder<MAX_FRAME_BYTES> = FrameDecoder::new();
            let mut buf = [0u8; 256];
            let mut answered = 0;
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) | Err(_) => return answered,
                    Ok(n) => n,
                };
                for &b in &buf[..n] {
                    let Some(Ok(p)) = dec.push(b) else { continue };
                    let env = decode_payload::<Request<'_>>(p).unwrap();
                    if let Request::Ping { nonce } = env.body {
                        w.write_all(&frame(env.request_id, &Response::Pong { nonce }))
                            .unwrap();
                        answered += 1;
                    }
                }
            }
        })
    }

    fn pong_nonce(f: &ResponseFrame) -> u32 {
        match f.decode().unwrap().body {
            Response::Pong { nonce } => nonce,
            other => panic!("expected Pong, got {other:?}"),
        }
    }

    #[test]
    fn call_keeps_answers_to_other_ids_in_order() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let peer = echo_peer(theirs);
        let mut c = Client::new(ours.try_clone().unwrap(), ours);
        let a = c.send(&Request::Ping { nonce: 10 }).unwrap();
        let b = c.send(&Request::Ping { nonce: 11 }).unwrap();
        let answer = c.call(&Request::Ping { nonce: 12 }).unwrap();
        assert_eq!((a, b, answer.request_id()), (1, 2, 3));
        assert_eq!(pong_nonce(&answer), 12);
        // The two earlier answers were kept for recv, oldest first.
        for (id, nonce) in [(a, 10), (b, 11)] {
            let Received::Frame(f) = c.recv().unwrap() else {
                panic!("damaged")
            };
            assert_eq!((f.request_id(), pong_nonce(&f)), (id, nonce));
        }
        drop(c);
        assert_eq!(peer.join().unwrap(), 3);
    }

    #[test]
    fn split_halves_work_from_two_threads_and_keep_numbering() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let peer = echo_peer(theirs);
        let mut c = Client::new(ours.try_clone().unwrap(), ours);
        c.call(&Request::Ping { nonce: 1 }).unwrap();
        let (mut rx, mut tx) = c.split();
        assert_eq!(tx.next_id(), 2, "ids continue after the split");
        let writer = thread::spawn(move || {
            let ids: Vec<u32> = (0..50)
                .map(|i| tx.send(&Request::Ping { nonce: 100 + i }).unwrap())
                .collect();
            (tx, ids)
        });
        let mut got = Vec::new();
        while got.len() < 50 {
            match rx.recv().unwrap() {
                Received::Frame(f) => {
                    assert!(f.received_at <= Instant::now());
                    assert_eq!(f.received_at, rx.last_read_at());
                    got.push((f.request_id(), pong_nonce(&f)));
                }
                Received::Damaged(e) => panic!("damaged frame: {e:?}"),
            }
        }
        let (tx, ids) = writer.join().unwrap();
        assert_eq!(ids, (2..52).collect::<Vec<u32>>());
        assert_eq!(
            got,
            (0..50).map(|i| (2 + i, 100 + i)).collect::<Vec<_>>(),
            "every answer once, in order"
        );
        drop((rx, tx));
        assert_eq!(peer.join().unwrap(), 51);
    }

    #[test]
    fn reader_reports_damage_and_recovers_then_eof() {
        let mut bytes = frame(7, &Response::Pong { nonce: 1 });
        bytes[2] = bytes[2].wrapping_add(1).max(1); // spoil it, without making a delimiter
        bytes.extend(frame(8, &Response::Pong { nonce: 2 }));
        let mut rx = ClientReader::new(io::Cursor::new(bytes));
        assert!(matches!(rx.recv().unwrap(), Received::Damaged(_)));
        let Received::Frame(f) = rx.recv().unwrap() else {
            panic!("expected the second frame")
        };
        assert_eq!((f.request_id(), pong_nonce(&f)), (8, 2));
        let eof = rx.recv().unwrap_err();
        assert_eq!(eof.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn call_times_out_on_a_silent_peer() {
        let (ours, _silent) = UnixStream::pair().unwrap();
        ours.set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let mut c = Client::new(ours.try_clone().unwrap(), ours);
        c.call_timeout = Duration::from_millis(50);
        let e = c.call(&Request::Ping { nonce: 1 }).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    }

    #[test]
    fn writer_ids_wrap_and_skip_zero() {
        let mut tx = ClientWriter::new(io::sink());
        tx.next_id = u32::MAX;
        assert_eq!(tx.send(&Request::Ping { nonce: 0 }).unwrap(), u32::MAX);
        assert_eq!(tx.next_id(), 1);
    }
}
