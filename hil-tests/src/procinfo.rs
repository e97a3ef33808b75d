//! What the rig reads from Linux's `/proc` on its own machine, through the `procfs`
//! crate: a process's CPU time and memory (the simulated daemon's, or the rig's own),
//! the CPU time the hypervisor stole, and the load average.
//!
//! Every reader returns `None` (or an empty string) when the file is missing or does
//! not parse: a benchmark then prints `?` rather than failing.

use procfs::process::{Process, Stat, Status};
use procfs::{prelude::*, KernelStats, LoadAverage};

/// CPU time (user + system) of a process so far, in ms (`/proc/PID/stat`;
/// `/proc/self/stat` for `None`, the rig itself).
pub fn process_cpu_ms(pid: Option<u32>) -> Option<u64> {
    let process = match pid {
        Some(p) => Process::new(i32::try_from(p).ok()?),
        None => Process::myself(),
    };
    Some(stat_cpu_ms(&process.ok()?.stat().ok()?))
}

/// utime + stime of `/proc/PID/stat` text, in ms. The command name may hold spaces
/// and parentheses (the fields are counted after the last `)`).
pub fn parse_process_cpu_ms(text: &str) -> Option<u64> {
    Some(stat_cpu_ms(&Stat::from_read(text.as_bytes()).ok()?))
}

/// utime + stime in ms, converted with this machine's clock ticks per second
/// (`USER_HZ`, 100 on Linux).
fn stat_cpu_ms(stat: &Stat) -> u64 {
    (stat.utime + stat.stime) * 1000 / procfs::ticks_per_second()
}

/// Steal time of all CPUs so far, in ms (`/proc/stat`, `cpu` line).
pub fn steal_ms() -> Option<u64> {
    KernelStats::current().ok()?.total.steal_ms()
}

/// The steal time of the `cpu` line of `/proc/stat` text, in ms.
pub fn parse_steal_ms(text: &str) -> Option<u64> {
    KernelStats::from_read(text.as_bytes(), procfs::current_system_info())
        .ok()?
        .total
        .steal_ms()
}

/// `VmRSS` and `VmHWM` of a process, in kB (`/proc/<pid>/status`); `None` for a field
/// the kernel does not report (a kernel thread) or a process that is gone.
pub fn read_memory_kb(pid: u32) -> (Option<u64>, Option<u64>) {
    let status = i32::try_from(pid)
        .ok()
        .and_then(|p| Process::new(p).ok())
        .and_then(|p| p.status().ok());
    memory_kb(status)
}

/// `VmRSS` and `VmHWM` (kB) out of `/proc/<pid>/status` text.
pub fn parse_proc_status_kb(text: &str) -> (Option<u64>, Option<u64>) {
    memory_kb(Status::from_read(text.as_bytes()).ok())
}

fn memory_kb(status: Option<Status>) -> (Option<u64>, Option<u64>) {
    status.map_or((None, None), |s| (s.vmrss, s.vmhwm))
}

/// Open file descriptors of a process (entries of `/proc/<pid>/fd`); `None` when the
/// process is gone or its fd table is not readable.
pub fn fd_count(pid: u32) -> Option<usize> {
    Process::new(i32::try_from(pid).ok()?).ok()?.fd_count().ok()
}

/// Threads of a process (`num_threads` of `/proc/<pid>/stat`).
pub fn thread_count(pid: u32) -> Option<u64> {
    let n = Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .stat()
        .ok()?
        .num_threads;
    u64::try_from(n).ok()
}

/// The 1, 5 and 15 minute load averages as `/proc/loadavg` shows them
/// (`"0.52 0.58 0.59"`); empty when unreadable.
pub fn loadavg() -> String {
    LoadAverage::current().map_or_else(
        |_| String::new(),
        |l| format!("{:.2} {:.2} {:.2}", l.one, l.five, l.fifteen),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/<pid>/stat` of a process named `outpostd (x) y`: utime 250, stime 70 ticks.
    const STAT: &str = "4242 (outpostd (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 70 0 0 20 0 9 0 100 6184960 392 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0";

    #[test]
    fn process_cpu_time_is_parsed_after_the_command_name() {
        let ms_per_tick = 1000 / procfs::ticks_per_second();
        assert_eq!(parse_process_cpu_ms(STAT), Some(320 * ms_per_tick));
        assert_eq!(parse_process_cpu_ms("4242 (x) S 1 2"), None);
        assert!(
            process_cpu_ms(None).is_some(),
            "the rig's own /proc/self/stat"
        );
    }

    #[test]
    fn steal_is_parsed_from_proc_stat() {
        let text = "cpu  545787 0 68581 388379 4017 0 1006 9183 0 0\n\
                    cpu0 1 2 3 4 5 6 7 8 0 0\n\
                    intr 1014284 0 0\n\
                    ctxt 1170260\n\
                    btime 1796321720\n\
                    processes 22054\n\
                    procs_running 3\n\
                    procs_blocked 0\n";
        let ms_per_tick = 1000 / procfs::ticks_per_second();
        assert_eq!(parse_steal_ms(text), Some(9183 * ms_per_tick));
        assert_eq!(parse_steal_ms("cpu0 1 2\n"), None);
        assert!(steal_ms().is_some(), "this machine's /proc/stat");
    }

    #[test]
    fn own_memory_and_load_average_are_read() {
        let (rss, hwm) = read_memory_kb(std::process::id());
        assert!(rss.is_some_and(|r| r > 0) && hwm >= rss, "{rss:?} {hwm:?}");
        let me = std::process::id();
        assert!(fd_count(me).is_some_and(|n| n >= 3), "own fds");
        assert!(thread_count(me).is_some_and(|n| n >= 1), "own threads");
        let l = loadavg();
        assert_eq!(l.split(' ').count(), 3, "{l:?}");
        assert!(l.split(' ').all(|x| x.parse::<f64>().is_ok()), "{l:?}");
    }
}
