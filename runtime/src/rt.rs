//! Real-time setup where the system permits it (docs/DESIGN.md §4): `SCHED_FIFO` priorities
//! for the deadline timer (highest) and connection I/O; inference workers either
//! `SCHED_FIFO` below them or, by default, `SCHED_OTHER` at nice −10 (see
//! [`WorkerPolicy`]); stage-2 verifier workers under `SCHED_IDLE`; locking the
//! process's memory (`mlockall`) so no page fault lands on the hot path; optional CPU
//! pinning of the inference workers. Without the privilege (`CAP_SYS_NICE`,
//! `CAP_IPC_LOCK` or a matching `RLIMIT_RTPRIO`) the daemon logs one warning per kind of
//! setting and runs with normal scheduling.
//!
//! Linux's real-time throttling (`/proc/sys/kernel/sched_rt_runtime_us`, 95 % by
//! default) keeps a runaway FIFO thread from locking the machine up.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::libc;
use nix::sched::{sched_setaffinity, CpuSet};
use nix::sys::mman::{mlockall, MlockAllFlags};
use nix::unistd::Pid;

/// Which thread asks for real-time scheduling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The deadline timer: it must run at the deadline even when workers are busy.
    DeadlineTimer,
    /// Transport readers and writers: they timestamp arrivals and write answers.
    Io,
    /// Inference workers.
    Worker,
    /// Stage-2 verifier workers: `SCHED_IDLE` whenever real-time setup is on, so a
    /// verification only ever gets CPU time no frame worker wants (their deadline is
    /// 30 ms, a verification's 250 ms). At nice 0 beside nice −10 frame workers it still
    /// took ~10 % of a busy core: at 32 real-time streams 45 of 8 000 frames missed
    /// their deadline against 0 without verifications (`outpost-hil bench-load`).
    Verifier,
}

/// How inference workers are scheduled.
///
/// Workers are the only threads that can fill every core. As `SCHED_FIFO` they then
/// trip the kernel's real-time throttling (`sched_rt_runtime_us`), which freezes every
/// real-time thread, the deadline timer included: measured on this 2-core machine at
/// 46 real-time streams, 97 answers arrived late, 40 of them late even by the daemon's
/// clock. At nice −10 under `SCHED_OTHER` they still get ~90 % of a core against a
/// nice-0 CPU hog (CFS weights 9 548 vs 1 024), and the FIFO timer and I/O threads
/// always pre-empt them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerPolicy {
    /// `SCHED_OTHER` at this nice value (−20..=19).
    Nice(i8),
    /// `SCHED_FIFO` at the base priority.
    Fifo,
}

/// Real-time settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtConfig {
    /// Base `SCHED_FIFO` priority (1..=98); `None` keeps normal scheduling. The timer
    /// runs at base + 2, I/O at base + 1, workers at base.
    pub fifo_base: Option<u8>,
    /// Lock all current and future pages in memory.
    pub lock_memory: bool,
    /// CPUs the inference workers may run on (`None`: any).
    pub worker_cpus: Option<Vec<usize>>,
    /// Scheduling of inference workers (only when `fifo_base` is set).
    pub workers: WorkerPolicy,
}

impl Default for RtConfig {
    /// FIFO base priority 10, workers at nice −10, memory locked, no pinning.
    fn default() -> Self {
        Self {
            fifo_base: Some(10),
            lock_memory: true,
            worker_cpus: None,
            workers: WorkerPolicy::Nice(-10),
        }
    }
}

impl RtConfig {
    /// No real-time setup at all.
    pub fn off() -> Self {
        Self {
            fifo_base: None,
            lock_memory: false,
            worker_cpus: None,
            workers: WorkerPolicy::Nice(-10),
        }
    }

    /// The `SCHED_FIFO` priority of `role`, or `None` for normal scheduling.
    fn priority(&self, role: Role) -> Option<i32> {
        let base = i32::from(self.fifo_base?.clamp(1, 96));
        match role {
            Role::DeadlineTimer => Some(base + 2),
            Role::Io => Some(base + 1),
            Role::Worker => (self.workers == WorkerPolicy::Fifo).then_some(base),
            Role::Verifier => None,
        }
    }
}

