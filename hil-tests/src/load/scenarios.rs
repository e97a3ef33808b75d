//! The five scenarios (`load`, `capacity`, `overload`, `hog`, `flood`) in run order:
//! each starts its own simulated device, runs what it needs and adds to the
//! [`LoadReport`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_protocol::Stage;

use super::flood::Flood;
use super::hog::Hog;
use super::plan::{confirm_steps, search_capacity};
use super::report::{CapacityResult, FloodResult, LoadReport, ResourceSnapshot};
use super::rt::rt_permitted;
use super::run::{progress, run_once, status, Daemon, RunSpec};
use super::{cores, LoadOptions, LoadScenario, DAEMON_MAX_STREAMS, FRAME_PERIOD};
use crate::bench::bench_audio;
use crate::procinfo::{fd_count, loadavg, read_memory_kb, thread_count};

/// Runs the scenarios.
///
/// # Errors
/// When a daemon cannot be started (with its log tail) or a hog cannot be started.
pub fn run_bench_load(opts: &LoadOptions) -> anyhow::Result<LoadReport> {
    let started = Instant::now();
    let (audio, audio_desc) = bench_audio(&opts.clips);
    let audio = Arc::new(audio);
    let rig_rt_priority = opts.rig_rt_priority.filter(|&p| rt_permitted(p));
    let opts = &LoadOptions {
        rig_rt_priority,
        ..opts.clone()
    };
    let mut rep = LoadReport {
        cores: cores(),
        loadavg_start: loadavg(),
        audio: audio_desc,
        late_allowance_us: opts.late_allowance_us,
        rig_rt_priority,
        daemon_args: opts.sim.extra_args.clone(),
        ..Default::default()
    };
    eprintln!(
        "bench-load: {} cores, load average {}, audio: {}, rig I/O threads {}",
        rep.cores,
        rep.loadavg_start,
        rep.audio,
        rig_rt_priority.map_or("normal scheduling".into(), |p| format!("SCHED_FIFO {p}"))
    );
    let spec = |scenario, streams, pty, duration| RunSpec {
        scenario,
        streams,
        pty,
        duration,
        stop_on_failure: false,
        beside: None,
    };
    let gap = || std::thread::sleep(Duration::from_millis(300));

    if opts.scenarios.contains(&LoadScenario::Load) {
        let d = Daemon::start(opts, "load", &[])?;
        for &n in &opts.stream_counts {
            for pty in [false, true] {
                let r = run_once(&d, &spec("load", n, pty, opts.duration), &audio, opts);
                progress(&r);
                rep.load.push(r);
                gap();
            }
        }
    }

    let mut capacity_found: Option<(usize, &str)> = None;
    if opts.scenarios.contains(&LoadScenario::Capacity) {
        let c = run_capacity(opts, &audio, true)?;
        capacity_found = match c.capacity {
            Some(n) => Some((n, "measured above")),
            None if c.search_found > 0 => {
                Some((c.search_found, "found by the search above, not confirmed"))
            }
            None => None,
        };
        rep.capacity = Some(c);
    }

    if opts.scenarios.contains(&LoadScenario::Overload) {
        let (cap, basis) = match (capacity_found, opts.capacity_hint) {
            (Some((c, how)), _) => (c, format!("capacity {c} {how}")),
            (None, Some(c)) => (c, format!("capacity {c} given with --capacity")),
            (None, None) => {
                let c = run_capacity(opts, &audio, false)?;
                let cap = c.capacity.unwrap_or(1);
                (cap, format!("capacity {cap} from a probe-only search"))
            }
        };
        let capped = |want: usize, basis: String| {
            let n = want.clamp(2, DAEMON_MAX_STREAMS);
            if n < want {
                (
                    n,
                    format!(
                        "{basis}; {want} capped at the daemon's {DAEMON_MAX_STREAMS}-stream limit"
                    ),
                )
            } else {
                (n, basis)
            }
        };
        let mut plan = vec![capped(2 * cap, format!("2 × {basis}"))];
        // Admission may hold the capacity far below what the CPUs could do; 2× the
        // compute bound is an overload of the CPUs themselves.
        if let Some(b) = rep.capacity.as_ref().and_then(|c| c.compute_bound) {
            let (n, why) = capped(
                (2.0 * b).ceil() as usize,
                format!("2 × the compute bound {b:.1}"),
            );
            if n > plan[0].0 {
                plan.push((n, why));
            }
        }
        let d = Daemon::start(opts, "overload", &[])?;
        for (n, basis) in plan {
            // A short unmeasured run first, so per-stream and per-connection allocations
            // do not count as growth.
            let warm = run_once(
                &d,
                &spec("overload", n, false, Duration::from_secs(2)),
                &audio,
                opts,
            );
            if let Some(e) = &warm.error {
                log::warn!("overload warm-up: {e}");
            }
            gap();
            let r = run_once(&d, &spec("overload", n, false, opts.duration), &audio, opts);
            progress(&r);
            rep.overload.push(r);
            rep.overload_basis.push(basis);
            gap();
        }
    }

    if opts.scenarios.contains(&LoadScenario::Hog) {
        let mut configs: Vec<(&str, Vec<&str>, Vec<bool>)> =
            vec![("hog", vec![], vec![false, true])];
        if opts.hog_no_rt {
            configs.push(("hog-no-rt", vec!["--no-rt"], vec![false]));
        }
        for (tag, extra, paths) in configs {
            let d = Daemon::start(opts, tag, &extra)?;
            let hog = Hog::start(
                opts.hog_kind,
                opts.hog_workers.max(1),
                opts.duration * 3 + Duration::from_secs(30),
            )?;
            // Let the hog get going.
            std::thread::sleep(Duration::from_millis(500));
            for pty in paths {
                let mut s = spec("hog", opts.hog_streams, pty, opts.duration);
                s.beside = Some(format!(
                    "{}; daemon {}",
                    hog.desc,
                    if d.rt { "real-time" } else { "--no-rt" }
                ));
                let r = run_once(&d, &s, &audio, opts);
                progress(&r);
                rep.hog.push(r);
                gap();
            }
            drop(hog);
        }
    }
    if opts.scenarios.contains(&LoadScenario::Flood) {
        rep.flood = Some(run_flood(opts, &audio)?);
    }
    rep.wall_s = started.elapsed().as_secs_f64();
    Ok(rep)
}

