//! What `bench-load` found ([`LoadReport`], [`CapacityResult`]) and how it is written:
//! the Markdown tables (`bench-load.md`, also printed) and the JSON (`bench-load.json`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use super::flood::FloodStats;
use super::run::RunResult;
use super::tally::TallySummary;
use super::{cores, MEMORY_FLAT_KB};

/// The capacity search and its result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CapacityResult {
    /// Largest stream count with zero misses and zero rejections over the confirming run
    /// (`None` if no count was confirmed).
    pub capacity: Option<usize>,
    /// The search found the daemon's stream limit, not a compute limit.
    pub at_stream_limit: bool,
    /// Largest count that passed a search probe.
    pub search_found: usize,
    /// Admission control's worst-case compute per frame after the search, in µs.
    pub wcet_us: Option<u32>,
    /// Admission control's typical (mean) compute per frame after the search, in µs.
    pub typical_us: Option<u32>,
    /// `(streams, passed, stopped early)` of each search probe.
    pub probes: Vec<(usize, bool, bool)>,
    /// Probe length in s.
    pub probe_s: f64,
    /// Confirming runs (the last one that passed gives the capacity).
    pub confirms: Vec<RunResult>,
    /// Logical CPUs.
    pub cores: usize,
    /// Per-stage p50 (µs) from `Status` after the search: vad, mel, embedding, head.
    pub stage_p50_us: Vec<(String, u32)>,
    /// Per-stage p99.9 (µs) from the same `Status`.
    pub stage_p999_us: Vec<(String, u32)>,
    /// Sum of the stage p50s in µs.
    pub compute_p50_us: u64,
    /// cores × 80 ms ÷ `compute_p50_us`.
    pub compute_bound: Option<f64>,
    /// Mean server `compute_us` of the results of the confirming run.
    pub compute_mean_us: Option<f64>,
    /// cores × 80 ms ÷ `compute_mean_us`.
    pub compute_bound_mean: Option<f64>,
}

/// The daemon's resources at one moment (`/proc/<pid>`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResourceSnapshot {
    /// When: e.g. `before the flood`.
    pub when: String,
    /// VmRSS in kB.
    pub rss_kb: Option<u64>,
    /// Open file descriptors.
    pub fds: Option<usize>,
    /// Threads.
    pub threads: Option<u64>,
}

/// The `flood` scenario: one victim client without, then with the flood, against the
/// same daemon.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FloodResult {
    /// Length of each victim run in s.
    pub phase_s: f64,
    /// Wait between the end of the flood and the last snapshot, in s.
    pub settle_s: f64,
    /// Connect/disconnect churn asked for, per minute.
    pub churn_per_min: u32,
    /// Seed of the garbage.
    pub seed: u64,
    /// The victim without the flood.
    pub without: Option<RunResult>,
    /// The victim with the flood.
    pub with: Option<RunResult>,
    /// The daemon's resources: before, at the end of, right after, and a settle period
    /// after the flood.
    pub resources: Vec<ResourceSnapshot>,
    /// What the flood's workers did, per kind.
    pub flood: Vec<FloodStats>,
    /// Flood length in s (from its start to its stop).
    pub flood_s: f64,
    /// The daemon's `errors` counter over the flood (`Status`).
    pub daemon_errors: Option<u64>,
    /// Connections the daemon throttled for errors over the flood (`Status`, v2).
    pub daemon_throttled: Option<u64>,
    /// Connections the daemon closed for errors over the flood (`Status`, v2).
    pub daemon_closed_for_errors: Option<u64>,
    /// Clients the daemon counted connected after the settle period (`Status`; the
    /// status connection itself included).
    pub daemon_clients_after: Option<u16>,
}

impl FloodResult {
    /// Invariants of both victim runs held (a missing run counts as broken).
    pub fn ok(&self) -> bool {
        self.without.as_ref().is_some_and(RunResult::ok)
            && self.with.as_ref().is_some_and(RunResult::ok)
    }

