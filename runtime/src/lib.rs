//! Outpost runtime: ONNX Runtime sessions and execution providers
//! ([`ort_env`]), the streaming voice-command pipeline ([`pipeline`]), the decision
//! logic ([`decision`]), the deadline scheduler ([`scheduler`]: the EDF policy in
//! [`edf`], the compute estimates in [`estimator`], the answer contract in [`answer`]),
//! real-time setup ([`rt`]), latency accounting ([`stats`]) and stage 2, the Whisper
//! verifier ([`verifier`]).

pub mod answer;
pub mod decision;
pub mod edf;
pub mod estimator;
pub mod ort_env;
pub mod pipeline;
pub mod rt;
pub mod scheduler;
pub mod stats;
pub mod verifier;

use outpost_protocol::Stage;

/// Errors of the runtime. Each names the stage or file involved and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The ONNX Runtime shared library was not found.
    #[error("ONNX Runtime library not found (searched: {searched}); run `scripts/setup` to install onnxruntime {ver} from PyPI, or set ORT_DYLIB_PATH to libonnxruntime.so", ver = ort_env::PINNED_ORT_VERSION)]
    LibraryNotFound {
        /// Paths searched, comma-separated.
        searched: String,
    },
    /// The library exists but could not be loaded or initialised.
    #[error("could not load ONNX Runtime from {path}: {detail}")]
    LibraryLoad {
        /// Library path.
        path: String,
        /// Loader message.
        detail: String,
    },
    /// A model could not be turned into a session.
    #[error("{stage} model: could not create an ONNX Runtime session: {detail}")]
    Session {
        /// Pipeline stage.
        stage: Stage,
        /// ONNX Runtime message.
        detail: String,
    },
    /// A stage failed (or was cancelled) while running.
    #[error("{stage} inference failed: {detail}")]
    Inference {
        /// Pipeline stage.
        stage: Stage,
        /// ONNX Runtime message.
        detail: String,
    },
    /// ONNX Runtime could not create the options a run is cancelled through.
    #[error("could not create ONNX Runtime run options: {0}")]
    RunOptions(String),
    /// The bundle's pipeline does not fit this runtime.
    #[error("pipeline does not fit this runtime: {0}")]
    Pipeline(String),
}
