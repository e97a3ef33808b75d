//! Reports: `report.json` (everything), `summary.md` (the tables) and latency
//! histograms as PNG (plotters' bitmap backend, drawn without text so no system
//! fonts are needed; the numbers are in the Markdown next to it).

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;

use crate::scenario::{Outcome, ScenarioResult};
use crate::session::{HelloInfo, StatusInfo};
use crate::sim::ReadyLine;
use crate::stats::{LatencySeries, LatencySummary};

/// Everything `outpost-hil run` found.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Device name from its TOML.
    pub device: String,
    /// Device config file.
    pub config: PathBuf,
    /// Seconds since the Unix epoch at the start of the run.
    pub started_unix_s: u64,
    /// The simulated daemon's READY line, if simulated.
    pub ready: Option<ReadyLine>,
    /// Handshake, if it succeeded.
    pub hello: Option<HelloInfo>,
    /// Status fetched after the scenarios.
    pub status: Option<StatusInfo>,
    /// Where the clips came from.
    pub clips: String,
    /// Scenario results in run order.
    pub scenarios: Vec<ScenarioResult>,
    /// Per-frame latency over the whole run (µs).
    pub latency: Vec<LatencySummary>,
    /// The latency histogram, if drawn.
    pub plot: Option<PlotInfo>,
    /// Files written next to this report.
    pub files: Vec<PathBuf>,
}

impl RunReport {
    /// True when no scenario failed and at least one passed.
    pub fn passed(&self) -> bool {
        self.scenarios.iter().all(|s| s.outcome != Outcome::Fail)
            && self.scenarios.iter().any(|s| s.outcome == Outcome::Pass)
    }

    /// The Markdown summary: scenario table, latency table, failures in detail.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        md.push_str(&format!("# outpost-hil run: {}\n\n", self.device));
        if let Some(h) = &self.hello {
            md.push_str(&format!(
                "Bundle `{}` v{} (key {}), {} labels.\n\n",
                h.bundle_name,
                h.bundle_version,
                h.key_id,
                h.labels.len()
            ));
        }
        if let Some(r) = &self.ready {
            md.push_str(&format!(
                "Simulated device: pid {}, boot to ready {} ms.\n\n",
                r.pid.map_or("?".into(), |p| p.to_string()),
                r.boot_ms.map_or("?".into(), |b| b.to_string())
            ));
        }
        if let Some(st) = self.status.as_ref().filter(|s| s.state != "Ready") {
            md.push_str(&format!(
                "**Device state {}**: {}\n\n",
                st.state,
                if st.detail.is_empty() {
                    "(no detail)"
                } else {
                    &st.detail
                }
            ));
        }
        md.push_str("| scenario | result | time (ms) | summary |\n|---|---|---:|---|\n");
        for s in &self.scenarios {
            md.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                s.name,
                s.outcome,
                s.duration_ms,
                s.summary.replace('|', "\\|")
            ));
        }
        md.push('\n');
        if self.latency.iter().any(|l| l.count > 0) {
            md.push_str(&latency_table(
                &self
                    .latency
                    .iter()
                    .map(|l| (l.name.clone(), l.clone()))
                    .collect::<Vec<_>>(),
            ));
            md.push('\n');
        }
        if let Some(plot) = &self.plot {
            md.push_str(&plot.caption());
            md.push('\n');
        }
        if let Some(st) = &self.status {
            md.push_str(&format!(
                "Device status after the run: {} — {} frames, {} detections, {} deadline misses, {} rejections, {} errors.\n\n",
                st.state, st.frames, st.detections, st.deadline_misses, st.rejections, st.errors
            ));
            if !st.latency.is_empty() {
                md.push_str(&stage_table(st));
                md.push('\n');
            }
        }
        for s in self.scenarios.iter().filter(|s| s.outcome != Outcome::Pass) {
            md.push_str(&format!("## {} — {}\n\n", s.name, s.outcome));
            if s.outcome == Outcome::Skip {
                md.push_str(&format!("{}\n\n", s.summary));
            }
            for d in s.details.iter().filter(|d| !d.starts_with("ok")) {
                md.push_str(&format!("- {d}\n"));
            }
            md.push('\n');
        }
        md
    }

    /// Plain-text table for the terminal.
    pub fn console_table(&self) -> String {
        let state = self
            .status
            .as_ref()
            .filter(|s| s.state != "Ready")
            .map(|s| format!("DEVICE STATE {}: {}\n", s.state, s.detail))
            .unwrap_or_default();
        let w = self
            .scenarios
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(8)
            .max(8);
        let mut out = format!("{state}{:w$}  result  {:>8}  summary\n", "scenario", "ms");
        for s in &self.scenarios {
            out.push_str(&format!(
                "{:w$}  {:6}  {:>8}  {}\n",
                s.name,
                s.outcome.to_string(),
                s.duration_ms,
                s.summary
            ));
            if s.outcome == Outcome::Fail {
                for d in s.details.iter().filter(|d| d.starts_with("FAILED")) {
                    out.push_str(&format!("{:w$}    {d}\n", ""));
                }
            }
        }
        out
    }
}