    /// The Markdown section.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "## Flood ({} s per victim phase, same daemon)\n\n",
            self.phase_s
        );
        md.push_str(
            &RUN_HEADER
                .replacen("| path |", "| victim | path |", 1)
                .replacen("|---|", "|---|---|", 1),
        );
        for (label, r) in [("without flood", &self.without), ("with flood", &self.with)] {
            if let Some(r) = r {
                md.push_str(&format!(
                    "| {label} {}",
                    run_row(&r.path, r.streams, r.conns, &r.total, Some(r))
                ));
            }
        }
        md.push_str("\n| daemon | VmRSS MiB | open fds | threads |\n|---|---:|---:|---:|\n");
        for x in &self.resources {
            md.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                x.when,
                mib(x.rss_kb),
                x.fds.map_or("?".into(), |n| n.to_string()),
                x.threads.map_or("?".into(), |n| n.to_string()),
            ));
        }
        md.push_str(&format!(
            "\nThe flood ({:.1} s, seed {}; each worker reconnects whenever its connection ends):\n\n| flood kind | connections at once | connections made | connect failures | bytes sent | answers read | ended by the daemon |\n|---|---:|---:|---:|---:|---:|---:|\n",
            self.flood_s, self.seed
        ));
        for f in &self.flood {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                f.kind,
                f.workers,
                f.connections,
                f.connect_failures,
                f.bytes_sent,
                f.answers_read,
                f.closed_by_daemon
            ));
        }
        let opt = |v: Option<u64>| v.map_or("?".into(), |n| n.to_string());
        md.push_str(&format!(
            "\nDaemon over the flood (`Status`): {} errors answered, {} connections throttled for errors, {} closed for errors; {} client(s) connected after the settle period ({} s, the status connection included). Churn asked for: {} connections a minute.\n",
            opt(self.daemon_errors),
            opt(self.daemon_throttled),
            opt(self.daemon_closed_for_errors),
            self.daemon_clients_after.map_or("?".into(), |n| n.to_string()),
            self.settle_s,
            self.churn_per_min,
        ));
        let runs: Vec<&RunResult> = self.without.iter().chain(self.with.iter()).collect();
        md.push_str(&notes(&runs));
        md.push('\n');
        md
    }
}

/// Everything `bench-load` measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// Logical CPUs.
    pub cores: usize,
    /// Load average at the start (1, 5, 15 min), from /proc/loadavg.
    pub loadavg_start: String,
    /// Audio source.
    pub audio: String,
    /// Late allowance in µs.
    pub late_allowance_us: u64,
    /// Rig I/O threads' SCHED_FIFO priority, if applied.
    pub rig_rt_priority: Option<u8>,
    /// Extra daemon arguments.
    pub daemon_args: Vec<String>,
    /// `load` runs.
    pub load: Vec<RunResult>,
    /// `capacity`.
    pub capacity: Option<CapacityResult>,
    /// `overload` runs: 2× capacity, then 2× the compute bound when that is more.
    pub overload: Vec<RunResult>,
    /// What each overload run's stream count is based on.
    pub overload_basis: Vec<String>,
    /// `hog` runs.
    pub hog: Vec<RunResult>,
    /// `flood`.
    pub flood: Option<FloodResult>,
    /// Total wall time in s.
    pub wall_s: f64,
}

impl LoadReport {
    /// Every run kept the invariants.
    pub fn ok(&self) -> bool {
        self.all_runs().all(RunResult::ok) && self.flood.as_ref().is_none_or(FloodResult::ok)
    }

    fn all_runs(&self) -> impl Iterator<Item = &RunResult> {
        // Capacity probes that stopped early or confirms that failed on misses are not
        // invariant failures; `ok()` still requires no unanswered or late frame there.
        self.load
            .iter()
            .chain(self.capacity.iter().flat_map(|c| c.confirms.iter()))
            .chain(self.overload.iter())
            .chain(self.hog.iter())
    }
}

