//! The Outpost appliance host: the `outpostd` daemon (boot sequence, transports,
//! request dispatch, status, signals) and the `outpost` client CLI. The binaries in
//! `src/bin/` are thin; the logic lives here so tests can call it.

pub mod boot;
pub mod cli;
pub mod server;
pub mod transport;
pub mod wav;
