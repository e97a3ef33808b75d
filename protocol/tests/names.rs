//! The names tools print for stages and execution providers.

use outpost_protocol::{Provider, Stage};

/// Every tool prints stages and execution providers by these names (status tables, the
/// daemon's log, the rig's reports); they are part of what scripts read.
#[test]
fn stage_and_provider_names_are_the_printed_ones() {
    let stages = [
        (Stage::Transport, "transport"),
        (Stage::Queue, "queue"),
        (Stage::Vad, "vad"),
        (Stage::Mel, "mel"),
        (Stage::Embedding, "embedding"),
        (Stage::Head, "head+decision"),
        (Stage::Write, "write"),
        (Stage::Total, "total"),
        (Stage::Verifier, "verifier"),
    ];
    for (s, name) in stages {
        assert_eq!(s.name(), name);
        assert_eq!(format!("{s}"), name);
    }
    for (p, name) in [
        (Provider::Cpu, "CPU"),
        (Provider::Cuda, "CUDA"),
        (Provider::TensorRt, "TensorRT"),
    ] {
        assert_eq!(format!("{p}"), name);
    }
}
