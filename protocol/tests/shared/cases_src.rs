// Message values used by the golden tests (shared by the generator below).
fn audio_pcm() -> Vec<u8> {
    // A deterministic ramp: sample i = (i * 37) as i16, s16le.
    (0..FRAME_SAMPLES)
        .flat_map(|i| ((i as i32 * 37) as i16).to_le_bytes())
        .collect()
}

fn requests(pcm: &[u8]) -> Vec<(&'static str, u32, Request<'_>)> {
    vec![
        ("hello", 1, Request::Hello(Hello { client: "hil" })),
        ("ping", 2, Request::Ping { nonce: 0xdead_beef }),
        (
            "open_stream",
            3,
            Request::OpenStream(OpenStream {
                stream_id: 7,
                sample_rate_hz: SAMPLE_RATE_HZ,
                frame_samples: FRAME_SAMPLES as u16,
                deadline_us: 0,
            }),
        ),
        (
            "audio",
            4,
            Request::Audio(Audio {
                stream_id: 7,
                seq: 0,
                deadline_us: 25_000,
                pcm,
            }),
        ),
        ("close_stream", 5, Request::CloseStream { stream_id: 7 }),
        ("status", 6, Request::Status),
    ]
}

fn responses() -> Vec<(&'static str, u32, Response<'static>)> {
    let mut labels = heapless::Vec::new();
    labels.push("stop").unwrap();
    labels.push("none").unwrap();
    let mut providers = heapless::Vec::new();
    providers
        .push(StageProvider { stage: Stage::Embedding, provider: Provider::Cpu })
        .unwrap();
    let mut latency = heapless::Vec::new();
    latency
        .push(StageLatency {
            stage: Stage::Total,
            count: 10_000,
            p50_us: 1500,
            p99_us: 2500,
            p999_us: 4000,
            max_us: 9000,
            budget_us: 30_000,
        })
        .unwrap();
    vec![
        (
            "hello_ack",
            1,
            Response::Hello(HelloAck {
                protocol_version: 1,
                bundle_name: "ref",
                bundle_version: 3,
                key_id: [1, 2, 3, 4, 5, 6, 7, 8],
                labels,
                sample_rate_hz: SAMPLE_RATE_HZ,
                frame_samples: FRAME_SAMPLES as u16,
                max_streams: 4,
                default_deadline_us: DEFAULT_DEADLINE_US,
                max_deadline_us: 100_000,
                max_frame_bytes: MAX_FRAME_BYTES as u16,
                verify_deadline_us: 250_000,
            }),
        ),
        ("pong", 2, Response::Pong { nonce: 0xdead_beef }),
        ("stream_opened", 3, Response::StreamOpened { stream_id: 7, deadline_us: 30_000 }),
        (
            "frame_detection",
            4,
            Response::Frame(FrameResult {
                stream_id: 7,
                seq: 12,
                vad_prob: 0.75,
                detection: Some(Detection { label: 0, score: 0.5, audio_ms: 1040 }),
                timing: Timing { queue_us: 10, compute_us: 1400, total_us: 1500 },
            }),
        ),
        (
            "frame_plain",
            4,
            Response::Frame(FrameResult {
                stream_id: 7,
                seq: 13,
                vad_prob: 0.0,
                detection: None,
                timing: Timing::default(),
            }),
        ),
        (
            "deadline_missed",
            4,
            Response::DeadlineMissed { stream_id: 7, seq: 14, deadline_us: 30_000, elapsed_us: 30_010 },
        ),
        (
            "rejected",
            4,
            Response::Rejected {
                stream_id: 7,
                seq: 15,
                reason: RejectReason::WouldMissDeadline,
                retry_after_us: 80_000,
            },
        ),
        ("stream_closed", 5, Response::StreamClosed { stream_id: 7, frames: 16, detections: 1 }),
        (
            "status_report",
            6,
            Response::Status(StatusReport {
                state: DeviceState::Ready,
                detail: "",
                bundle_name: "ref",
                bundle_version: 3,
                key_id: [1, 2, 3, 4, 5, 6, 7, 8],
                development: true,
                uptime_ms: 60_000,
                boot_to_ready_ms: 900,
                clients: 1,
                streams: 1,
                frames: 10_000,
                detections: 12,
                deadline_misses: 0,
                rejections: 0,
                errors: 0,
                providers,
                latency,
                slot: "a",
                provisioning: "2026-11-21T12:00:00Z install ok ref@3",
                cancellations: 2,
                wcet_us: 4100,
                typical_us: 2900,
                late_writes: 1,
                spread_us: 700,
                throttled_for_errors: 3,
                closed_for_errors: 1,
                verifications: 40,
                verify_misses: 1,
                verify_rejections: 2,
                verify_wcet_us: 81_000,
                verify_deadline_us: 250_000,
            }),
        ),
        ("error_crc", 0, Response::Error(WireError::BadCrc { received: 1, computed: 2 })),
        ("error_version", 9, Response::Error(WireError::UnknownVersion { got: 1, supported: 2 })),
        (
            "error_out_of_order",
            4,
            Response::Error(WireError::OutOfOrder { stream_id: 7, expected: 5, got: 3 }),
        ),
        (
            "verification_detected",
            4,
            Response::Verification(Verification {
                stream_id: 7,
                trigger_seq: 12,
                trigger_label: 0,
                end_seq: 14,
                outcome: VerifyOutcome::Detected(Detection { label: 0, score: 9.5, audio_ms: 1040 }),
                deadline_us: 250_000,
                timing: Timing { queue_us: 120, compute_us: 74_000, total_us: 75_500 },
            }),
        ),
        (
            "verification_no_command",
            5,
            Response::Verification(Verification {
                stream_id: 7,
                trigger_seq: 30,
                trigger_label: 0,
                end_seq: 30,
                outcome: VerifyOutcome::NoCommand { best_label: 0, margin: -3.25 },
                deadline_us: 250_000,
                timing: Timing { queue_us: 90, compute_us: 73_000, total_us: 74_000 },
            }),
        ),
        (
            "verification_missed",
            6,
            Response::Verification(Verification {
                stream_id: 7,
                trigger_seq: 41,
                trigger_label: 0,
                end_seq: 45,
                outcome: VerifyOutcome::DeadlineMissed,
                deadline_us: 250_000,
                timing: Timing { queue_us: 200_000, compute_us: 0, total_us: 248_000 },
            }),
        ),
    ]
}
