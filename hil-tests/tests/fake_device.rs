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
