//! Parsing: the daemon's READY line, device TOML files, clips.tsv, /proc status.

use std::path::{Path, PathBuf};

use outpost_hil::clips::{normalise_label, parse_clips_tsv, to_frames, ClipError};
use outpost_hil::device::{ConfigError, DeviceConfig, LinkConfig};
use outpost_hil::procinfo::parse_proc_status_kb;
use outpost_hil::sim::{ReadyError, ReadyLine};
use outpost_protocol::FRAME_AUDIO_BYTES;

#[test]
fn ready_line_full() {
    let r = ReadyLine::parse(
        "READY pty=/dev/pts/7 socket=/tmp/x/outpostd.sock bundle=outpost-ref-dev-3 boot_ms=812 pid=4242",
    )
    .unwrap();
    assert_eq!(r.pty, Some(PathBuf::from("/dev/pts/7")));
    assert_eq!(r.socket, Some(PathBuf::from("/tmp/x/outpostd.sock")));
    assert_eq!(r.bundle.as_deref(), Some("outpost-ref-dev-3"));
    assert_eq!(r.boot_ms, Some(812));
    assert_eq!(r.pid, Some(4242));
    assert!(r.other.is_empty());
}

#[test]
fn ready_line_any_order_unknown_keys_and_spaces() {
    let r = ReadyLine::parse("READY  pid=1   provider=cpu pty=/dev/pts/0\r\n").unwrap();
    assert_eq!(r.pid, Some(1));
    assert_eq!(r.pty, Some(PathBuf::from("/dev/pts/0")));
    assert_eq!(r.socket, None);
    assert_eq!(r.other.get("provider").map(String::as_str), Some("cpu"));
}

