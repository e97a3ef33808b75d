//! The rig against `examples/fake_outpostd.rs`, a protocol stand-in for the daemon:
//! process management (READY, exit before READY, timeout, stop on drop), the serial
//! (PTY) and socket links, sessions, the fault scenario and a whole `run`. These do not
//! need the real outpostd; they check the rig, not the device.

use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_hil::device::{Device, DeviceConfig};
use outpost_hil::link::{SerialLink, SocketLink};
use outpost_hil::scenario::{Outcome, Rig};
use outpost_hil::session::Session;
use outpost_hil::sim::{SimError, SimOptions, SimulatedDevice};

/// `cargo test` builds examples into target/<profile>/examples; tests run from deps/.
fn fake_outpostd() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples/fake_outpostd");
    assert!(
        p.is_file(),
        "{} not built (cargo test builds examples)",
        p.display()
    );
    p
}

fn start() -> SimulatedDevice {
    SimulatedDevice::start(&SimOptions::new(fake_outpostd())).expect("fake daemon starts")
}

fn pid_alive(pid: u32) -> bool {
    // A zombie has no /proc/<pid>/status "State: Z" once reaped; drop reaps.
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| !s.contains("State:\tZ"))
        .unwrap_or(false)
}

#[test]
fn ready_is_parsed_and_daemon_stopped_on_drop() {
    let dev = start();
    let pid = dev.pid();
    assert!(
        dev.pty_path().starts_with("/dev/pts"),
        "{:?}",
        dev.pty_path()
    );
    assert!(dev.socket_path().exists());
    assert_eq!(dev.ready().bundle.as_deref(), Some("fake-1"));
    assert!(dev.ready().boot_ms.is_some());
    assert!(pid_alive(pid));
    let dir = dev.temp_dir().to_owned();
    drop(dev);
    assert!(!pid_alive(pid), "daemon {pid} still running after drop");
    assert!(!dir.exists(), "temp dir {} not removed", dir.display());
}

