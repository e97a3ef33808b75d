//! The boot sequence: verify the bundle, build one pipeline engine per inference
//! worker, warm up, run the bundle's self-test vectors, start the scheduler. Any
//! failure leaves the daemon in safe mode (status answers, inference refused, the
//! reason in status), never a crash loop.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use outpost_models::manifest::SelfTest;
use outpost_models::{verify_path, PublicKey, TrustedKeys, VerifiedBundle, VerifyOptions};
use outpost_protocol::Provider;
use outpost_protocol::Stage;
use outpost_runtime::ort_env::{ProviderChoice, SessionConfig};
use outpost_runtime::pipeline::{Engine, FRAME_SAMPLES, MODEL_STAGES};
use outpost_runtime::scheduler::{
    Counters, Scheduler, UtteranceVerify, VerifyConfig, WindowVerifier,
};
use outpost_runtime::stats::LatencyStats;
use outpost_runtime::verifier::{Verifier, VerifierSpec};

use crate::state::{stage_providers, BootOptions, BundleInfo, Daemon, Serving, UtteranceOptions};

/// The development public key, compiled in. Trusted only with `--dev`.
pub const DEV_PUBLIC_KEY: &str =
    include_str!("../../models/reference/dev-keys/outpost-dev-DO-NOT-DEPLOY.pub");

/// Where `scripts/setup` writes the dev-signed reference bundle, relative to the
/// repository root.
pub const DEV_BUNDLE_RELATIVE: &str = ".outpost/dev.bundle";

/// Finds the dev bundle: `$OUTPOST_DEV_BUNDLE`, `./.outpost/dev.bundle`, or the
/// repository that holds the running binary (`target/<profile>/outpostd`).
pub fn default_dev_bundle() -> PathBuf {
    if let Some(p) = std::env::var_os("OUTPOST_DEV_BUNDLE") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(DEV_BUNDLE_RELATIVE);
    if local.is_file() {
        return local;
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            let c = dir.join(DEV_BUNDLE_RELATIVE);
            if c.is_file() {
                return c;
            }
        }
    }
    local
}

/// The keys this boot trusts.
///
/// # Errors
/// When the key directory cannot be read or a key file is malformed.
pub fn trusted_keys(dir: Option<&Path>, dev: bool) -> Result<TrustedKeys> {
    let mut keys: Vec<PublicKey> = match dir {
        Some(d) => TrustedKeys::load_dir(d)
            .with_context(|| format!("cannot load trusted keys from {}", d.display()))?
            .iter()
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    if dev {
        keys.push(
            PublicKey::parse(DEV_PUBLIC_KEY, Path::new("<embedded dev key>"))
                .context("embedded dev key is malformed")?,
        );
    }
    if keys.is_empty() {
        bail!("no trusted keys: pass --trusted-keys DIR (or --dev for the development key)");
    }
    Ok(TrustedKeys::from_keys(keys))
}

/// Verifies the bundle named by the options.
///
/// # Errors
/// The verification error, naming the file and what was wrong.
pub fn load_bundle(opts: &BootOptions) -> Result<VerifiedBundle> {
    let path = match &opts.bundle {
        Some(p) => p.clone(),
        None if opts.dev => default_dev_bundle(),
        None => bail!("no bundle given: pass --bundle FILE (or --dev for the development bundle)"),
    };
    if !path.is_file() {
        bail!(
            "bundle {} does not exist{}",
            path.display(),
            if opts.dev {
                " (run scripts/setup to build the dev bundle)"
            } else {
                ""
            }
        );
    }
    let keys = trusted_keys(opts.trusted_keys.as_deref(), opts.dev)?;
    let vopts = VerifyOptions {
        allow_development: opts.dev,
        expected_compatible: None,
    };
    let bundle = verify_path(&path, &keys, &vopts)
        .with_context(|| format!("cannot serve {}", path.display()))?;
    let runtime_version = env!("CARGO_PKG_VERSION");
    if !bundle.manifest.supports_runtime(runtime_version)? {
        bail!(
            "bundle {} needs runtime {}..={} (this is {runtime_version})",
            bundle.bundle_id(),
            bundle.manifest.runtime_min,
            bundle.manifest.runtime_max
        );
    }
    Ok(bundle)
}

/// Deterministic warm-up audio: a chirp with noise, int16 scale.
fn warmup_audio(frames: usize) -> Vec<i16> {
    let mut seed = 0x2545_f491_u32;
    (0..frames * FRAME_SAMPLES)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let t = i as f32 / 16_000.0;
            let tone = (2.0 * std::f32::consts::PI * (200.0 + 300.0 * t) * t).sin() * 3000.0;
            let noise = ((seed >> 16) as f32 / 65536.0 - 0.5) * 800.0;
            (tone + noise) as i16
        })
        .collect()
}