static WARNED_FIFO: AtomicBool = AtomicBool::new(false);
static WARNED_NICE: AtomicBool = AtomicBool::new(false);
static WARNED_AFFINITY: AtomicBool = AtomicBool::new(false);

/// Applies the scheduling policy for `role` to the calling thread. Returns `false` (after
/// one warning per process) when the system refuses it.
pub fn apply_to_current_thread(cfg: &RtConfig, role: Role) -> bool {
    let mut ok = true;
    if let Some(prio) = cfg.priority(role) {
        let param = libc::sched_param {
            sched_priority: prio,
        };
        // nix wraps neither pthread_setschedparam nor setpriority, hence libc here.
        // SAFETY: pthread_self() is the calling thread; `param` is a valid sched_param.
        let rc =
            unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
        if rc != 0 {
            ok = false;
            if !WARNED_FIFO.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "real-time scheduling refused ({}); running with normal scheduling, tails will be longer under load \
                     (grant CAP_SYS_NICE or RLIMIT_RTPRIO >= {prio} to enable SCHED_FIFO)",
                    std::io::Error::from_raw_os_error(rc)
                );
            }
        }
    }
    if let (Role::Worker, Some(_), WorkerPolicy::Nice(nice)) = (role, cfg.fifo_base, cfg.workers) {
        let tid = nix::unistd::gettid().as_raw() as libc::id_t;
        // SAFETY: setpriority on our own thread id has no memory-safety preconditions.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, i32::from(nice)) };
        if rc != 0 {
            ok = false;
            if !WARNED_NICE.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "nice {nice} for inference workers refused ({}); they run at normal priority",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    if let (Role::Verifier, Some(_)) = (role, cfg.fifo_base) {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pthread_self() is the calling thread; `param` is a valid sched_param.
        let rc =
            unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_IDLE, &param) };
        if rc != 0 {
            ok = false;
            log::warn!(
                "SCHED_IDLE for the verifier refused ({}); it competes with the inference workers",
                std::io::Error::from_raw_os_error(rc)
            );
        }
    }
    if role == Role::Worker {
        if let Some(cpus) = &cfg.worker_cpus {
            let mut set = CpuSet::new();
            for &c in cpus.iter().filter(|&&c| c < CpuSet::count()) {
                let _ = set.set(c);
            }
            if let Err(e) = sched_setaffinity(Pid::from_raw(0), &set) {
                ok = false;
                if !WARNED_AFFINITY.swap(true, Ordering::Relaxed) {
                    log::warn!("CPU pinning to {cpus:?} refused ({e}); workers float");
                }
            }
        }
    }
    ok
}

/// Puts the calling thread back under normal scheduling (`SCHED_OTHER`, nice 10): for a
/// transport thread whose peer sends only garbage, so decoding it can no longer take the
/// CPU from inference workers or well-behaved connections. Returns `false` when the
/// system refuses (it does not for lowering one's own priority).
pub fn demote_current_thread() -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pthread_self() is the calling thread; `param` is a valid sched_param.
    let rc =
        unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_OTHER, &param) };
    let tid = nix::unistd::gettid().as_raw() as libc::id_t;
    // SAFETY: setpriority on our own thread id has no memory-safety preconditions.
    let nice = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 10) };
    rc == 0 && nice == 0
}

/// Locks the process's memory if configured. Returns `false` (with one warning) when
/// refused.
pub fn lock_memory(cfg: &RtConfig) -> bool {
    if !cfg.lock_memory {
        return true;
    }
    if let Err(e) = mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE) {
        log::warn!(
            "mlockall refused ({e}); pages may be swapped or faulted in on the hot path (grant CAP_IPC_LOCK)"
        );
        return false;
    }
    log::info!("memory locked (mlockall)");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_order_timer_above_io_above_workers() {
        let c = RtConfig::default();
        let (t, i, w) = (
            c.priority(Role::DeadlineTimer),
            c.priority(Role::Io),
            c.priority(Role::Worker),
        );
        assert!(t > i && i > w, "{t:?} {i:?} {w:?}");
        assert_eq!(RtConfig::off().priority(Role::DeadlineTimer), None);
    }

    #[test]
    fn applying_off_changes_nothing_and_succeeds() {
        assert!(apply_to_current_thread(&RtConfig::off(), Role::Worker));
        assert!(lock_memory(&RtConfig::off()));
    }
}
