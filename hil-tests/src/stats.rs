//! Latency series (µs) and their percentiles, via `hdrhistogram`.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms track, in µs (60 s); larger values are clamped.
pub const MAX_TRACKED_US: u64 = 60_000_000;

/// A named series of latencies in µs, kept raw (for plots) and in a histogram.
#[derive(Debug, Clone)]
pub struct LatencySeries {
    /// Name, e.g. `client round trip`.
    pub name: String,
    /// Raw values in µs, in arrival order.
    pub values_us: Vec<u64>,
    hist: Histogram<u64>,
}

/// Percentiles of a series, all in µs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Name.
    pub name: String,
    /// Samples.
    pub count: u64,
    /// Median in µs.
    pub p50_us: u64,
    /// 99th percentile in µs.
    pub p99_us: u64,
    /// 99.9th percentile in µs.
    pub p999_us: u64,
    /// Maximum in µs.
    pub max_us: u64,
    /// Mean in µs.
    pub mean_us: f64,
}

impl LatencySeries {
    /// An empty series.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            values_us: Vec::new(),
            // 3 significant digits, 1 µs to 60 s: always valid bounds.
            hist: Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("valid bounds"),
        }
    }

    /// Records one value in µs.
    pub fn record(&mut self, us: u64) {
        self.values_us.push(us);
        self.hist.saturating_record(us.min(MAX_TRACKED_US));
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.values_us.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.values_us.is_empty()
    }

    /// Appends another series' values.
    pub fn extend(&mut self, other: &LatencySeries) {
        for &v in &other.values_us {
            self.record(v);
        }
    }

    /// The histogram.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.hist
    }

    /// Percentiles (zeros when empty).
    pub fn summary(&self) -> LatencySummary {
        if self.is_empty() {
            return LatencySummary {
                name: self.name.clone(),
                ..Default::default()
            };
        }
        // Percentiles are bucket upper bounds (3 significant digits): cap at the true max.
        let max_us = self.values_us.iter().copied().max().unwrap_or(0);
        LatencySummary {
            name: self.name.clone(),
            count: self.hist.len(),
            p50_us: self.hist.value_at_quantile(0.50).min(max_us),
            p99_us: self.hist.value_at_quantile(0.99).min(max_us),
            p999_us: self.hist.value_at_quantile(0.999).min(max_us),
            max_us,
            mean_us: self.hist.mean(),
        }
    }
}