/// Passes of a self-test vector whose recognition is right but whose worst frame is
/// over its budget before the bundle is refused: a transient stall of the host (a VM
/// losing its CPU for tens of ms, measured on the development VM) fails one pass, a
/// pipeline that is really too slow (e.g. a provider fallen back to the CPU) fails
/// every pass.
pub const SELF_TEST_TIMING_PASSES: usize = 3;

/// Runs a bundle self-test vector on `engine`; returns the worst frame compute in µs of
/// the passing pass.
///
/// # Errors
/// The expected label was not detected exactly once (or something was detected for
/// `none`), checked on every pass; or the worst frame compute exceeded
/// `t.max_frame_us` in each of [`SELF_TEST_TIMING_PASSES`] passes (the message lists
/// them).
///
/// With `verifier`, stage 1's detections are triggers and what counts is the verifier's
/// verdict on the window that ends where the trigger's utterance ends
/// ([`VerifyConfig::utterance_ended`]), as the scheduler serves them; the verifier's
/// compute is not part of the frame budget.
pub fn run_self_test(
    engine: &mut Engine,
    mut verifier: Option<(&mut Verifier, &VerifyConfig)>,
    bundle: &VerifiedBundle,
    t: &SelfTest,
) -> Result<u32> {
    let raw = bundle
        .file(&t.audio_file)
        .with_context(|| format!("self-test audio '{}' is not in the bundle", t.audio_file))?;
    let mut pcm: Vec<i16> = raw
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    // Pad to whole frames, then 12 frames (960 ms) of silence so a command at the end
    // completes.
    let rem = pcm.len() % FRAME_SAMPLES;
    if rem != 0 {
        pcm.extend(std::iter::repeat_n(0, FRAME_SAMPLES - rem));
    }
    pcm.extend(std::iter::repeat_n(0, 12 * FRAME_SAMPLES));
    let mut worsts = Vec::new();
    for _ in 0..SELF_TEST_TIMING_PASSES {
        let worst = self_test_pass(
            engine,
            verifier.as_mut().map(|(v, c)| (&mut **v, &**c)),
            &pcm,
            t,
        )?;
        if worst <= t.max_frame_us {
            if !worsts.is_empty() {
                log::warn!(
                    "self-test '{}': worst frame over its {} µs budget in {} earlier pass(es) ({worsts:?} µs), within it now ({worst} µs): a transient stall",
                    t.audio_file,
                    t.max_frame_us,
                    worsts.len()
                );
            }
            return Ok(worst);
        }
        worsts.push(worst);
    }
    bail!(
        "self-test '{}' failed: worst frame compute {worsts:?} µs in {} passes, each over its budget {} µs",
        t.audio_file,
        SELF_TEST_TIMING_PASSES,
        t.max_frame_us
    )
}

/// One pass of a self-test vector on a fresh stream; returns its worst frame compute.
fn self_test_pass(
    engine: &mut Engine,
    mut verifier: Option<(&mut Verifier, &VerifyConfig)>,
    pcm: &[i16],
    t: &SelfTest,
) -> Result<u32> {
    let mut st = engine.new_stream();
    let mut detected = Vec::new();
    let mut worst = 0u32;
    // Frames waited since a trigger whose utterance has not ended yet.
    let mut pending: Option<u32> = None;
    for (i, frame) in pcm.chunks_exact(FRAME_SAMPLES).enumerate() {
        let out = engine.process_uninterruptible(&mut st, frame)?;
        worst = worst.max(out.stage_us.iter().sum());
        let Some((v, cfg)) = verifier.as_mut() else {
            if let Some(d) = out.detection {
                detected.push(engine.labels()[d.label].clone());
            }
            continue;
        };
        let waited = match (pending, out.detection) {
            (Some(w), _) => w + 1,
            (None, Some(_)) => 0,
            (None, None) => continue,
        };
        if !cfg.utterance_ended(out.vad_prob, waited) {
            pending = Some(waited);
            continue;
        }
        pending = None;
        let end = (i + 1) * FRAME_SAMPLES;
        let window = &pcm[end.saturating_sub(v.window_samples())..end];
        if let Some(l) = v.verify_uninterruptible(window)?.label {
            detected.push(engine.labels()[l].clone());
        }
    }
    let ok = if t.expect_label == "none" {
        detected.is_empty()
    } else {
        detected == [t.expect_label.clone()]
    };
    if !ok {
        bail!(
            "self-test '{}' failed: expected {}, detected {:?}",
            t.audio_file,
            if t.expect_label == "none" {
                "no detection".to_string()
            } else {
                format!("exactly one '{}'", t.expect_label)
            },
            detected
        );
    }
    Ok(worst)
}

