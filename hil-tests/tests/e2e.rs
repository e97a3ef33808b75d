//! End-to-end against the real `outpostd` (found like the binary finds it:
//! `$OUTPOSTD`, else next to the test executable's target dir). Opt-in with
//! `OUTPOST_HIL_E2E=1`; needs `.outpost/dev.bundle` (scripts/setup), ONNX Runtime and
//! clips (scripts/make-clips). Without the variable each test prints why it is skipped.

use std::path::{Path, PathBuf};

use outpost_hil::device_checks::DEVICE_SCENARIOS;
use outpost_hil::runner::{self, RunOptions, RunOutcome};
use outpost_hil::scenario::Outcome;
use outpost_hil::{bench, clips, sim};

fn enabled(test: &str) -> bool {
    if std::env::var("OUTPOST_HIL_E2E").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("SKIPPED {test}: set OUTPOST_HIL_E2E=1 to run against the real outpostd");
    false
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn outpostd() -> PathBuf {
    let p = sim::find_outpostd(None);
    assert!(
        p.is_file(),
        "outpostd not found at {} (cargo build -p outpost-host, or set OUTPOSTD)",
        p.display()
    );
    p
}

#[test]
fn e2e_all_scenarios_pass_on_the_simulated_device() {
    if !enabled("e2e_all_scenarios_pass_on_the_simulated_device") {
        return;
    }
    // The daemon's --dev bundle path is relative to the workspace root.
    std::env::set_current_dir(workspace()).unwrap();
    let report_dir = workspace().join("target/hil-report/e2e");
    let opts = RunOptions {
        device: workspace().join("hil-tests/devices/sim.toml"),
        scenarios: Vec::new(),
        outpostd: outpostd(),
        report_dir: report_dir.clone(),
        clips_tsv: clips::default_clips_tsv(),
        clients: None,
    };
    let rep = match runner::run(&opts).unwrap() {
        RunOutcome::Ran(r) => r,
        RunOutcome::Skipped(why) => panic!("simulated device skipped: {why}"),
    };
    eprintln!("{}", rep.console_table());
    for s in &rep.scenarios {
        if DEVICE_SCENARIOS.contains(&s.name.as_str()) {
            // On-device checks need the appliance image: skipped, with the reason.
            assert_eq!(s.outcome, Outcome::Skip, "{}: {}", s.name, s.summary);
            assert!(s.summary.contains("simulated device"), "{}", s.summary);
            continue;
        }
        assert_ne!(
            s.outcome,
            Outcome::Skip,
            "{} skipped: {}",
            s.name,
            s.summary
        );
        assert_eq!(
            s.outcome,
            Outcome::Pass,
            "{} failed (see {}/summary.md):\n{}",
            s.name,
            report_dir.display(),
            s.details.join("\n")
        );
    }
    assert!(report_dir.join("report.json").is_file());
    assert!(report_dir.join("summary.md").is_file());
}

#[test]
fn e2e_bench_small() {
    if !enabled("e2e_bench_small") {
        return;
    }
    std::env::set_current_dir(workspace()).unwrap();
    let mut sim = sim::SimOptions::new(outpostd());
    sim.keep_log_to = Some(workspace().join("target/hil-report/e2e-bench/outpostd.log"));
    let (clips, _) = runner::load_clips(&clips::default_clips_tsv());
    let opts = bench::BenchOptions {
        frames: 300,
        warmup_frames: 20,
        sim,
        clips,
        answer_timeout: std::time::Duration::from_secs(5),
    };
    let mut rep = bench::run_bench(&opts).unwrap();
    rep.write(&workspace().join("target/hil-report/e2e-bench"))
        .unwrap();
    eprintln!("{}", rep.markdown());
    assert!(rep.ok(), "{}", rep.markdown());
    assert_eq!(rep.paths.len(), 2);
    assert!(rep.paths.iter().all(|p| p.frames == 300));
}