#[test]
fn exit_before_ready_quotes_the_log() {
    let mut opts = SimOptions::new(fake_outpostd());
    opts.env.push(("FAKE_OUTPOSTD_MODE".into(), "exit".into()));
    let r = SimulatedDevice::start(&opts);
    match r {
        Err(e @ SimError::Exited { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("bundle verification failed"), "{msg}");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
}

#[test]
fn silent_daemon_times_out_and_is_killed() {
    let mut opts = SimOptions::new(fake_outpostd());
    opts.env
        .push(("FAKE_OUTPOSTD_MODE".into(), "silent".into()));
    opts.ready_timeout = Duration::from_millis(500);
    match SimulatedDevice::start(&opts) {
        Err(e @ SimError::Timeout { .. }) => assert!(e.to_string().contains("no READY line")),
        other => panic!("expected Timeout, got {other:?}"),
    }
}

#[test]
fn safe_mode_is_reported_at_once_with_its_reason() {
    let mut opts = SimOptions::new(fake_outpostd());
    opts.env
        .push(("FAKE_OUTPOSTD_MODE".into(), "safe-mode".into()));
    // Waiting for a READY line would end in SimError::Timeout.
    opts.ready_timeout = Duration::from_secs(30);
    match SimulatedDevice::start(&opts) {
        Err(e @ SimError::SafeMode { .. }) => {
            assert!(e.to_string().contains("bundle rejected: fake"), "{e}")
        }
        other => panic!("expected SafeMode, got {other:?}"),
    }
}

#[test]
fn missing_binary_is_explicit() {
    let e = SimulatedDevice::start(&SimOptions::new("/nonexistent/outpostd")).unwrap_err();
    assert!(matches!(e, SimError::NotFound(_)));
    assert!(e.to_string().contains("--outpostd"), "{e}");
}

#[test]
fn sessions_over_pty_and_socket() {
    let dev = start();
    for link in [
        Box::new(SerialLink::open(dev.pty_path(), 921_600).unwrap())
            as Box<dyn outpost_hil::link::Link>,
        Box::new(SocketLink::connect(dev.socket_path()).unwrap()),
    ] {
        let mut s = Session::new(link, Duration::from_secs(2)).unwrap();
        s.sync().unwrap();
        let h = s.hello("test").unwrap();
        assert_eq!(h.labels.len(), 13);
        s.ping().unwrap();
        s.open_stream(3).unwrap();
        let frames = vec![vec![0u8; 2560]; 5];
        let recs = s.stream(3, &frames).unwrap();
        assert_eq!(recs.len(), 5);
        assert!(recs.iter().all(|r| r.timing().is_some()));
        assert_eq!(s.close_stream(3).unwrap(), (5, 0));
        assert_eq!(s.status().unwrap().state, "Ready");
    }
}

#[test]
fn faults_and_concurrency_scenarios_against_the_fake() {
    let cfg = DeviceConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("devices/sim.toml"))
        .unwrap();
    let device = Device::simulated(cfg, start());
    let mut rig = Rig::new(&device, Vec::new(), "none (test)".into());
    let h = rig.run("handshake");
    assert_eq!(h.outcome, Outcome::Pass, "{:#?}", h.details);
    let f = rig.run("faults");
    assert_eq!(f.outcome, Outcome::Pass, "{:#?}", f.details);
    assert!(f
        .details
        .iter()
        .any(|d| d.contains("second connection kept streaming")));
    let c = rig.run("concurrency");
    assert_eq!(c.outcome, Outcome::Pass, "{:#?}", c.details);
    // No clips: skipped with the reason, never passed.
    let m = rig.run("commands");
    assert_eq!(m.outcome, Outcome::Skip);
    assert!(m.summary.contains("no clips"), "{}", m.summary);
    assert_eq!(rig.run("nonsense").outcome, Outcome::Skip);
}

#[test]
fn absent_serial_device_is_skipped_not_passed() {
    let cfg = DeviceConfig::from_toml(
        "name = \"bench\"\n[link]\nkind = \"serial\"\npath = \"/dev/ttyUSB-hil-none\"\n",
        Path::new("t.toml"),
    )
    .unwrap();
    let e = Device::bring_up(cfg, &SimOptions::new(fake_outpostd())).unwrap_err();
    assert!(e.to_string().contains("skipped"), "{e}");
}

/// The two bench-load tests one at a time: the flood's garbage (which the fake answers
/// without ever throttling) loads the cores enough to make the other's answers late.
static BENCH_LOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn bench_load_against_the_fake() {
    use outpost_hil::load::{run_bench_load, HogKind, LoadOptions, LoadScenario};
    let _one = BENCH_LOAD.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let opts = LoadOptions {
        sim: SimOptions::new(fake_outpostd()),
        clips: Vec::new(),
        scenarios: vec![
            LoadScenario::Load,
            LoadScenario::Overload,
            LoadScenario::Hog,
        ],
        // The fake announces 4 streams per connection: 5 streams take 2 socket
        // connections, or the PTY line (4) plus one socket connection.
        stream_counts: vec![1, 5],
        duration: Duration::from_millis(480),
        capacity_duration: Duration::from_millis(480),
        probe_duration: Duration::from_millis(240),
        capacity_hint: Some(2),
        hog_streams: 2,
        hog_workers: 1,
        hog_kind: HogKind::Spin,
        hog_no_rt: false,
        late_allowance_us: 2_000,
        rig_rt_priority: None,
        log_dir: Some(dir.path().to_owned()),
        flood_phase: Duration::from_millis(480),
        flood_settle: Duration::from_millis(100),
        flood_churn_per_min: 1200,
        flood_victim_streams: 1,
        seed: 1,
    };
    let rep = run_bench_load(&opts).expect("bench-load runs");
    assert_eq!(rep.load.len(), 4);
    for r in rep.load.iter().chain(&rep.overload).chain(&rep.hog) {
        assert!(r.error.is_none(), "{:?}", r.error);
        let t = &r.total;
        // 480 ms = 6 frames per stream, each answered once with a result.
        assert_eq!(t.frames, 6 * r.streams as u64, "{r:?}");
        assert_eq!(t.results, t.frames);
        assert_eq!(t.answered_once, t.frames);
        assert_eq!((t.unanswered, t.duplicates, t.stray, t.late), (0, 0, 0, 0));
        assert_eq!(t.client.count, t.frames);
    }
    let pty5 = &rep.load[3];
    assert_eq!(
        (pty5.path.as_str(), pty5.streams, pty5.conns),
        ("pty", 5, 2)
    );
    assert_eq!(pty5.groups.len(), 2);
    assert_eq!(rep.overload.len(), 1);
    assert_eq!(rep.overload[0].streams, 4);
    assert_eq!(rep.hog.len(), 2);
    assert!(rep.ok());
    let files = rep.write(dir.path()).unwrap();
    let md = std::fs::read_to_string(&files[0]).unwrap();
    assert!(md.contains("## Latency under load"), "{md}");
    assert!(md.contains("↳ pty part"), "{md}");
    assert!(
        md.contains("4 streams: 2 × capacity 2 given with --capacity"),
        "{md}"
    );
    assert!(md.contains("## CPU hog"), "{md}");
    assert!(dir.path().join("outpostd-load.log").is_file());
}

#[test]
fn bench_load_flood_against_the_fake() {
    use outpost_hil::load::{run_bench_load, HogKind, LoadOptions, LoadScenario};
    let _one = BENCH_LOAD.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let opts = LoadOptions {
        sim: SimOptions::new(fake_outpostd()),
        clips: Vec::new(),
        scenarios: vec![LoadScenario::Flood],
        stream_counts: vec![1],
        duration: Duration::from_millis(480),
        capacity_duration: Duration::from_millis(480),
        probe_duration: Duration::from_millis(240),
        capacity_hint: None,
        hog_streams: 1,
        hog_workers: 1,
        hog_kind: HogKind::Spin,
        hog_no_rt: false,
        late_allowance_us: 2_000,
        rig_rt_priority: None,
        log_dir: Some(dir.path().to_owned()),
        flood_phase: Duration::from_millis(480),
        flood_settle: Duration::from_millis(100),
        flood_churn_per_min: 1200,
        flood_victim_streams: 2,
        seed: 7,
    };
    let rep = run_bench_load(&opts).expect("bench-load runs");
    let f = rep.flood.as_ref().expect("flood ran");
    for r in [f.without.as_ref().unwrap(), f.with.as_ref().unwrap()] {
        assert!(r.error.is_none(), "{:?}", r.error);
        // 480 ms = 6 frames per stream, each answered once (the fake has no deadline).
        assert_eq!(r.total.frames, 12, "{r:?}");
        assert_eq!(r.total.answered_once, r.total.frames);
    }
    assert_eq!(f.resources.len(), 4);
    assert!(f
        .resources
        .iter()
        .all(|x| x.rss_kb.is_some() && x.fds.is_some()));
    assert_eq!(f.flood.len(), 5, "{:?}", f.flood);
    // Every kind connected and the garbage went out.
    assert!(f.flood.iter().all(|k| k.connections > 0), "{:?}", f.flood);
    assert!(f.flood[0].bytes_sent > 0 && f.flood[0].answers_read > 0);
    let md = rep.markdown();
    assert!(md.contains("## Flood"), "{md}");
    assert!(md.contains("| without flood | socket | 2 |"), "{md}");
    assert!(md.contains("right after the flood"), "{md}");
}
