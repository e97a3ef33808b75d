//! systemd integration: `READY=1` once the daemon serves, and watchdog pings
//! (`WATCHDOG=1`) that stop when the deadline timer stops.
//!
//! Under `Type=notify` with `WatchdogSec=`, systemd sets `NOTIFY_SOCKET` and
//! `WATCHDOG_USEC`; without them (a shell, the tests, the rig's simulated device) every
//! call here does nothing. A ping is sent at most every half watchdog period, and only
//! while the serving scheduler's deadline timer has gone round its loop within that
//! half period ([`Scheduler::deadline_timer_age`]): a daemon whose deadline timer is
//! stuck can no longer keep its promise, and systemd restarts it. In safe mode there is
//! no scheduler and the daemon pings as long as its main loop runs.
//!
//! [`Scheduler::deadline_timer_age`]: outpost_runtime::scheduler::Scheduler::deadline_timer_age

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::state::Daemon;

/// The systemd watchdog as configured for this process (`WATCHDOG_USEC`).
#[derive(Debug)]
pub struct Watchdog {
    /// Half the watchdog period: the ping interval and the heartbeat age allowed.
    interval: Option<Duration>,
    last_ping: Instant,
    warned: bool,
}

impl Watchdog {
    /// Reads `WATCHDOG_USEC` / `WATCHDOG_PID` (systemd's `sd_watchdog_enabled`).
    pub fn from_env() -> Self {
        Self::with_period(sd_notify::watchdog_enabled())
    }

    /// A watchdog of `period` (`None`: disabled).
    pub fn with_period(period: Option<Duration>) -> Self {
        Self {
            interval: period.map(|p| p / 2),
            last_ping: Instant::now(),
            warned: false,
        }
    }

    /// The ping interval (half the period), or `None` when no watchdog is set.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// Whether the daemon is healthy enough to ping: no scheduler (safe mode), or its
    /// deadline timer's heartbeat is younger than the ping interval.
    pub fn healthy(&self, daemon: &Daemon) -> bool {
        let Some(interval) = self.interval else {
            return true;
        };
        daemon
            .serving()
            .scheduler
            .as_ref()
            .is_none_or(|s| Duration::from_micros(s.deadline_timer_age().as_micros()) < interval)
    }

    /// Called from the daemon's main loop: pings when an interval has passed and the
    /// daemon is [`healthy`](Self::healthy). Returns whether a ping was sent.
    pub fn tick(&mut self, daemon: &Daemon) -> bool {
        let Some(interval) = self.interval else {
            return false;
        };
        if self.last_ping.elapsed() < interval {
            return false;
        }
        if !self.healthy(daemon) {
            if !self.warned {
                log::error!(
                    "deadline timer stalled: no watchdog ping (systemd will restart the daemon)"
                );
                self.warned = true;
            }
            return false;
        }
        self.warned = false;
        self.last_ping = Instant::now();
        if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog]) {
            log::warn!("watchdog ping failed: {e}");
        }
        true
    }
}

/// Tells systemd the daemon serves (`READY=1`, with a one-line `STATUS=`). Does nothing
/// outside systemd.
pub fn notify_ready(status: &str) {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]) {
        log::warn!("cannot notify systemd: {e}");
    }
}

/// Tells systemd the daemon is stopping (`STOPPING=1`). Does nothing outside systemd.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}
