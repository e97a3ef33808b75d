//! Latency accounting: one HDR histogram per stage (µs, 3 significant digits), the
//! source of status reports and of the worst-case estimates admission control uses.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use outpost_protocol::{Stage, StageLatency};

/// Stages recorded, in report order: the frame path, then stage 2 (the verifier).
pub const STAGES: [Stage; 10] = [
    Stage::Transport,
    Stage::Queue,
    Stage::Vad,
    Stage::Mel,
    Stage::Embedding,
    Stage::Head,
    Stage::Write,
    Stage::Total,
    Stage::Verifier,
    Stage::VerifyTotal,
];

/// Stage 2's stages: reported only once a verification was recorded.
const VERIFIER_STAGES: [Stage; 2] = [Stage::Verifier, Stage::VerifyTotal];

/// Latency budget per stage in µs, from docs/DESIGN.md §4 (the total is the deadline).
pub fn design_budget_us(stage: Stage) -> u32 {
    match stage {
        Stage::Transport => 1_000,
        Stage::Queue => 5_000,
        Stage::Vad => 1_000,
        Stage::Mel => 2_000,
        Stage::Embedding => 6_000,
        Stage::Head => 1_000,
        Stage::Write => 1_000,
        Stage::Total => 30_000,
        // One verification's compute: 55 ms p50 / 62 ms p99 measured on one x86-64
        // core (`cargo run --release -p outpost-runtime --example verifier_bench`); the
        // bundle's `verifier.budget_us` replaces it.
        Stage::Verifier => 100_000,
        // A verification's deadline after the trigger: DESIGN §3's p90 target for the
        // end of speech to the detection.
        Stage::VerifyTotal => 250_000,
    }
}

fn index(stage: Stage) -> usize {
    STAGES.iter().position(|s| *s == stage).unwrap_or(0)
}

/// Per-stage latency histograms, shared by all workers.
#[derive(Debug)]
pub struct LatencyStats {
    hist: Vec<Mutex<Histogram<u64>>>,
    budgets_us: [AtomicU32; STAGES.len()],
}

impl Default for LatencyStats {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyStats {
    /// Empty histograms tracking 1 µs .. 60 s; budgets from docs/DESIGN.md §4.
    pub fn new() -> Self {
        let budgets_us = STAGES.map(|s| AtomicU32::new(design_budget_us(s)));
        Self {
            hist: STAGES
                .iter()
                .map(|_| {
                    Mutex::new(
                        Histogram::new_with_bounds(1, 60_000_000, 3)
                            .expect("static bounds are valid"),
                    )
                })
                .collect(),
            budgets_us,
        }
    }

    /// Replaces the budget of a stage (e.g. from the bundle manifest), in µs.
    pub fn set_budget_us(&self, stage: Stage, budget_us: u32) {
        self.budgets_us[index(stage)].store(budget_us, Ordering::Relaxed);
    }

    /// Records one sample in µs (clamped into the histogram's range).
    pub fn record(&self, stage: Stage, us: u64) {
        if let Ok(mut h) = self.hist[index(stage)].lock() {
            h.saturating_record(us.max(1));
        }
    }

    /// Snapshot of one stage.
    pub fn latency(&self, stage: Stage) -> StageLatency {
        let i = index(stage);
        let h = self.hist[i]
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let q = |x: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(x).min(u32::MAX as u64) as u32
            }
        };
        StageLatency {
            stage,
            count: h.len(),
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if h.is_empty() {
                0
            } else {
                h.max().min(u32::MAX as u64) as u32
            },
            budget_us: self.budgets_us[i].load(Ordering::Relaxed),
        }
    }

    /// Snapshot of every stage, in [`STAGES`] order; the verifier's stages only once
    /// one was recorded (a bundle without a verifier never shows them).
    pub fn snapshot(&self) -> Vec<StageLatency> {
        STAGES
            .iter()
            .map(|s| self.latency(*s))
            .filter(|l| l.count > 0 || !VERIFIER_STAGES.contains(&l.stage))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_follow_recorded_samples() {
        let s = LatencyStats::new();
        for us in 1..=1000u64 {
            s.record(Stage::Mel, us);
        }
        let l = s.latency(Stage::Mel);
        assert_eq!(l.count, 1000);
        assert!((495..=505).contains(&l.p50_us), "{l:?}");
        assert!((985..=1000).contains(&l.p99_us), "{l:?}");
        assert_eq!(l.max_us, 1000);
        assert_eq!(l.budget_us, 2000);
        assert_eq!(s.latency(Stage::Vad).count, 0);
    }
}