/// Boots: what to serve, or safe mode with the reason. Latency and counters go to
/// `stats` / `counters`, which outlive reloads.
pub fn boot(opts: &BootOptions, stats: &Arc<LatencyStats>, counters: &Arc<Counters>) -> Serving {
    match boot_inner(opts, stats, counters) {
        Ok((info, scheduler)) => Serving::ready(info, scheduler),
        Err(e) => {
            let detail = format!("{e:#}");
            log::error!("SAFE MODE: {detail}");
            Serving::safe_mode(detail)
        }
    }
}

/// Boots again with the daemon's boot options (the newly selected A/B slot, or the
/// bundle file) beside the running bundle, and switches to it once it has passed its
/// self-test; connections stay open and their streams restart on the new bundle. On
/// failure the running bundle keeps serving.
///
/// # Errors
/// A reload already running, or why the new bundle could not be served.
pub fn reload(d: &Daemon) -> Result<()> {
    let Ok(_one_at_a_time) = d.reload_lock.try_lock() else {
        bail!("a reload is already running");
    };
    let opts = d
        .boot_opts
        .as_ref()
        .context("this daemon has no boot options to reload with")?;
    log::info!("reload requested");
    let (info, scheduler) = boot_inner(opts, &d.stats, &d.counters)?;
    let id = info.id.clone();
    let old = d.replace_serving(Serving::ready(info, scheduler));
    if let Some(s) = &old.scheduler {
        // Frames admitted before the switch are answered by the old engines.
        s.drain(embassy_time::Duration::from_micros(
            d.limits.max_deadline_us as u64 + 5_000,
        ));
    }
    log::info!("reloaded: now serving {id} (was {})", old.bundle.id);
    Ok(())
}

type Booted = (
    BundleInfo,
    Scheduler<outpost_runtime::pipeline::StreamState>,
);

fn boot_inner(
    opts: &BootOptions,
    stats: &Arc<LatencyStats>,
    counters: &Arc<Counters>,
) -> Result<Booted> {
    let Some(dir) = &opts.state_dir else {
        let bundle = load_bundle(opts)?;
        return serve_bundle(
            opts,
            &bundle,
            opts.session.clone(),
            stats,
            counters,
            String::new(),
        );
    };
    // A/B slots: at most one fall-back (a trial slot that fails its self-test).
    let keys = trusted_keys(opts.trusted_keys.as_deref(), opts.dev)?;
    let vopts = VerifyOptions {
        allow_development: opts.dev,
        expected_compatible: None,
    };
    for _attempt in 0..2 {
        let choice = outpost_provision::boot_select(dir, &keys, &vopts)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("state directory {}", dir.display()))?;
        if let Some(why) = &choice.fallback_reason {
            log::warn!(
                "slot {} not bootable ({why}); booting slot {}",
                choice.slot.other(),
                choice.slot
            );
        }
        let mut session = opts.session.clone();
        session.trt_cache_dir = Some(choice.cache_dir.clone());
        let slot = format!(
            "{}{}",
            choice.slot,
            if choice.trial { " (trial)" } else { "" }
        );
        match serve_bundle(opts, &choice.bundle, session, stats, counters, slot) {
            Ok(booted) => {
                outpost_provision::mark_good(dir, choice.slot)
                    .with_context(|| format!("cannot mark slot {} good", choice.slot))?;
                log::info!("slot {} proved itself; marked good", choice.slot);
                return Ok(booted);
            }
            Err(e) if choice.trial => {
                let reason = format!("{e:#}");
                log::error!(
                    "slot {} (trial) failed: {reason}; falling back",
                    choice.slot
                );
                outpost_provision::mark_bad(dir, choice.slot, &reason)
                    .with_context(|| format!("cannot mark slot {} bad", choice.slot))?;
            }
            Err(e) => return Err(e),
        }
    }
    bail!("no slot in {} passed its self-test", dir.display())
}

