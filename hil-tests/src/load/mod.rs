//! `outpost-hil bench-load`: the simulated device under real-time load.
//!
//! Every stream sends one 80 ms frame every 80 ms by the wall clock (open loop: the
//! next frame goes out on schedule whether or not the previous one was answered), the
//! streams' phases spread evenly over the 80 ms period. Streams are spread over Unix
//! socket connections (at most the handshake's `max_streams`, ≤ 8, per connection) and,
//! on the PTY path, multiplexed on the single PTY line (which, being one connection, also
//! carries at most `max_streams`; any more go to socket connections beside it). Each
//! connection has one writer thread (the pacer) and one reader thread.
//!
//! Per frame the rig records the instant the frame's last byte was written and the
//! instant its answer's last byte was read; afterwards every frame is matched with its
//! answers by request id. Invariants (a failure makes the exit code 1):
//!
//! * every frame is answered exactly once (a result, `DeadlineMissed`, `Rejected`, or
//!   `Error` all count as the one answer);
//! * no answer is **late**: written → answer read ≤ deadline + the late allowance
//!   ([`DEFAULT_LATE_ALLOWANCE_US`], transport + the rig's own wake-up).
//!
//! Deadline misses and rejections are the daemon keeping its promise under load; they
//! are counted and reported, not failures.
//!
//! Scenarios: [`LoadScenario`]. See `hil-tests/README.md`.
//!
//! | module | purpose |
//! |---|---|
//! | [`plan`] | which streams go on which connection, phases, the capacity search (pure) |
//! | `conn` | one connection through `outpost-protocol`'s client, split into a writer and a reader half |
//! | `rt` | `SCHED_FIFO` for the rig's own I/O threads |
//! | [`tally`] | frames matched with their answers, counts and latency summaries |
//! | [`run`] | one run: pacer and reader threads, memory sampling, the daemon's counters |
//! | [`hog`] | the CPU hog beside the daemon |
//! | [`flood`] | hostile connections on the daemon's socket (the `flood` scenario) |
//! | [`scenarios`] | `load`, `capacity`, `overload`, `hog` in order: [`run_bench_load`] |
//! | [`report`] | [`LoadReport`]: Markdown and JSON |
//!
//! The `/proc` readers (CPU time, memory, steal, load average) are the crate's
//! [`crate::procinfo`].

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::clips::Clip;
use crate::sim::SimOptions;

mod conn;
pub mod flood;
pub mod hog;
pub mod plan;
pub mod report;
mod rt;
pub mod run;
pub mod scenarios;
pub mod tally;

pub use flood::{Flood, FloodKind, FloodStats};
pub use hog::{find_stress_ng, Hog};
pub use plan::{confirm_steps, phase, plan_connections, search_capacity, ConnPlan, Transport};
pub use report::{CapacityResult, FloodResult, LoadReport, ResourceSnapshot};
pub use run::{CounterDelta, MemTrace, RunResult, RunSpec};
pub use scenarios::run_bench_load;
pub use tally::TallySummary;

/// One frame per stream per period: 1280 samples at 16 kHz.
pub const FRAME_PERIOD: Duration = Duration::from_millis(80);
/// Default late allowance in µs: an answer read more than deadline + this after the
/// frame's last byte was written is late. It covers the transport both ways on a local
/// socket or PTY (tens of µs) and the rig's reader waking up (a SCHED_FIFO thread: tens
/// of µs; a normal one under a CPU hog: up to a few ms), with margin.
pub const DEFAULT_LATE_ALLOWANCE_US: u64 = 2_000;
/// Streams the daemon serves at once over all clients (`SchedulerConfig::max_streams`).
pub const DAEMON_MAX_STREAMS: usize = 64;
/// Streams per connection when the handshake says nothing smaller (`Limits`).
pub const STREAMS_PER_CONN: usize = 8;
/// After the last frame is written, how long the rig waits for outstanding answers;
/// a frame still unanswered then is counted unanswered.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout for set-up calls (handshake, open/close stream, status).
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Memory growth over an overload run above which the report says "not flat", in kB.
pub const MEMORY_FLAT_KB: u64 = 4 * 1024;

