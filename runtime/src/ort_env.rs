//! Finding the ONNX Runtime library, creating the environment, and building every
//! session in one place with the execution-provider order of docs/DESIGN.md §7:
//! TensorRT (FP16, engine cache) → CUDA → CPU.
//!
//! `ort` is built with `load-dynamic`: nothing is downloaded at build time and the
//! shared library is found at run time.

use std::path::PathBuf;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use outpost_protocol::{Provider, Stage};

use crate::RuntimeError;

/// ONNX Runtime version the setup scripts install (PyPI wheel `onnxruntime`), and the
/// C API level the workspace compiles against (`ort` feature `api-21`, i.e. ONNX
/// Runtime ≥ 1.21 as shipped by JetPack 6).
pub const PINNED_ORT_VERSION: &str = "1.24.1";

/// Where `scripts/setup` installs the library, relative to the user's data dir
/// (`$XDG_DATA_HOME` or `~/.local/share`).
pub const INSTALL_SUBDIR: &str = "outpost/lib";

/// Candidate library paths in search order: `ORT_DYLIB_PATH`, the setup's install
/// dir, then the system locations used by the Yocto image.
pub fn library_candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        v.push(PathBuf::from(p));
        return v;
    }
    let data_home = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    if let Some(d) = data_home {
        v.push(d.join(INSTALL_SUBDIR).join("libonnxruntime.so"));
    }
    v.push(PathBuf::from("/usr/lib/libonnxruntime.so"));
    v.push(PathBuf::from("/usr/local/lib/libonnxruntime.so"));
    v
}

/// Finds the ONNX Runtime shared library.
///
/// # Errors
/// [`RuntimeError::LibraryNotFound`] naming every place searched and how to install it.
pub fn locate_library() -> Result<PathBuf, RuntimeError> {
    let candidates = library_candidates();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| RuntimeError::LibraryNotFound {
            searched: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

static ENV: OnceLock<Environment> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the library on first use.
///
/// # Errors
/// [`RuntimeError::LibraryNotFound`] or [`RuntimeError::LibraryLoad`].
pub fn environment() -> Result<&'static Environment, RuntimeError> {
    if let Some(env) = ENV.get() {
        return Ok(env);
    }
    let path = locate_library()?;
    let env = ort::init_from(&path)
        .map_err(|e| RuntimeError::LibraryLoad {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?
        .with_name("outpost")
        .with_telemetry(false)
        .build()
        .map_err(|e| RuntimeError::LibraryLoad {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
    log::info!("ONNX Runtime loaded from {}", path.display());
    Ok(ENV.get_or_init(|| env))
}

/// Which execution provider(s) to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProviderChoice {
    /// TensorRT, then CUDA, then CPU; the first that registers serves. A fall-back is
    /// logged as one warning line by the daemon and reported per stage in status.
    #[default]
    Auto,
    /// Only this provider; failure to register is an error (no silent fall-back).
    Only(Provider),
}

impl std::str::FromStr for ProviderChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Only(Provider::Cpu)),
            "cuda" => Ok(Self::Only(Provider::Cuda)),
            "tensorrt" | "trt" => Ok(Self::Only(Provider::TensorRt)),
            other => Err(format!(
                "unknown execution provider '{other}' (expected auto, tensorrt, cuda or cpu)"
            )),
        }
    }
}

/// Session settings shared by every stage.
#[derive(Debug, Clone, Default)]
pub struct SessionConfig {
    /// Provider policy.
    pub providers: ProviderChoice,
    /// Root of the TensorRT engine and timing caches (the slot's cache dir); each model
    /// gets its own subdirectory ([`trt_model_cache_dir`]). `None` disables the caches.
    pub trt_cache_dir: Option<PathBuf>,
}

/// The TensorRT engine cache directory for one model under the slot's cache root:
/// keyed by the model's SHA-256, the ONNX Runtime build (which pins the TensorRT it was
/// built with) and the precision, so no stale engine is ever reused.
pub fn trt_model_cache_dir(root: &std::path::Path, model: &[u8]) -> PathBuf {
    let sha = outpost_models::format::sha256(model);
    root.join(outpost_models::format::trt_cache_key(
        &sha,
        ort::info(),
        "ort-build",
        "fp16",
    ))
}

fn dispatch(p: Provider, cfg: &SessionConfig, model: &[u8]) -> ep::ExecutionProviderDispatch {
    match p {
        Provider::TensorRt => {
            let mut trt = ep::TensorRT::default().with_fp16(true);
            if let Some(root) = &cfg.trt_cache_dir {
                let dir = trt_model_cache_dir(root, model);
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    log::warn!("cannot create TensorRT cache {}: {e}", dir.display());
                }
                let d = dir.display().to_string();
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(&d)
                    .with_timing_cache(true)
                    .with_timing_cache_path(&d);
            }
            trt.build().error_on_failure()
        }
        Provider::Cuda => ep::CUDA::default().build().error_on_failure(),
        Provider::Cpu => ep::CPU::default().build().error_on_failure(),
    }
}

fn available(p: Provider) -> bool {
    let r = match p {
        Provider::TensorRt => ep::TensorRT::is_available(),
        Provider::Cuda => ep::CUDA::is_available(),
        Provider::Cpu => Ok(true),
    };
    r.unwrap_or(false)
}

/// Builds one session from model bytes (already verified by the bundle), trying
/// providers per `cfg`. Returns the session and the provider that serves it.
///
/// One intra-op thread per session: per-frame work is small and parallelism comes
/// from running streams on several workers.
///
/// # Errors
/// [`RuntimeError::Session`] naming the stage and provider when the model cannot be
/// loaded, or when an explicitly requested provider cannot be registered.
pub fn build_session(
    stage: Stage,
    model: &[u8],
    cfg: &SessionConfig,
) -> Result<(Session, Provider), RuntimeError> {
    let env = environment()?;
    let order: &[Provider] = match cfg.providers {
        ProviderChoice::Auto => &[Provider::TensorRt, Provider::Cuda, Provider::Cpu],
        ProviderChoice::Only(Provider::TensorRt) => &[Provider::TensorRt],
        ProviderChoice::Only(Provider::Cuda) => &[Provider::Cuda],
        ProviderChoice::Only(Provider::Cpu) => &[Provider::Cpu],
    };
    let explicit = matches!(cfg.providers, ProviderChoice::Only(_));
    let mut last_err = String::new();
    for &p in order {
        if !explicit && p != Provider::Cpu && !available(p) {
            log::debug!(
                "{stage}: {} provider not available in this ONNX Runtime build",
                p
            );
            continue;
        }
        let attempt = (|| -> ort::Result<Session> {
            Session::builder(env)?
                .with_optimization_level(GraphOptimizationLevel::Level3)?
                .with_intra_threads(1)?
                .with_inter_threads(1)?
                .with_execution_providers([dispatch(p, cfg, model)])?
                .commit_from_memory(model)
        })();
        match attempt {
            Ok(s) => {
                // Per stage and session at debug level: the daemon logs one summary of
                // every stage's provider, and a fall-back there as a warning.
                log::debug!("{stage}: served by the {} provider", p);
                return Ok((s, p));
            }
            Err(e) => {
                last_err = format!("{}: {e}", p);
                if explicit {
                    break;
                }
                log::warn!("{stage}: {} provider failed: {e}", p);
            }
        }
    }
    Err(RuntimeError::Session {
        stage,
        detail: last_err,
    })
}