/// One line for the execution providers of every stage; a warning when a stage fell
/// back from the provider `auto` tries first (TensorRT), which would break the latency
/// budget on the Orin unnoticed otherwise.
fn log_providers(session: &SessionConfig, providers: &[Provider; 4]) {
    let list: Vec<String> = MODEL_STAGES
        .iter()
        .zip(providers)
        .map(|(s, p)| format!("{s} {p}"))
        .collect();
    let fell_back = session.providers == ProviderChoice::Auto
        && providers.iter().any(|p| *p != Provider::TensorRt);
    if fell_back {
        log::warn!(
            "execution providers: {} (fell back from TensorRT: not available or failed; \
             `--provider` names one to make its failure fatal)",
            list.join(", ")
        );
    } else {
        log::info!("execution providers: {}", list.join(", "));
    }
}

/// Verifications each verifier runs at boot: the worst seeds stage 2's admission
/// control, as the warm-up frames do stage 1's.
pub const VERIFIER_WARMUP_RUNS: usize = 3;

/// Frames after an utterance verified at its end in which a trigger still belongs to it
/// (`UtteranceVerify::late_trigger_frames`): 960 ms, where stage 1 fires at most 590 ms after
/// the end of speech (`models/reference/stream_check.md`).
pub const UTTERANCE_LATE_TRIGGER_FRAMES: u32 = 12;

/// Stage 2 of a bundle with a verifier: `opts.verifier_workers` verifiers, warmed up
/// on [`VERIFIER_WARMUP_RUNS`] windows, and the scheduler's [`VerifyConfig`] (deadline
/// from `opts.verify_deadline_ms`, else the bundle's). Nothing for a v1 bundle.
fn build_verifiers(
    opts: &BootOptions,
    bundle: &VerifiedBundle,
    session: &SessionConfig,
    stats: &Arc<LatencyStats>,
) -> Result<(Vec<Verifier>, Option<VerifyConfig>)> {
    let Some(spec) = VerifierSpec::of(&bundle.manifest) else {
        return Ok((Vec::new(), None));
    };
    let v = &spec.section;
    let file = |name: &str| {
        bundle
            .file(name)
            .with_context(|| format!("verifier model '{name}' is not in the bundle"))
    };
    let (mel, enc, dec) = (
        file(&v.mel.file)?,
        file(&v.encoder.file)?,
        file(&v.decoder.file)?,
    );
    stats.set_budget_us(Stage::Verifier, v.budget_us);
    let deadline_ms = opts.verify_deadline_ms.unwrap_or(v.deadline_ms);
    stats.set_budget_us(Stage::VerifyTotal, deadline_ms.saturating_mul(1000));
    let audio = warmup_audio(v.window_samples as usize / FRAME_SAMPLES + 1);
    let (mut worst, mut total, mut runs) = (0u32, 0u64, 0u64);
    let mut verifiers = Vec::new();
    for _ in 0..opts.verifier_workers.max(1) {
        let mut verifier =
            Verifier::new(mel, enc, dec, spec.clone(), session).context("building the verifier")?;
        for _ in 0..VERIFIER_WARMUP_RUNS {
            let us: u32 = verifier
                .verify_uninterruptible(&audio)?
                .stage_us
                .iter()
                .sum();
            worst = worst.max(us);
            total += u64::from(us);
            runs += 1;
        }
        verifiers.push(verifier);
    }
    log::info!(
        "verifier ready: {} worker(s), warm-up worst {worst} µs, deadline {deadline_ms} ms after a trigger, providers {:?}",
        verifiers.len(),
        verifiers[0].providers()
    );
    let wcet = worst.saturating_mul(3) / 2;
    Ok((
        verifiers,
        Some(VerifyConfig {
            deadline_us: deadline_ms.saturating_mul(1000),
            end_of_speech_vad: v.end_of_speech_vad,
            max_wait_frames: VerifyConfig::frames_of_wait(v.max_wait_ms),
            early_theta: opts.early_verify_margin.map(|m| v.theta + m),
            early_command_gap: opts.early_command_gap,
            early_fallback_gap: opts.early_fallback_gap,
            command_gap: opts.command_gap,
            utterance: opts
                .utterance_verify
                .map(
                    |UtteranceOptions {
                         min_speech_frames,
                         quiet_frames,
                         lead_frames,
                     }|
                     -> Result<_> {
                        let none = bundle
                            .manifest
                            .pipeline
                            .labels
                            .iter()
                            .position(|l| l == "none")
                            .context("utterance-end verification needs a `none` label")?;
                        Ok(UtteranceVerify {
                            min_speech_frames,
                            quiet_frames,
                            lead_frames,
                            late_trigger_frames: UTTERANCE_LATE_TRIGGER_FRAMES,
                            none_label: u8::try_from(none).context("the `none` label's index")?,
                        })
                    },
                )
                .transpose()?,
            initial_wcet_us: wcet,
            initial_typical_us: (total / runs.max(1)).min(u64::from(wcet)) as u32,
            ..VerifyConfig::default()
        }),
    ))
}

