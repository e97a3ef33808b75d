//! The `outpost` client of an Outpost device: stream audio to it over a serial port, a
//! PTY or the Unix socket, print detections and a latency summary, read its status,
//! ask it to reload. It speaks only the wire protocol (`outpost-protocol`), so it links
//! no ONNX Runtime. The binary in `src/bin/outpost.rs` is thin; the logic lives here so
//! tests (the daemon's end-to-end tests among them) can call it.

pub mod cli;
pub mod wav;
