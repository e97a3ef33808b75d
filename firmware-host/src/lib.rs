//! The Outpost appliance host: the `outpostd` daemon (boot sequence, transports,
//! request dispatch, status, signals). The binary in `src/bin/` is thin; the logic lives
//! here so tests can call it. The `outpost` client is its own crate (`client/`).

pub mod boot;
pub mod server;
pub mod state;
pub mod transport;
pub mod watchdog;