/// The daemon's VmRSS, open fds and threads now.
fn snapshot(pid: u32, when: &str) -> ResourceSnapshot {
    ResourceSnapshot {
        when: when.to_owned(),
        rss_kb: read_memory_kb(pid).0,
        fds: fd_count(pid),
        threads: thread_count(pid),
    }
}

/// The `flood` scenario: the victim alone, then the victim beside the flood, on one
/// daemon; the daemon's resources before, at the end of, right after and a settle period
/// after the flood.
fn run_flood(opts: &LoadOptions, audio: &Arc<Vec<Vec<u8>>>) -> anyhow::Result<FloodResult> {
    let d = Daemon::start(opts, "flood", &[])?;
    let pid = d.dev.pid();
    let mut f = FloodResult {
        phase_s: opts.flood_phase.as_secs_f64(),
        settle_s: opts.flood_settle.as_secs_f64(),
        churn_per_min: opts.flood_churn_per_min,
        seed: opts.seed,
        ..Default::default()
    };
    let victim = |label: &str| {
        let r = run_once(
            &d,
            &RunSpec {
                scenario: "flood",
                streams: opts.flood_victim_streams,
                pty: false,
                duration: opts.flood_phase,
                stop_on_failure: false,
                beside: Some(label.to_owned()),
            },
            audio,
            opts,
        );
        progress(&r);
        r
    };
    f.without = Some(victim("no flood"));
    std::thread::sleep(Duration::from_millis(300));
    let before = status(&d.dev).ok();
    f.resources.push(snapshot(pid, "before the flood"));
    let flood_started = Instant::now();
    let flood = Flood::start(d.dev.socket_path(), opts.seed, opts.flood_churn_per_min)?;
    // Let the flood get going before the victim connects (it connects during the flood).
    std::thread::sleep(Duration::from_secs(1));
    f.with = Some(victim("flood"));
    f.resources.push(snapshot(pid, "at the end of the flood"));
    f.flood = flood.stop();
    f.flood_s = flood_started.elapsed().as_secs_f64();
    f.resources.push(snapshot(pid, "right after the flood"));
    std::thread::sleep(opts.flood_settle);
    f.resources.push(snapshot(
        pid,
        &format!("{} s after the flood", opts.flood_settle.as_secs_f64()),
    ));
    match (before, status(&d.dev)) {
        (Some(b), Ok(a)) => {
            f.daemon_errors = Some(a.errors.saturating_sub(b.errors));
            f.daemon_throttled = Some(
                a.throttled_for_errors
                    .saturating_sub(b.throttled_for_errors),
            );
            f.daemon_closed_for_errors =
                Some(a.closed_for_errors.saturating_sub(b.closed_for_errors));
            f.daemon_clients_after = Some(a.clients);
        }
        (_, Err(e)) => log::warn!("flood: no status after the flood: {e:#}"),
        (None, _) => log::warn!("flood: no status before the flood"),
    }
    eprintln!(
        "bench-load: flood: {}",
        f.resources
            .iter()
            .map(|x| format!(
                "{}: rss {} kB, {} fds, {} threads",
                x.when,
                x.rss_kb.unwrap_or(0),
                x.fds.unwrap_or(0),
                x.threads.unwrap_or(0)
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    Ok(f)
}

/// Attempts of a capacity search probe before its stream count counts as failed.
const PROBE_ATTEMPTS: usize = 2;

/// The capacity search (probes from 4 streams, doubling, then bisection), and with
/// `confirm` the confirming runs stepping down from the count found.
fn run_capacity(
    opts: &LoadOptions,
    audio: &Arc<Vec<Vec<u8>>>,
    confirm: bool,
) -> anyhow::Result<CapacityResult> {
    let d = Daemon::start(opts, "capacity", &[])?;
    let max = DAEMON_MAX_STREAMS;
    let mut stopped = HashMap::new();
    // A failed probe is repeated once: on a VM one stall (steal) fails a 6 s probe at
    // any load, and the search would bisect far below the real capacity. A count
    // passes the search if either attempt is clean; the confirming run decides.
    let (found, probes) = search_capacity(4, max, |n| {
        (0..PROBE_ATTEMPTS).any(|_| {
            let r = run_once(
                &d,
                &RunSpec {
                    scenario: "probe",
                    streams: n,
                    pty: false,
                    duration: opts.probe_duration,
                    stop_on_failure: true,
                    beside: None,
                },
                audio,
                opts,
            );
            progress(&r);
            stopped.insert(n, r.stopped_early);
            std::thread::sleep(Duration::from_millis(300));
            r.clean()
        })
    });
    let mut c = CapacityResult {
        probes: probes
            .iter()
            .map(|&(n, ok)| (n, ok, stopped.get(&n).copied().unwrap_or(false)))
            .collect(),
        probe_s: opts.probe_duration.as_secs_f64(),
        search_found: found,
        cores: cores(),
        ..Default::default()
    };
    if !confirm {
        c.capacity = (found > 0).then_some(found);
    } else {
        // Confirm over the full duration, stepping down on failure: n, n − n/8,
        // n − n/4, n/2, n/4. A failing run stops at its first miss or rejection; an attempt starts
        // only if it can end within 2 × the confirmation length of the first one.
        let started = Instant::now();
        for n in confirm_steps(found) {
            if started.elapsed() + opts.capacity_duration > 2 * opts.capacity_duration {
                break;
            }
            let r = run_once(
                &d,
                &RunSpec {
                    scenario: "capacity",
                    streams: n,
                    pty: false,
                    duration: opts.capacity_duration,
                    stop_on_failure: true,
                    beside: None,
                },
                audio,
                opts,
            );
            progress(&r);
            let clean = r.clean();
            if clean {
                c.compute_mean_us = Some(r.total.server_compute.mean_us).filter(|m| *m > 0.0);
            }
            c.confirms.push(r);
            if clean {
                c.capacity = Some(n);
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    c.at_stream_limit = c.capacity == Some(max);
    match status(&d.dev) {
        Err(e) => log::warn!("capacity: no status: {e:#}"),
        Ok(st) => {
            c.wcet_us = Some(st.wcet_us);
            c.typical_us = Some(st.typical_us);
            for stage in [Stage::Vad, Stage::Mel, Stage::Embedding, Stage::Head] {
                if let Some(l) = st.latency.iter().find(|l| l.stage == stage.name()) {
                    c.stage_p50_us.push((stage.name().to_owned(), l.p50_us));
                    c.stage_p999_us.push((stage.name().to_owned(), l.p999_us));
                }
            }
            c.compute_p50_us = c.stage_p50_us.iter().map(|s| u64::from(s.1)).sum();
        }
    }
    let period_us = FRAME_PERIOD.as_micros() as f64;
    if c.compute_p50_us > 0 {
        c.compute_bound = Some(c.cores as f64 * period_us / c.compute_p50_us as f64);
    }
    c.compute_bound_mean = c.compute_mean_us.map(|m| c.cores as f64 * period_us / m);
    Ok(c)
}