/// µs as ms with two decimals.
pub(super) fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn mib(kb: Option<u64>) -> String {
    kb.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

const RUN_HEADER: &str = "| path | streams | conns | frames | client p50 ms | p99 ms | p99.9 ms | max ms | server total p99 ms | results | misses | rejections | late | unanswered | rig lag max ms | steal ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";

fn late_cell(t: &TallySummary) -> String {
    if t.late_by_daemon_clock > 0 {
        format!("{} ({} by daemon clock)", t.late, t.late_by_daemon_clock)
    } else {
        t.late.to_string()
    }
}

/// The cells from frames to misses of a run table row (frames, client p50, p99, p99.9,
/// max, server total p99, results, misses), joined by ` | `.
fn latency_cells(t: &TallySummary) -> String {
    format!(
        "{} | {} | {} | {} | {} | {} | {} | {}",
        t.frames,
        ms(t.client.p50_us),
        ms(t.client.p99_us),
        ms(t.client.p999_us),
        ms(t.client.max_us),
        ms(t.server_total.p99_us),
        t.results,
        t.misses,
    )
}

fn run_row(
    label: &str,
    streams: usize,
    conns: usize,
    t: &TallySummary,
    rig: Option<&RunResult>,
) -> String {
    let rej = if t.rejections() == 0 {
        "0".to_owned()
    } else {
        format!(
            "{} ({} QueueFull, {} WouldMiss{})",
            t.rejections(),
            t.rejected_queue_full,
            t.rejected_would_miss,
            if t.rejected_other > 0 {
                format!(", {} other", t.rejected_other)
            } else {
                String::new()
            }
        )
    };
    format!(
        "| {label} | {streams} | {conns} | {} | {rej} | {} | {} | {} | {} |\n",
        latency_cells(t),
        late_cell(t),
        t.unanswered + t.duplicates,
        rig.map_or(String::new(), |r| ms(r.send_lag_max_us)),
        rig.and_then(|r| r.steal_ms)
            .map_or(String::new(), |s| s.to_string()),
    )
}

fn run_rows(r: &RunResult) -> String {
    let mut s = run_row(
        &if r.groups.len() > 1 {
            "pty + socket".to_owned()
        } else {
            r.path.clone()
        },
        r.streams,
        r.conns,
        &r.total,
        Some(r),
    );
    if r.groups.len() > 1 {
        for g in &r.groups {
            s.push_str(&run_row(
                &format!("  ↳ {} part", g.group),
                g.streams,
                g.conns,
                g,
                None,
            ));
        }
    }
    s
}

fn notes(runs: &[&RunResult]) -> String {
    let mut md = String::new();
    for r in runs {
        let label = format!("{} {} {} streams", r.scenario, r.path, r.streams);
        if let Some(e) = &r.error {
            md.push_str(&format!("\n**{label}: ERROR** {e}\n"));
        }
        let t = &r.total;
        if t.verifications > 0 {
            md.push_str(&format!(
                "\n- {label}: stage 2 answered {} trigger(s): {} verified command(s), {} deadline miss(es), {} refused or failed; end of the utterance's frame → verdict written p50 {} / p99 {} / max {} ms.",
                t.verifications,
                t.verified_commands,
                t.verify_misses,
                t.verify_refused,
                ms(t.verify_total.p50_us),
                ms(t.verify_total.p99_us),
                ms(t.verify_total.max_us)
            ));
        }
        if let (Some(d), Some(g), Some(st)) = (r.daemon_cpu_ms, r.rig_cpu_ms, r.steal_ms) {
            let avail = (r.wall_s * 1000.0 * cores() as f64).max(1.0);
            let rig = if r.beside.as_deref().is_some_and(|b| b.contains("busy-loop")) {
                "rig (with its busy-loop hog threads)"
            } else {
                "rig"
            };
            md.push_str(&format!(
                "\n- {label}: CPU over {:.1} s: daemon {d} ms ({:.0} %), {rig} {g} ms ({:.0} %), stolen by the hypervisor {st} ms ({:.0} %) of the {} cores.",
                r.wall_s,
                100.0 * d as f64 / avail,
                100.0 * g as f64 / avail,
                100.0 * st as f64 / avail,
                cores()
            ));
        }
        if let Some(d) = &r.daemon {
            let t = &r.total;
            if t.misses + t.rejections() + t.late > 0 || d.cancellations + d.late_writes > 0 {
                md.push_str(&format!(
                    "\n- {label}: daemon admission WCET after the run {} µs (typical {} µs, spread {} µs); {} runs cancelled at the deadline; {} answers written after their deadline (daemon's count); daemon stage max since boot: transport {} µs, write {} µs.",
                    d.wcet_us, d.typical_us, d.spread_us, d.cancellations, d.late_writes, d.transport_max_us, d.write_max_us
                ));
            }
            if d.deadline_misses != t.misses || d.rejections != t.rejections() {
                md.push_str(&format!(
                    "\n- {label}: the daemon counted {} misses / {} rejections, the rig {} / {}.",
                    d.deadline_misses,
                    d.rejections,
                    t.misses,
                    t.rejections()
                ));
            }
        }
        for p in r.total.problems.iter().take(5) {
            md.push_str(&format!("\n- {label}: {p}"));
        }
    }
    if !md.is_empty() {
        md.push('\n');
    }
    md
}

impl LoadReport {
    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut md = String::from("# outpost-hil bench-load\n\n");
        md.push_str(&format!(
            "{} logical CPUs (load average {} at the start). Real-time streams: one 1280-sample frame every 80 ms per stream, open loop, phases spread evenly over the period; audio: {}. Client latency = last byte of the frame written → last byte of its answer read, over **every** answer (results, misses, rejections). A **late** answer is one read more than deadline + {} ms after its frame was written. Rig I/O threads: {}. Extra daemon arguments: {}.\n\n",
            self.cores,
            self.loadavg_start,
            self.audio,
            self.late_allowance_us as f64 / 1000.0,
            self.rig_rt_priority.map_or("normal scheduling".into(), |p| format!("SCHED_FIFO {p}")),
            if self.daemon_args.is_empty() { "none".to_owned() } else { format!("`{}`", self.daemon_args.join(" ")) },
        ));
        if !self.load.is_empty() {
            md.push_str(&format!(
                "## Latency under load ({} s per row)\n\n",
                self.load[0].duration_s
            ));
            md.push_str(RUN_HEADER);
            for r in &self.load {
                md.push_str(&run_rows(r));
            }
            md.push_str("\nThe PTY is one serial line = one connection: it carries at most the handshake's `max_streams` (8); a PTY row with more streams puts the rest on socket connections beside it (rows “↳”). “unanswered” counts frames with no answer or more than one.\n");
            md.push_str(&notes(&self.load.iter().collect::<Vec<_>>()));
            md.push('\n');
        }
        if let Some(c) = &self.capacity {
            md.push_str("## Capacity (socket)\n\n");
            let cap = c.capacity.map_or("none confirmed".to_owned(), |n| {
                if c.at_stream_limit {
                    format!("≥ {n} (the daemon's stream limit)")
                } else {
                    n.to_string()
                }
            });
            let confirm_s = c.confirms.last().map_or(0.0, |r| r.duration_s);
            md.push_str("| capacity: streams with 0 misses, 0 rejections, 0 written late | over | compute bound (cores × 80 ms ÷ Σ stage p50) | Σ stage p50 (vad+mel+embedding+head) | bound from mean server compute | Σ stage p99.9 | admission WCET / typical (daemon) |\n|---:|---:|---:|---:|---:|---:|---:|\n");
            md.push_str(&format!(
                "| **{cap}** | {confirm_s} s | {} | {} µs ({}) | {} | {} µs | {} |\n\n",
                c.compute_bound
                    .map_or("?".into(), |b| format!("{:.1} ({} cores)", b, c.cores)),
                c.compute_p50_us,
                c.stage_p50_us
                    .iter()
                    .map(|(s, v)| format!("{s} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                match (c.compute_bound_mean, c.compute_mean_us) {
                    (Some(b), Some(m)) => format!("{b:.1} (mean {m:.0} µs)"),
                    _ => "?".into(),
                },
                c.stage_p999_us.iter().map(|s| u64::from(s.1)).sum::<u64>(),
                match (c.wcet_us, c.typical_us) {
                    (Some(w), Some(t)) => format!("{w} / {t} µs"),
                    _ => "?".into(),
                },
            ));
            md.push_str(&format!(
                "Search probes ({} s each, stopped at the first miss or rejection, a failed probe repeated once): {}.\n\n",
                c.probe_s,
                c.probes
                    .iter()
                    .map(|(n, ok, early)| format!(
                        "{n} {}",
                        if *ok {
                            "pass"
                        } else if *early {
                            "fail (stopped early)"
                        } else {
                            "fail"
                        }
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            if !c.confirms.is_empty() {
                md.push_str("Confirming runs:\n\n");
                md.push_str(RUN_HEADER);
                for r in &c.confirms {
                    md.push_str(&run_rows(r));
                }
                md.push_str(&notes(&c.confirms.iter().collect::<Vec<_>>()));
                md.push('\n');
            }
        }
        if !self.overload.is_empty() {
            md.push_str(&format!(
                "## Overload ({} s per row)\n\n",
                self.overload[0].duration_s
            ));
            for (r, b) in self.overload.iter().zip(&self.overload_basis) {
                md.push_str(&format!("- {} streams: {b}\n", r.streams));
            }
            md.push('\n');
            md.push_str(RUN_HEADER);
            for r in &self.overload {
                md.push_str(&run_rows(r));
            }
            md.push_str("\n| streams | frames | answered exactly once | late | daemon VmRSS first / max / last MiB | growth | VmHWM MiB |\n|---:|---:|---:|---:|---|---:|---:|\n");
        }
        for r in &self.overload {
            let t = &r.total;
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} / {} / {} | {} | {} |\n",
                r.streams,
                t.frames,
                t.answered_once,
                t.late,
                mib(r.memory.first_kb),
                mib(r.memory.max_kb),
                mib(r.memory.last_kb),
                r.memory.growth_kb().map_or("?".into(), |g| format!(
                    "{:+.1} MiB ({})",
                    g as f64 / 1024.0,
                    if g.unsigned_abs() <= MEMORY_FLAT_KB {
                        "flat"
                    } else {
                        "NOT flat"
                    }
                )),
                mib(r.memory.hwm_kb),
            ));
        }
        if !self.overload.is_empty() {
            md.push_str(&format!(
                "\nMemory sampled every second after a 2 s unmeasured warm-up at the same load; “flat” = |last − first| ≤ {} MiB.\n",
                MEMORY_FLAT_KB / 1024
            ));
            md.push_str(&notes(&self.overload.iter().collect::<Vec<_>>()));
            md.push('\n');
        }
        if !self.hog.is_empty() {
            md.push_str(&format!(
                "## CPU hog ({})\n\n",
                self.hog[0].beside.as_deref().unwrap_or("")
            ));
            md.push_str("| daemon | path | streams | frames | client p50 ms | p99 ms | p99.9 ms | max ms | server total p99 ms | results | misses | rejections | late | unanswered | rig lag max ms | steal ms |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for r in &self.hog {
                let t = &r.total;
                let daemon = if r.beside.as_deref().is_some_and(|b| b.contains("--no-rt")) {
                    "--no-rt"
                } else {
                    "real-time"
                };
                md.push_str(&format!(
                    "| {daemon} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    r.path,
                    r.streams,
                    latency_cells(t),
                    t.rejections(),
                    late_cell(t),
                    t.unanswered + t.duplicates,
                    ms(r.send_lag_max_us),
                    r.steal_ms.map_or("?".into(), |s| s.to_string()),
                ));
            }
            md.push_str(&notes(&self.hog.iter().collect::<Vec<_>>()));
            md.push('\n');
        }
        if let Some(f) = &self.flood {
            md.push_str(&f.markdown());
        }
        md.push_str(&format!(
            "Invariants (every frame answered exactly once, no late answer): **{}**. Total time {:.0} s.\n",
            if self.ok() { "held" } else { "BROKEN" },
            self.wall_s
        ));
        md
    }

    /// Writes `bench-load.md` and `bench-load.json` into `dir`.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn write(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let md = dir.join("bench-load.md");
        std::fs::write(&md, self.markdown())
            .with_context(|| format!("writing {}", md.display()))?;
        let json = dir.join("bench-load.json");
        std::fs::write(&json, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", json.display()))?;
        Ok(vec![md, json])
    }
}
