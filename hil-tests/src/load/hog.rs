//! The CPU hog of the `hog` scenario: `stress-ng --cpu N` when installed, else N
//! spinning threads of the rig; stopped (SIGTERM, then SIGKILL after 3 s; threads
//! joined) when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::HogKind;

/// Busy loops beside the daemon; stopped (children killed, threads joined) on drop.
#[derive(Debug)]
pub struct Hog {
    /// What runs, for the report.
    pub desc: String,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    child: Option<Child>,
}

/// `stress-ng` on `PATH`, if any.
pub fn find_stress_ng() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("stress-ng"))
        .find(|p| p.is_file())
}

impl Hog {
    /// Starts `workers` busy loops (normal scheduling policy, nice 0). `max` bounds a
    /// `stress-ng` child's own lifetime in case the rig dies without stopping it.
    ///
    /// # Errors
    /// `stress-ng` asked for but absent or not startable.
    pub fn start(kind: HogKind, workers: usize, max: Duration) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stress = match kind {
            HogKind::Spin => None,
            HogKind::Auto => find_stress_ng(),
            HogKind::StressNg => {
                Some(find_stress_ng().context("stress-ng is not on PATH (use --hog spin)")?)
            }
        };
        if let Some(bin) = stress {
            let child = Command::new(&bin)
                .arg("--cpu")
                .arg(workers.to_string())
                .arg("--timeout")
                .arg(format!("{}s", max.as_secs().max(1)))
                .arg("--quiet")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            return Ok(Self {
                desc: format!("stress-ng --cpu {workers}"),
                stop,
                threads: Vec::new(),
                child: Some(child),
            });
        }
        let threads = (0..workers)
            .map(|i| {
                let stop = Arc::clone(&stop);
                std::thread::Builder::new()
                    .name(format!("hog-{i}"))
                    .spawn(move || {
                        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ i as u64;
                        while !stop.load(Ordering::Relaxed) {
                            for _ in 0..100_000 {
                                x = x
                                    .wrapping_mul(6_364_136_223_846_793_005)
                                    .wrapping_add(1_442_695_040_888_963_407);
                            }
                            std::hint::black_box(x);
                        }
                    })
                    .context("spawning a hog thread")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            desc: format!("{workers} busy-loop threads"),
            stop,
            threads,
            child: None,
        })
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(mut c) = self.child.take() {
            if let Ok(None) = c.try_wait() {
                crate::sim::sigterm(&c);
            }
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hog_threads_stop_on_drop() {
        let h = Hog::start(HogKind::Spin, 1, Duration::from_secs(5)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        drop(h);
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