/// Markdown table of latency summaries: rows as given, columns p50/p99/p99.9/max µs.
pub fn latency_table(rows: &[(String, LatencySummary)]) -> String {
    let mut md = String::from(
        "| measure | count | p50 µs | p99 µs | p99.9 µs | max µs |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for (name, l) in rows {
        md.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} |\n",
            l.count, l.p50_us, l.p99_us, l.p999_us, l.max_us
        ));
    }
    md
}

/// Markdown table of the device's per-stage latency (from `Status`) beside its budget.
pub fn stage_table(st: &StatusInfo) -> String {
    let mut md = String::from(
        "| stage (device) | count | p50 µs | p99 µs | p99.9 µs | max µs | budget µs |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for l in &st.latency {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            l.stage, l.count, l.p50_us, l.p99_us, l.p999_us, l.max_us, l.budget_us
        ));
    }
    md
}

/// Writes `report.json` and `summary.md` into `dir`; returns their paths.
///
/// # Errors
/// I/O errors naming the file.
pub fn write_run_report(dir: &Path, report: &RunReport) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join("report.json");
    let md = dir.join("summary.md");
    std::fs::write(&json, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    std::fs::write(&md, report.markdown()).with_context(|| format!("writing {}", md.display()))?;
    Ok(vec![json, md])
}

/// Colours of the series in [`plot_histograms`], in order (for the legend in Markdown).
pub const SERIES_COLOURS: [(&str, RGBColor); 4] = [
    ("blue", RGBColor(31, 119, 180)),
    ("orange", RGBColor(255, 127, 14)),
    ("green", RGBColor(44, 160, 44)),
    ("red", RGBColor(214, 39, 40)),
];

/// Bins of the latency histograms.
pub const PLOT_BINS: usize = 80;