#[test]
fn ready_line_errors() {
    assert!(matches!(
        ReadyLine::parse("booting pty=/dev/pts/1"),
        Err(ReadyError::NotReady(_))
    ));
    assert!(matches!(ReadyLine::parse(""), Err(ReadyError::NotReady(_))));
    assert!(matches!(
        ReadyLine::parse("READYX pid=1"),
        Err(ReadyError::NotReady(_))
    ));
    assert_eq!(
        ReadyLine::parse("READY pty"),
        Err(ReadyError::BadField("pty".into()))
    );
    assert_eq!(
        ReadyLine::parse("READY =x"),
        Err(ReadyError::BadField("=x".into()))
    );
    assert!(matches!(
        ReadyLine::parse("READY boot_ms=fast"),
        Err(ReadyError::BadNumber { .. })
    ));
    assert!(matches!(
        ReadyLine::parse("READY pid=99999999999"),
        Err(ReadyError::BadNumber { .. })
    ));
    // The error names what was expected.
    let msg = ReadyLine::parse("hello").unwrap_err().to_string();
    assert!(msg.contains("READY key=value"), "{msg}");
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn shipped_device_configs_parse() {
    let sim = DeviceConfig::load(&repo_file("devices/sim.toml")).unwrap();
    assert_eq!(sim.name, "sim");
    assert!(matches!(sim.link, LinkConfig::Simulated { .. }));
    assert_eq!(sim.expect.labels, 13);
    assert!(sim.unavailable_reason().is_none());

    let serial = DeviceConfig::load(&repo_file("devices/example-serial.toml")).unwrap();
    match &serial.link {
        LinkConfig::Serial { path, baud, socket } => {
            assert_eq!(path, Path::new("/dev/ttyUSB0"));
            assert_eq!(*baud, 921_600);
            assert!(socket.is_none());
        }
        other => panic!("expected a serial link, got {other:?}"),
    }
}

#[test]
fn missing_serial_port_is_a_reason_to_skip() {
    let cfg = DeviceConfig::from_toml(
        "name = \"x\"\n[link]\nkind = \"serial\"\npath = \"/dev/does-not-exist-hil\"\n",
        Path::new("x.toml"),
    )
    .unwrap();
    let reason = cfg.unavailable_reason().expect("must be skipped");
    assert!(reason.contains("/dev/does-not-exist-hil"), "{reason}");
    // Defaults.
    assert!(matches!(cfg.link, LinkConfig::Serial { baud: 921_600, .. }));
    assert_eq!(cfg.scenarios.clients, 4);
    assert_eq!(cfg.scenarios.commands_min_accuracy, 1.0);
}

#[test]
fn socket_device_config() {
    let cfg = DeviceConfig::from_toml(
        "name = \"local\"\n[link]\nkind = \"socket\"\npath = \"/run/outpost/outpostd.sock\"\n",
        Path::new("local.toml"),
    )
    .unwrap();
    assert!(matches!(cfg.link, LinkConfig::Socket { .. }));
}

#[test]
fn bad_device_configs_are_explicit() {
    let origin = Path::new("bad.toml");
    let unknown_kind = DeviceConfig::from_toml("name = \"x\"\n[link]\nkind = \"usb\"\n", origin);
    assert!(matches!(unknown_kind, Err(ConfigError::Parse { .. })));
    let typo = DeviceConfig::from_toml(
        "name = \"x\"\n[link]\nkind = \"simulated\"\n[scenarios]\nclinets = 3\n",
        origin,
    );
    let msg = typo.unwrap_err().to_string();
    assert!(msg.contains("bad.toml") && msg.contains("clinets"), "{msg}");
    let acc = DeviceConfig::from_toml(
        "name = \"x\"\n[link]\nkind = \"simulated\"\n[scenarios]\ncommands_min_accuracy = 97\n",
        origin,
    );
    let msg = acc.unwrap_err().to_string();
    assert!(msg.contains("expected 0.0 to 1.0"), "{msg}");
    let baud = DeviceConfig::from_toml(
        "name = \"x\"\n[link]\nkind = \"serial\"\npath = \"/dev/ttyS0\"\nbaud = 0\n",
        origin,
    );
    assert!(matches!(baud, Err(ConfigError::Value { .. })));
    let no_link = DeviceConfig::from_toml("name = \"x\"\n", origin);
    assert!(matches!(no_link, Err(ConfigError::Parse { .. })));
}

#[test]
fn clips_tsv_parses_relative_absolute_comments_header() {
    let text = "path\tlabel\tvoice\n\
                # a comment\n\
                \n\
                en-us_f3/lights_on.wav\tlights on\ten-us+f3\n\
                /abs/stop.wav\tstop\ten-gb+m4\r\n";
    let clips = parse_clips_tsv(text, Path::new("/clips"), Path::new("/clips/clips.tsv")).unwrap();
    assert_eq!(clips.len(), 2);
    assert_eq!(
        clips[0].path,
        PathBuf::from("/clips/en-us_f3/lights_on.wav")
    );
    assert_eq!(clips[0].label, "lights on");
    assert_eq!(clips[0].voice, "en-us+f3");
    assert_eq!(clips[1].path, PathBuf::from("/abs/stop.wav"));
    assert_eq!(clips[1].voice, "en-gb+m4");
}

#[test]
fn clips_tsv_bad_line_names_file_and_line() {
    let err = parse_clips_tsv(
        "a.wav\tstop\tv\nb.wav stop v\n",
        Path::new("."),
        Path::new("clips.tsv"),
    )
    .unwrap_err();
    match &err {
        ClipError::BadLine { line, .. } => assert_eq!(*line, 2),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("clips.tsv:2"), "{err}");
    assert!(parse_clips_tsv("a.wav\t\tv\n", Path::new("."), Path::new("c")).is_err());
}

#[test]
fn frames_are_padded_and_followed_by_silence() {
    let samples: Vec<i16> = (0..3000).map(|i| i as i16 + 1).collect();
    let frames = to_frames(&samples, 13);
    assert_eq!(frames.len(), 3 + 13); // 1280 + 1280 + 440 (padded)
    assert!(frames.iter().all(|f| f.len() == FRAME_AUDIO_BYTES));
    assert_eq!(&frames[0][..4], &[1, 0, 2, 0]);
    let last_speech = &frames[2];
    assert_eq!(
        i16::from_le_bytes([last_speech[2 * 439], last_speech[2 * 439 + 1]]),
        3000
    );
    assert!(last_speech[2 * 440..].iter().all(|b| *b == 0));
    assert!(frames[3..].iter().all(|f| f.iter().all(|b| *b == 0)));
    assert!(to_frames(&[], 0).is_empty());
}

#[test]
fn labels_compare_loosely() {
    assert_eq!(normalise_label("Lights_On"), "lights on");
    assert_eq!(normalise_label(" go-ahead "), "go ahead");
    assert_eq!(normalise_label("none"), "none");
}

#[test]
fn proc_status_memory() {
    // As Linux 6.x shows it (trimmed of the lines the parser does not need).
    let text = "Name:\toutpostd\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\n\
                Pid:\t4242\nPPid:\t1\nTracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n\
                FDSize:\t64\nGroups:\t \nVmPeak:\t  300000 kB\nVmSize:\t  299000 kB\n\
                VmLck:\t   80000 kB\nVmHWM:\t   81234 kB\nVmRSS:\t   80000 kB\nThreads:\t9\n\
                SigQ:\t1/96362\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n\
                SigBlk:\t0000000000000000\nSigIgn:\t0000000000001000\nSigCgt:\t0000000100004a02\n\
                CapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n\
                voluntary_ctxt_switches:\t10\nnonvoluntary_ctxt_switches:\t2\n";
    assert_eq!(parse_proc_status_kb(text), (Some(80_000), Some(81_234)));
    // A kernel thread has no memory lines.
    let kthread = text
        .replace("VmHWM:\t   81234 kB\n", "")
        .replace("VmRSS:\t   80000 kB\n", "");
    assert_eq!(parse_proc_status_kb(&kthread), (None, None));
    assert_eq!(parse_proc_status_kb(""), (None, None));
}

#[test]
fn a_safe_mode_line_is_reported_with_its_reason() {
    let e = ReadyLine::parse(
        "SAFE-MODE state=safe-mode socket=/tmp/x.sock boot_ms=20 pid=7 reason=bundle rejected: bad key",
    )
    .unwrap_err();
    assert_eq!(e, ReadyError::SafeMode("bundle rejected: bad key".into()));
}
