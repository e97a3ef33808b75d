//! Real-time priority for the rig's own I/O threads (the pacer and the reader of each
//! connection), so that what `bench-load` measures is the daemon, not the rig's own
//! wake-ups. Without the privilege (`CAP_SYS_NICE` or `RLIMIT_RTPRIO`) the rig warns
//! once and runs with normal scheduling; the report says which it was.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use nix::libc;

static RT_WARNED: AtomicBool = AtomicBool::new(false);

/// Puts the calling thread under `SCHED_FIFO` at `priority` (1–99); `false` (and one
/// warning per process) when not permitted.
pub(super) fn make_thread_rt(priority: u8) -> bool {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // nix 0.30 wraps neither pthread_setschedparam nor sched_setscheduler (as in the
    // daemon's runtime/src/rt.rs), hence its libc re-export here.
    // SAFETY: pthread_self() is the calling thread's valid handle, and `param` is a
    // fully initialised sched_param that outlives the call.
    let rc = unsafe {
        libc::pthread_setschedparam(nix::sys::pthread::pthread_self(), libc::SCHED_FIFO, &param)
    };
    if rc != 0 && !RT_WARNED.swap(true, Ordering::Relaxed) {
        log::warn!(
            "bench-load: cannot run the rig's I/O threads SCHED_FIFO {priority}: {} (continuing with normal scheduling)",
            io::Error::from_raw_os_error(rc)
        );
    }
    rc == 0
}

/// Whether the rig may run threads `SCHED_FIFO` at `priority`: tried once on a
/// throwaway thread (a thread's policy does not leak back to the caller).
pub(super) fn rt_permitted(priority: u8) -> bool {
    std::thread::spawn(move || make_thread_rt(priority))
        .join()
        .unwrap_or(false)
}

/// Spawns one of the rig's I/O threads, named `name`, running `f` under `SCHED_FIFO`
/// at `priority` when given (see [`make_thread_rt`]).
///
/// # Errors
/// The OS refused a new thread.
pub(super) fn spawn_rig_thread<T: Send + 'static>(
    name: &str,
    priority: Option<u8>,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Some(p) = priority {
                make_thread_rt(p);
            }
            f()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rig_threads_run_with_or_without_the_privilege() {
        // Either outcome is fine here (CI may or may not have CAP_SYS_NICE); the
        // thread runs its closure in both.
        let permitted = rt_permitted(1);
        let h = spawn_rig_thread("rt-test", Some(1), move || permitted).unwrap();
        assert_eq!(h.join().unwrap(), permitted);
        let h = spawn_rig_thread("rt-test", None, || 7).unwrap();
        assert_eq!(h.join().unwrap(), 7);
    }
}