/// Builds the engines for a verified bundle, warms them up, runs its self-test vectors,
/// and starts the scheduler.
fn serve_bundle(
    opts: &BootOptions,
    bundle: &VerifiedBundle,
    session: SessionConfig,
    stats: &Arc<LatencyStats>,
    counters: &Arc<Counters>,
    slot: String,
) -> Result<Booted> {
    log::info!(
        "bundle {} verified (key {} '{}'{})",
        bundle.bundle_id(),
        bundle.key.key_id,
        bundle.key.name,
        if bundle.is_development() {
            ", DEVELOPMENT"
        } else {
            ""
        }
    );
    let b = &bundle.manifest.pipeline.budgets_us;
    for (s, v) in [
        (Stage::Vad, b.vad_us),
        (Stage::Mel, b.mel_us),
        (Stage::Embedding, b.embedding_us),
        (Stage::Head, b.head_us),
    ] {
        stats.set_budget_us(s, v);
    }
    let workers = opts.workers.max(1);
    let mut engines = Vec::with_capacity(workers);
    for _ in 0..workers {
        engines.push(Engine::new(bundle, &session)?);
    }
    let providers = engines[0].providers();
    log_providers(&session, &providers);
    // Warm-up: every engine, deterministic audio; the worst frame seeds admission control.
    let audio = warmup_audio(opts.warmup_frames.max(2));
    let (mut worst, mut total, mut total_sq, mut frames) = (0u32, 0u64, 0u64, 0u64);
    for e in &mut engines {
        let mut st = e.new_stream();
        for (i, f) in audio.chunks_exact(FRAME_SAMPLES).enumerate() {
            let out = e.process_uninterruptible(&mut st, f)?;
            if i > 0 {
                let us: u32 = out.stage_us.iter().sum();
                worst = worst.max(us);
                total += us as u64;
                total_sq += u64::from(us) * u64::from(us);
                frames += 1;
            }
        }
    }
    let (mut verifiers, verify) = build_verifiers(opts, bundle, &session, stats)?;
    for t in &bundle.manifest.self_tests {
        let stage2 = verifiers.first_mut().zip(verify.as_ref());
        let w = run_self_test(&mut engines[0], stage2, bundle, t)?;
        log::info!(
            "self-test '{}' passed (expected '{}', worst frame {w} µs)",
            t.audio_file,
            t.expect_label
        );
    }
    let mut cfg = opts.scheduler.clone();
    cfg.initial_wcet_us = (worst as u64 * 3 / 2).clamp(500, 20_000) as u32;
    cfg.initial_typical_us = (total / frames.max(1)).clamp(1, cfg.initial_wcet_us as u64) as u32;
    let mean = total as f64 / frames.max(1) as f64;
    let var = total_sq as f64 / frames.max(1) as f64 - mean * mean;
    cfg.initial_spread_us = var.max(0.0).sqrt().round() as u32;
    log::info!(
        "warm-up worst frame {worst} µs; admission starts at WCET {} µs, typical {} µs, spread {} µs per frame",
        cfg.initial_wcet_us,
        cfg.initial_typical_us,
        cfg.initial_spread_us
    );
    let verifiers: Vec<Box<dyn WindowVerifier>> = verifiers
        .into_iter()
        .map(|v| Box::new(v) as Box<dyn WindowVerifier>)
        .collect();
    let scheduler = Scheduler::start_with_verifier(
        engines,
        verifiers,
        verify,
        cfg,
        Arc::clone(stats),
        Arc::clone(counters),
    );
    let m = &bundle.manifest;
    let info = BundleInfo {
        name: m.name.clone(),
        version: m.version,
        key_id: bundle.key.key_id.0,
        development: bundle.is_development(),
        labels: m.pipeline.labels.clone(),
        providers: stage_providers(providers),
        id: bundle.bundle_id(),
        slot,
    };
    Ok((info, scheduler))
}