/// A `bench-load` scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LoadScenario {
    /// 1, 8, 32 real-time streams over the socket and over the PTY.
    Load,
    /// The most streams served with zero misses and zero rejections.
    Capacity,
    /// 2× capacity: every frame answered once, on time.
    Overload,
    /// The 8-stream run with a busy loop on every core beside it.
    Hog,
    /// One victim stream without, then with hostile connections on the socket.
    Flood,
}

impl LoadScenario {
    /// All, in run order.
    pub const ALL: [LoadScenario; 5] = [
        LoadScenario::Load,
        LoadScenario::Capacity,
        LoadScenario::Overload,
        LoadScenario::Hog,
        LoadScenario::Flood,
    ];

    /// What runs without `--scenario`: all but `flood` (a robustness run, asked for by
    /// name).
    pub const DEFAULT: [LoadScenario; 4] = [
        LoadScenario::Load,
        LoadScenario::Capacity,
        LoadScenario::Overload,
        LoadScenario::Hog,
    ];

    /// Name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            LoadScenario::Load => "load",
            LoadScenario::Capacity => "capacity",
            LoadScenario::Overload => "overload",
            LoadScenario::Hog => "hog",
            LoadScenario::Flood => "flood",
        }
    }

    /// Parses a command-line name.
    ///
    /// # Errors
    /// Unknown names, listing the known ones.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| format!("unknown scenario {s:?} (load, capacity, overload, hog, flood)"))
    }
}

/// What runs beside the daemon in the `hog` scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HogKind {
    /// `stress-ng --cpu N` if it is on `PATH`, else spinning threads.
    Auto,
    /// `stress-ng --cpu N` (error if absent).
    StressNg,
    /// N threads of this process spinning (normal scheduling policy).
    Spin,
}

/// `bench-load` options.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// How to start the daemon.
    pub sim: SimOptions,
    /// Clips to cycle through (empty: synthetic tone + noise).
    pub clips: Vec<Clip>,
    /// Scenarios to run, in order.
    pub scenarios: Vec<LoadScenario>,
    /// Stream counts of the `load` scenario.
    pub stream_counts: Vec<usize>,
    /// Length of each `load`, `overload` and `hog` run.
    pub duration: Duration,
    /// Length of the run confirming the capacity.
    pub capacity_duration: Duration,
    /// Length of each capacity search probe.
    pub probe_duration: Duration,
    /// Capacity to use for `overload` when `capacity` is not run (else it is searched
    /// with probes only).
    pub capacity_hint: Option<usize>,
    /// Streams in the `hog` runs.
    pub hog_streams: usize,
    /// Busy loops in the `hog` runs (default: available cores).
    pub hog_workers: usize,
    /// Hog implementation.
    pub hog_kind: HogKind,
    /// Also run the socket hog row against a daemon started with `--no-rt`.
    pub hog_no_rt: bool,
    /// Late allowance in µs.
    pub late_allowance_us: u64,
    /// SCHED_FIFO priority of the rig's reader and writer threads (`None`: normal).
    pub rig_rt_priority: Option<u8>,
    /// Where daemon logs are kept (`outpostd-<scenario>.log`).
    pub log_dir: Option<PathBuf>,
    /// `flood`: length of the victim's run without and of the one with the flood.
    pub flood_phase: Duration,
    /// `flood`: wait after the flood before the last look at the daemon's resources.
    pub flood_settle: Duration,
    /// `flood`: connect/disconnect churn, connections per minute.
    pub flood_churn_per_min: u32,
    /// `flood`: streams of the victim client (one connection).
    pub flood_victim_streams: usize,
    /// `flood`: seed of the garbage.
    pub seed: u64,
}

/// Logical CPUs of this machine.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_round_trip() {
        for s in LoadScenario::ALL {
            assert_eq!(LoadScenario::parse(s.name()), Ok(s));
        }
        assert!(LoadScenario::parse("nope").is_err());
    }
}
