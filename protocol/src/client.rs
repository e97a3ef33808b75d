//! A blocking client over any byte stream (`std` feature): serial port, PTY, Unix
//! socket, or an in-memory pipe in tests. Used by the `outpost` CLI and the HIL rig.
//! It opens nothing itself: the caller hands it a reader and a writer.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::vec::Vec;

use crate::{
    decode_payload, encode_frame, DecodeFailure, Envelope, FrameDecoder, Request, Response,
    WireError, MAX_FRAME_BYTES, MAX_PAYLOAD_BYTES,
};

/// One received frame, owned; [`ResponseFrame::decode`] borrows a [`Response`] from it.
#[derive(Debug, Clone)]
pub struct ResponseFrame {
    payload: Vec<u8>,
    /// When the frame's last byte was read.
    pub received_at: std::time::Instant,
}

impl ResponseFrame {
    /// Decodes the envelope.
    ///
    /// # Errors
    /// [`DecodeFailure`] when the payload is not a v1 response.
    pub fn decode(&self) -> Result<Envelope<Response<'_>>, DecodeFailure> {
        decode_payload(&self.payload)
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

/// Blocking request/response client.
#[derive(Debug)]
pub struct Client<R: Read, W: Write> {
    reader: R,
    writer: W,
    decoder: FrameDecoder<MAX_FRAME_BYTES>,
    read_buf: Vec<u8>,
    read_pos: usize,
    read_len: usize,
    ready: VecDeque<Received>,
    next_id: u32,
    scratch: Vec<u8>,
    out: Vec<u8>,
    /// How long [`Client::call`] waits for its answer (default 5 s).
    pub call_timeout: std::time::Duration,
}

impl<R: Read, W: Write> Client<R, W> {
    /// A client over `reader` / `writer` (e.g. two handles of one socket).
    pub fn new(reader: R, writer: W) -> Self {
        Self {
            reader,
            writer,
            decoder: FrameDecoder::new(),
            read_buf: vec![0; 8192],
            read_pos: 0,
            read_len: 0,
            ready: VecDeque::new(),
            next_id: 1,
            scratch: vec![0; MAX_PAYLOAD_BYTES],
            out: vec![0; MAX_FRAME_BYTES],
            call_timeout: std::time::Duration::from_secs(5),
        }
    }

    /// Sends a request with a fresh request id and returns that id.
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
    /// As [`Client::send`].
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

    /// Blocks until the next frame arrives (or the reader's timeout elapses).
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
            }
            let now = std::time::Instant::now();
            while self.read_pos < self.read_len {
                let b = self.read_buf[self.read_pos];
                self.read_pos += 1;
                if let Some(r) = self.decoder.push(b) {
                    self.ready.push_back(match r {
                        Ok(p) => Received::Frame(ResponseFrame {
                            payload: p.to_vec(),
                            received_at: now,
                        }),
                        Err(e) => Received::Damaged(e),
                    });
                    break;
                }
            }
        }
    }

    /// Sends `request` and waits up to [`Client::call_timeout`] for the frame answering
    /// it; frames for other request ids that arrive meanwhile are kept, in order, for
    /// later `recv` calls. Reader time-outs shorter than the call time-out are retried.
    ///
    /// # Errors
    /// As [`Client::send`] and [`Client::recv`]; `TimedOut` when no answer came in time.
    pub fn call(&mut self, request: &Request<'_>) -> io::Result<ResponseFrame> {
        let id = self.send(request)?;
        let until = std::time::Instant::now() + self.call_timeout;
        let mut others = Vec::new();
        let result = loop {
            match self.recv() {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                    ) && std::time::Instant::now() < until =>
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
                    let rid = match f.decode() {
                        Ok(env) => env.request_id,
                        Err(e) => e.request_id,
                    };
                    if rid == id {
                        break Ok(f);
                    }
                    others.push(Received::Frame(f));
                }
                Ok(d) => others.push(d),
                Err(e) => break Err(e),
            }
        };
        for o in others.into_iter().rev() {
            self.ready.push_front(o);
        }
        result
    }

    /// The underlying writer (e.g. to shut a socket down).
    pub fn writer_mut(&mut self) -> &mut W {
        &mut self.writer
    }
}
