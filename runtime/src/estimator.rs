//! Admission control's compute estimates (docs/DESIGN.md §4): the worst case (online
//! p99.9) and the typical cost (mean, standard deviation) of one frame's compute, over
//! a sliding window of measured frames, seeded by the warm-up at boot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use embassy_time::Duration;

use crate::edf::CostEstimate;

/// Frames per half of the WCET window: the estimate covers the last 4 096–8 192 frames
/// (about 5–11 minutes of one real-time stream), so one stalled frame stops
/// inflating admission once it has aged out.
const WCET_WINDOW_HALF: u64 = 4096;

/// Frames the window must hold before the WCET estimate is its p99.9; over fewer it is
/// the p99. A p99.9 over fewer than 1 000 frames is the slowest frame, and over fewer
/// than 2 000 one of the two slowest: one frame stalled on a loaded machine (cut at its
/// deadline in a CI run on a 2-core VM, against ~3.5 ms usual) became the WCET and
/// admission refused every frame that had to wait.
pub const WCET_P999_MIN_FRAMES: u64 = 2_000;

/// The estimates, shared by the workers (which record each frame's compute) and
/// admission (which reads them for every arriving frame).
#[derive(Debug)]
pub struct ComputeEstimator {
    /// Current worst-case compute estimate per frame, in µs.
    wcet_us: AtomicU64,
    /// Current typical (mean) compute per frame, in µs.
    typical_us: AtomicU64,
    /// Current standard deviation of compute per frame, in µs.
    spread_us: AtomicU64,
    /// Measured compute per frame (all model stages), µs: the WCET source, over a
    /// sliding window of two halves (current and previous).
    window: Mutex<[hdrhistogram::Histogram<u64>; 2]>,
}

impl ComputeEstimator {
    /// Estimates seeded with the warm-up's measurements, in µs; `typical_us` is capped
    /// at `wcet_us`.
    pub fn new(wcet_us: u32, typical_us: u32, spread_us: u32) -> Self {
        Self {
            wcet_us: AtomicU64::new(u64::from(wcet_us)),
            typical_us: AtomicU64::new(u64::from(typical_us.min(wcet_us))),
            spread_us: AtomicU64::new(u64::from(spread_us)),
            window: Mutex::new(std::array::from_fn(|_| {
                hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds")
            })),
        }
    }

    /// Records one frame's compute and refreshes the estimates (online p99.9, mean and
    /// standard deviation over the sliding window) every 32 frames once 100 frames
    /// were seen; until then the warm-up seeds stand. Until the window holds
    /// [`WCET_P999_MIN_FRAMES`] the WCET is the p99.
    pub fn record(&self, us: u64) {
        let Ok(mut h) = self.window.lock() else {
            return;
        };
        let [cur, prev] = &mut *h;
        cur.saturating_record(us.max(1));
        let n = cur.len();
        if n >= WCET_WINDOW_HALF {
            std::mem::swap(cur, prev);
            cur.reset();
        }
        if cur.len() + prev.len() >= 100 && n % 32 == 0 {
            let mut both = prev.clone();
            let _ = both.add(&*cur);
            let q = if both.len() >= WCET_P999_MIN_FRAMES {
                0.999
            } else {
                0.99
            };
            self.wcet_us
                .store(both.value_at_quantile(q), Ordering::Relaxed);
            self.typical_us
                .store(both.mean().round() as u64, Ordering::Relaxed);
            self.spread_us
                .store(both.stdev().round() as u64, Ordering::Relaxed);
        }
    }

    /// Current worst-case compute estimate per frame in µs.
    pub fn wcet_us(&self) -> u64 {
        self.wcet_us.load(Ordering::Relaxed)
    }

    /// Current typical (mean) compute estimate per frame in µs.
    pub fn typical_us(&self) -> u64 {
        self.typical_us.load(Ordering::Relaxed)
    }

    /// Current standard deviation of compute per frame in µs.
    pub fn spread_us(&self) -> u64 {
        self.spread_us.load(Ordering::Relaxed)
    }

    /// The estimates as admission control takes them.
    pub fn cost(&self) -> CostEstimate {
        CostEstimate {
            typical: Duration::from_micros(self.typical_us()),
            wcet: Duration::from_micros(self.wcet_us()),
            spread: Duration::from_micros(self.spread_us()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warm_up_seeds_stand_until_100_frames_then_the_p99_then_the_p999() {
        let e = ComputeEstimator::new(9_000, 12_000, 300);
        assert_eq!(
            (e.wcet_us(), e.typical_us(), e.spread_us()),
            (9_000, 9_000, 300)
        );
        for _ in 0..64 {
            e.record(1_000);
        }
        assert_eq!(e.wcet_us(), 9_000, "seeds stand below 100 frames");
        // 1 000 frames with 5 slow ones (0.5 %): the p99 ignores them.
        for i in 64..1_000 {
            e.record(if i % 200 == 0 { 20_000 } else { 1_000 });
        }
        assert!(
            e.wcet_us() < 1_100,
            "p99 below the slow 0.5 %: {}",
            e.wcet_us()
        );
        assert_eq!(e.typical_us(), e.cost().typical.as_micros());
        // Past WCET_P999_MIN_FRAMES the estimate is the p99.9, which sees them.
        for i in 1_000..(WCET_P999_MIN_FRAMES + 64) {
            e.record(if i % 200 == 0 { 20_000 } else { 1_000 });
        }
        assert!(
            e.wcet_us() >= 19_000,
            "p99.9 covers the slow frames: {}",
            e.wcet_us()
        );
    }
}
