//! In-process tests of the daemon's parts on the dev bundle (ONNX Runtime, CPU). Needs
//! `scripts/setup` to have run.
//!
//! * The deadline runs to the first byte written (docs/DESIGN.md §4): a connection whose
//!   writes stall past the deadline gets `DeadlineMissed`, never a late result passed
//!   off as on time, and the daemon counts every late write in status. The dev bundle
//!   is booted with [`outpost_host::boot::boot`], one connection served by
//!   [`outpost_host::server::serve_connection`] over a socket pair whose daemon-side
//!   writer stalls after every write, as a writer thread descheduled by a busy host
//!   would.
//! * The boot self-test: a wrong recognition fails at once, a frame over its budget in
//!   every pass fails.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use outpost_host::boot::{boot, load_bundle, run_self_test, SELF_TEST_TIMING_PASSES};
use outpost_host::server::{serve_connection, TransportKind};
use outpost_host::state::{BootOptions, Daemon, Limits, UtteranceOptions};
use outpost_protocol::client::{Client, Received, ResponseFrame};
use outpost_protocol::{
    Audio, Hello, OpenStream, Request, Response, FRAME_AUDIO_BYTES, FRAME_SAMPLES, SAMPLE_RATE_HZ,
};
use outpost_runtime::ort_env::SessionConfig;
use outpost_runtime::pipeline::Engine;
use outpost_runtime::scheduler::{Counters, SchedulerConfig};
use outpost_runtime::stats::LatencyStats;

/// How long the writer stalls after each write. The client sends the next frame as
/// soon as it reads an answer, so that frame's answer reaches the writer about
/// `STALL` after the frame arrived: far past the 30 ms deadline.
const STALL: Duration = Duration::from_millis(80);

/// A writer that stalls after every write, like a writer thread the host deschedules.
struct StalledWriter(UnixStream);

impl Write for StalledWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()?;
        std::thread::sleep(STALL);
        Ok(())
    }
}

fn dev_bundle() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join(".outpost/dev.bundle");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup first",
        p.display()
    );
    p
}

fn expect_frame(c: &mut Client<UnixStream, UnixStream>) -> ResponseFrame {
    match c.recv().expect("an answer") {
        Received::Frame(f) => f,
        Received::Damaged(e) => panic!("damaged answer: {e:?}"),
    }
}

fn dev_boot_options() -> BootOptions {
    BootOptions {
        bundle: Some(dev_bundle()),
        dev: true,
        trusted_keys: None,
        session: SessionConfig::default(),
        workers: 1,
        limits: Limits::default(),
        scheduler: SchedulerConfig::default(),
        warmup_frames: 4,
        verifier_workers: 1,
        verify_deadline_ms: None,
        early_verify_margin: Some(2.0),
        early_command_gap: 4.0,
        early_fallback_gap: Some(4.0),
        command_gap: 1.0,
        utterance_verify: Some(UtteranceOptions {
            min_speech_frames: 3,
            quiet_frames: 2,
            lead_frames: 4,
        }),
        state_dir: None,
    }
}

#[test]
fn a_self_test_fails_on_a_wrong_recognition_or_a_budget_missed_in_every_pass() {
    let opts = dev_boot_options();
    let bundle = load_bundle(&opts).unwrap();
    let mut engine = Engine::new(&bundle, &opts.session).unwrap();
    let mut t = bundle.manifest.self_tests[0].clone();
    let worst = run_self_test(&mut engine, None, &bundle, &t).expect("the dev bundle's self-test");
    assert!(worst > 0);

    t.max_frame_us = 1;
    let e = run_self_test(&mut engine, None, &bundle, &t)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "in {SELF_TEST_TIMING_PASSES} passes, each over its budget 1 µs"
        )),
        "{e}"
    );

    t.max_frame_us = u32::MAX;
    t.expect_label = "volume down".into();
    let e = run_self_test(&mut engine, None, &bundle, &t)
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected exactly one 'volume down'"), "{e}");
}

#[test]
fn answers_written_after_the_deadline_go_out_as_deadline_misses_and_are_counted() {
    let opts = dev_boot_options();
    let stats = Arc::new(LatencyStats::new());
    let counters = Arc::new(Counters::default());
    let serving = boot(&opts, &stats, &counters);
    assert!(serving.scheduler.is_some(), "dev bundle did not boot");
    let daemon = Arc::new(Daemon::new(
        opts.limits.clone(),
        serving,
        stats,
        Arc::clone(&counters),
        Instant::now(),
    ));

    let (ours, theirs) = UnixStream::pair().unwrap();
    theirs
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let d = Arc::clone(&daemon);
    let server = std::thread::spawn(move || {
        let reader = theirs.try_clone().unwrap();
        serve_connection(
            &d,
            Box::new(reader),
            Box::new(StalledWriter(theirs)),
            TransportKind::UnixSocket,
            "stalled-writer test",
            false,
        );
    });
    ours.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut c = Client::new(ours.try_clone().unwrap(), ours);

    c.call(&Request::Hello(Hello { client: "test" }))
        .expect("hello");
    c.call(&Request::OpenStream(OpenStream {
        stream_id: 1,
        sample_rate_hz: SAMPLE_RATE_HZ,
        frame_samples: FRAME_SAMPLES as u16,
        deadline_us: 0,
    }))
    .expect("open");

    const FRAMES: u32 = 6;
    let pcm = [0u8; FRAME_AUDIO_BYTES];
    for seq in 0..FRAMES {
        c.send(&Request::Audio(Audio {
            stream_id: 1,
            seq,
            deadline_us: 0,
            pcm: &pcm,
        }))
        .unwrap();
        // One frame at a time: computed well within its deadline, its answer waits
        // for the stalled writer and is written late.
        let answer = expect_frame(&mut c);
        let env = answer.decode().unwrap();
        match env.body {
            Response::DeadlineMissed {
                seq: s,
                deadline_us,
                elapsed_us,
                ..
            } => {
                assert_eq!(s, seq);
                assert!(
                    elapsed_us > deadline_us,
                    "the miss carries the write time: {elapsed_us} µs vs deadline {deadline_us} µs"
                );
            }
            other => panic!("frame {seq}: expected DeadlineMissed, got {other:?}"),
        }
    }

    let status = expect_status(&mut c);
    assert_eq!(status.0, u64::from(FRAMES), "late writes");
    assert_eq!(status.1, u64::from(FRAMES), "deadline misses");
    assert_eq!(status.2, 0, "results");

    daemon
        .stopping
        .store(true, std::sync::atomic::Ordering::Relaxed);
    drop(c);
    server.join().unwrap();
}

/// `(late_writes, deadline_misses, frames)` from a status request.
fn expect_status(c: &mut Client<UnixStream, UnixStream>) -> (u64, u64, u64) {
    let f = c.call(&Request::Status).expect("status");
    let env = f.decode().unwrap();
    match env.body {
        Response::Status(s) => (s.late_writes, s.deadline_misses, s.frames),
        other => panic!("expected status, got {other:?}"),
    }
}
