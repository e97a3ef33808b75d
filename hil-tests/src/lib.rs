//! `outpost-hil`: the Outpost hardware-in-the-loop rig.
//!
//! It drives a device only through the wire protocol (`outpost-protocol`), as a field
//! client would: over a real serial port, over a Unix socket, or against a simulated
//! device (a local `outpostd` serving a PTY pair and a socket).
//!
//! * [`link`]: the [`link::Link`] trait with serial/PTY and Unix-socket links.
//! * [`device`]: device TOML configs and bringing a device up.
//! * [`sim`]: starting and stopping a local `outpostd`; its `READY` line.
//! * [`session`]: a protocol session with timeouts and per-frame latency records.
//! * [`clips`]: `clips.tsv` and WAVs from `scripts/make-clips`, cut into frames.
//! * [`faults`]: hand-built bad frames for fault injection.
//! * [`scenario`]: `handshake`, `commands`, `faults`, `concurrency`.
//! * [`device_checks`]: on-device checks of the image through a shell on it (no
//!   listening inet socket, expected Unix sockets, units active, watchdog set).
//! * [`report`], [`stats`]: JSON / Markdown reports, latency percentiles, PNG plots.
//! * [`bench`]: closed-loop latency per path.
//! * [`load`]: `bench-load`: real-time streams under load, capacity, overload, CPU hog.
//! * [`procinfo`]: `/proc` readers (CPU time, memory, open fds, threads, steal, load
//!   average).
//! * [`powercut`]: `power-cut`: SIGKILL of `outpost-provision install` and of `outpostd`
//!   during a reload, at seeded random points, on real A/B slot directories.
//! * [`runner`]: `outpost-hil run`.
//!
//! See `hil-tests/README.md` for how to run it.
#![deny(missing_docs)]

pub mod bench;
pub mod clips;
pub mod device;
pub mod device_checks;
pub mod faults;
pub mod link;
pub mod load;
pub mod powercut;
pub mod procinfo;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod session;
pub mod sim;
pub mod stats;