/// Draws one latency histogram panel per series (stacked vertically) into a PNG.
///
/// X axis: 0 to the largest p99.9 of the series × 1.25 in µs, [`PLOT_BINS`] bins
/// (slower values land in the last bin); faint vertical grid lines every `grid_us`
/// µs; a dark line at `deadline_us` if it is in range. Y: frame count, log10 (bars
/// of height log10(count) + 1, grey lines at 1, 10, 100, … frames). No text is drawn (plotters would need system fonts): the caption belongs
/// in the Markdown beside the image. Returns the x range in µs.
///
/// # Errors
/// Plotting or PNG encoding errors.
pub fn plot_histograms(
    path: &Path,
    series: &[&LatencySeries],
    deadline_us: Option<u64>,
) -> anyhow::Result<PlotInfo> {
    let series: Vec<&LatencySeries> = series.iter().copied().filter(|s| !s.is_empty()).collect();
    anyhow::ensure!(!series.is_empty(), "no latency samples to plot");
    let top = series
        .iter()
        .map(|s| s.summary().p999_us)
        .max()
        .unwrap_or(1)
        .max(10);
    let x_max_us = (top as f64 * 1.25).ceil() as u64;
    let bin_us = (x_max_us as f64 / PLOT_BINS as f64).max(1.0);
    let grid_us = nice_step(x_max_us as f64 / 8.0);
    let height = 220 * series.len() as u32;
    let root = BitMapBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((series.len(), 1));
    for (i, (panel, s)) in panels.iter().zip(&series).enumerate() {
        let mut counts = vec![0u32; PLOT_BINS];
        for &v in &s.values_us {
            let b = ((v as f64 / bin_us) as usize).min(PLOT_BINS - 1);
            counts[b] += 1;
        }
        // Log-scaled counts so the tail stays visible: height = log10(count) + 1.
        let h = |c: u32| {
            if c == 0 {
                0.0
            } else {
                f64::from(c).log10() + 1.0
            }
        };
        let y_top = h(counts.iter().copied().max().unwrap_or(1).max(1)) + 0.2;
        let mut chart = ChartBuilder::on(panel)
            .margin(12)
            .build_cartesian_2d(0f64..x_max_us as f64, 0f64..y_top)?;
        let grey = RGBColor(220, 220, 220);
        let mut g = 0.0;
        while g <= x_max_us as f64 {
            chart.draw_series(LineSeries::new(
                [(g, 0.0), (g, y_top)],
                grey.stroke_width(1),
            ))?;
            g += grid_us;
        }
        // Horizontal lines at 1, 10, 100, ... frames.
        let mut decade = 1.0;
        while decade < y_top {
            chart.draw_series(LineSeries::new(
                [(0.0, decade), (x_max_us as f64, decade)],
                grey.stroke_width(1),
            ))?;
            decade += 1.0;
        }
        let colour = SERIES_COLOURS[i % SERIES_COLOURS.len()].1;
        chart.draw_series(
            counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(b, c)| {
                    let x0 = b as f64 * bin_us;
                    Rectangle::new([(x0, 0.0), (x0 + bin_us * 0.9, h(*c))], colour.filled())
                }),
        )?;
        if let Some(d) = deadline_us.filter(|d| (*d as f64) <= x_max_us as f64) {
            chart.draw_series(LineSeries::new(
                [(d as f64, 0.0), (d as f64, y_top)],
                BLACK.stroke_width(2),
            ))?;
        }
        // Axes without labels.
        chart.draw_series(LineSeries::new(
            [(0.0, y_top), (0.0, 0.0), (x_max_us as f64, 0.0)],
            BLACK.stroke_width(1),
        ))?;
    }
    root.present()?;
    Ok(PlotInfo {
        path: path.to_owned(),
        x_max_us,
        bin_us,
        grid_us,
        panels: series
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "{} ({})",
                    s.name,
                    SERIES_COLOURS[i % SERIES_COLOURS.len()].0
                )
            })
            .collect(),
    })
}

/// How to read a plot drawn by [`plot_histograms`].
#[derive(Debug, Clone, Serialize)]
pub struct PlotInfo {
    /// PNG file.
    pub path: PathBuf,
    /// Right end of the x axis in µs.
    pub x_max_us: u64,
    /// Bin width in µs.
    pub bin_us: f64,
    /// Spacing of the vertical grid lines in µs.
    pub grid_us: f64,
    /// Panel names top to bottom, with their colour.
    pub panels: Vec<String>,
}

impl PlotInfo {
    /// A Markdown caption for the image.
    pub fn caption(&self) -> String {
        format!(
            "![latency histograms]({})\n\nPanels top to bottom: {}. X axis 0–{} µs, bins of {:.0} µs, grid lines every {:.0} µs; values beyond the axis are in the last bin; the black line is the deadline. Y axis: frames, logarithmic: a bar of height 1 is 1 frame, grey horizontal lines at 1, 10, 100, … frames.\n",
            self.path.file_name().unwrap_or_default().to_string_lossy(),
            self.panels.join(", "),
            self.x_max_us,
            self.bin_us,
            self.grid_us
        )
    }
}

/// 1, 2 or 5 × 10ⁿ at or above `x`.
fn nice_step(x: f64) -> f64 {
    let x = x.max(1.0);
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= x)
        .unwrap_or(10.0 * p)
}
