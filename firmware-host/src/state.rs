//! The daemon's state, shared by the boot sequence (`boot`), the request handlers
//! (`server`) and the transports: limits, what is being served (a verified bundle and
//! its scheduler, or safe mode), counters, and the options a reload boots with. Neither
//! `boot` nor `server` depends on the other; both depend on this module.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use outpost_protocol::{DeviceState, StageProvider, StatusReport, MAX_DETAIL_BYTES};
use outpost_runtime::ort_env::SessionConfig;
use outpost_runtime::pipeline::{StreamState, MODEL_STAGES};
use outpost_runtime::rt::RtConfig;
use outpost_runtime::scheduler::{Counters, Scheduler, SchedulerConfig};
use outpost_runtime::stats::LatencyStats;

/// `detail` cut to at most [`MAX_DETAIL_BYTES`] at a character boundary, so a status or
/// reload answer always encodes (an unbounded error chain would not fit a frame, and the
/// request would go unanswered).
pub fn bounded_detail(detail: &str) -> &str {
    if detail.len() <= MAX_DETAIL_BYTES {
        return detail;
    }
    let mut end = MAX_DETAIL_BYTES;
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    &detail[..end]
}

/// What a `Reload` request runs: boots the newly selected slot beside the running one
/// and switches to it (`boot::reload`).
pub type Reloader = fn(&Daemon) -> anyhow::Result<()>;

/// Boot options (from the command line).
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// Bundle file; `None` with `dev` means the dev bundle.
    pub bundle: Option<PathBuf>,
    /// Development mode: trust the embedded dev key and accept development bundles.
    pub dev: bool,
    /// Directory of trusted `*.pub` keys.
    pub trusted_keys: Option<PathBuf>,
    /// Session settings (providers, TensorRT cache).
    pub session: SessionConfig,
    /// Inference workers (one engine each).
    pub workers: usize,
    /// Daemon limits.
    pub limits: Limits,
    /// Scheduler limits.
    pub scheduler: SchedulerConfig,
    /// Warm-up frames per worker before ready.
    pub warmup_frames: usize,
    /// Verifier workers for a bundle with a verifier (stage 2), at least 1.
    pub verifier_workers: usize,
    /// Verification deadline after a trigger in ms; `None`: the bundle's.
    pub verify_deadline_ms: Option<u32>,
    /// Early verification: nats above the bundle's `theta` a command needs on the
    /// window ending with its trigger frame to be answered before the end of the
    /// utterance (`VerifyConfig::early_theta`); `None`: verify only at the end.
    pub early_verify_margin: Option<f32>,
    /// Nats by which an early verdict's command must beat every other command
    /// (`VerifyConfig::early_command_gap`).
    pub early_command_gap: f32,
    /// Nats by which a silent early verdict's command must beat every other command to
    /// be detected when the end of the utterance names none
    /// (`VerifyConfig::early_fallback_gap`); `None`: the end of the utterance decides.
    pub early_fallback_gap: Option<f32>,
    /// Nats by which the verdict at the end of the utterance must beat every other
    /// command (`VerifyConfig::command_gap`).
    pub command_gap: f32,
    /// Utterance-end verification of the utterances stage 1 did not fire on; `None`: only
    /// triggers are verified.
    pub utterance_verify: Option<UtteranceOptions>,
    /// A/B slot state directory (`outpost-provision install`): boot the selected slot,
    /// self-test it, then mark it good (raising the anti-rollback floor) or, for a slot
    /// on trial, mark it bad and fall back to the other slot. Overrides `bundle`.
    pub state_dir: Option<PathBuf>,
}

/// Utterance-end verification as the operator sets it (`outpostd --utterance-*`); the boot
/// completes it into the scheduler's `UtteranceVerify` with the bundle's `none` label. Each
/// field is that struct's, in 80 ms frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtteranceOptions {
    /// Frames of speech an utterance needs (`UtteranceVerify::min_speech_frames`).
    pub min_speech_frames: u32,
    /// Quiet frames in a row that end it (`UtteranceVerify::quiet_frames`).
    pub quiet_frames: u32,
    /// Frames of audio kept before its first frame of speech
    /// (`UtteranceVerify::lead_frames`).
    pub lead_frames: u32,
}

/// Limits of the daemon.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Default per-frame deadline in µs.
    pub default_deadline_us: u32,
    /// Longest deadline a client may ask for, in µs.
    pub max_deadline_us: u32,
    /// Connected clients at once (Unix socket; serial ports count one each).
    pub max_clients: usize,
    /// Streams one connection may have open.
    pub max_streams_per_conn: u16,
    /// Responses queued for one connection's writer before it is deemed stuck.
    pub writer_queue: usize,
    /// A Unix-socket connection that sends no valid request this long after it
    /// connects is closed, so connections that only hold a client slot (a few bytes of
    /// a frame that never ends, or nothing) cannot lock other clients out.
    pub socket_first_request_timeout: std::time::Duration,
    /// A Unix-socket connection idle this long after its last valid request is closed.
    pub socket_idle_timeout: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            default_deadline_us: outpost_protocol::DEFAULT_DEADLINE_US,
            max_deadline_us: outpost_protocol::DEFAULT_DEADLINE_US,
            max_clients: 16,
            max_streams_per_conn: 8,
            writer_queue: 256,
            socket_first_request_timeout: std::time::Duration::from_secs(5),
            socket_idle_timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// What the daemon serves: identity of the loaded bundle.
#[derive(Debug, Clone, Default)]
pub struct BundleInfo {
    /// Bundle name.
    pub name: String,
    /// Bundle version.
    pub version: u32,
    /// Signing key id.
    pub key_id: [u8; 8],
    /// Signed by a development key.
    pub development: bool,
    /// Labels in head output order.
    pub labels: Vec<String>,
    /// Provider per model stage.
    pub providers: Vec<StageProvider>,
    /// Bundle id for logs (`name@version (hash)`).
    pub id: String,
    /// A/B slot served (`a`, `b (trial)`), or empty when serving a bundle file.
    pub slot: String,
}

/// What is being served: one verified bundle and its scheduler, or safe mode. Replaced
/// whole by a reload; connections take a snapshot per request.
pub struct Serving {
    /// Loaded bundle (empty in safe mode).
    pub bundle: BundleInfo,
    /// The scheduler; `None` in safe mode.
    pub scheduler: Option<Scheduler<StreamState>>,
    /// Serving state.
    pub state: DeviceState,
    /// Why the daemon is in safe mode, or empty.
    pub detail: String,
    /// Incremented by each reload; streams opened on an older generation are reopened
    /// on the new scheduler at their next frame.
    pub generation: u64,
}

impl Serving {
    /// Serving `bundle` with `scheduler`.
    pub fn ready(bundle: BundleInfo, scheduler: Scheduler<StreamState>) -> Self {
        Self {
            bundle,
            scheduler: Some(scheduler),
            state: DeviceState::Ready,
            detail: String::new(),
            generation: 0,
        }
    }

    /// Starting: transports listen, the bundle is being verified and warmed up; status
    /// answers with state `Starting`, audio is refused (`NoModel`).
    pub fn starting() -> Self {
        Self {
            bundle: BundleInfo::default(),
            scheduler: None,
            state: DeviceState::Starting,
            detail: "verifying and warming up the bundle".to_string(),
            generation: 0,
        }
    }

    /// Safe mode: status answers with `detail` (cut to [`MAX_DETAIL_BYTES`]), inference
    /// is refused.
    pub fn safe_mode(detail: String) -> Self {
        Self {
            bundle: BundleInfo::default(),
            scheduler: None,
            state: DeviceState::SafeMode,
            detail: bounded_detail(&detail).to_string(),
            generation: 0,
        }
    }
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field("bundle", &self.bundle.id)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Shared daemon state, one per process.
pub struct Daemon {
    /// Limits.
    pub limits: Limits,
    serving: RwLock<Arc<Serving>>,
    /// Latency histograms, cumulative since start (across reloads).
    pub stats: Arc<LatencyStats>,
    /// Frame counters, cumulative since start (across reloads).
    pub counters: Arc<Counters>,
    /// Process start.
    pub started: Instant,
    /// Start to ready, in ms.
    pub boot_to_ready_ms: AtomicU32,
    clients: AtomicUsize,
    next_conn: AtomicU64,
    errors: AtomicU64,
    throttled_for_errors: AtomicU64,
    closed_for_errors: AtomicU64,
    /// Set when the daemon is stopping.
    pub stopping: AtomicBool,
    /// A/B slot state directory, for the provisioning audit in status.
    pub state_dir: Option<PathBuf>,
    /// Real-time settings for connection threads.
    pub rt: RtConfig,
    /// How the daemon booted; a reload boots again with these.
    pub boot_opts: Option<BootOptions>,
    /// What a `Reload` request runs (`boot::reload` in `outpostd`); `None` refuses
    /// reloads. A function pointer, so the request handlers need not know the boot
    /// sequence.
    pub reloader: Option<Reloader>,
    /// Held while a reload runs (one at a time).
    pub reload_lock: Mutex<()>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("serving", &self.serving())
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// A daemon serving `serving`.
    pub fn new(
        limits: Limits,
        serving: Serving,
        stats: Arc<LatencyStats>,
        counters: Arc<Counters>,
        started: Instant,
    ) -> Self {
        Self {
            limits,
            serving: RwLock::new(Arc::new(serving)),
            stats,
            counters,
            started,
            boot_to_ready_ms: AtomicU32::new(0),
            clients: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
            errors: AtomicU64::new(0),
            throttled_for_errors: AtomicU64::new(0),
            closed_for_errors: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            state_dir: None,
            rt: RtConfig::off(),
            boot_opts: None,
            reloader: None,
            reload_lock: Mutex::new(()),
        }
    }

    /// The current serving snapshot.
    pub fn serving(&self) -> Arc<Serving> {
        Arc::clone(&self.serving.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Switches to `new`; returns the previous snapshot (drain it before dropping).
    pub fn replace_serving(&self, mut new: Serving) -> Arc<Serving> {
        let mut g = self.serving.write().unwrap_or_else(|p| p.into_inner());
        new.generation = g.generation + 1;
        std::mem::replace(&mut *g, Arc::new(new))
    }

    /// A new connection's id (for logs and stream keys), unique in this process.
    pub fn next_connection_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts one error answered to a client (shown in status).
    pub fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection throttled for sending only errors
    /// ([`crate::server::ERROR_STREAK_THROTTLE`] in a row); returns the count so far
    /// (`StatusReport::throttled_for_errors`).
    pub fn count_throttled_for_errors(&self) -> u64 {
        self.throttled_for_errors.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts a connection closed for sending only errors
    /// ([`crate::server::ERROR_STREAK_CLOSE`] in a row); returns the count so far
    /// (`StatusReport::closed_for_errors`).
    pub fn count_closed_for_errors(&self) -> u64 {
        self.closed_for_errors.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Boots the newly installed slot (or bundle file) with [`Daemon::reloader`] and
    /// switches to it.
    ///
    /// # Errors
    /// No reloader configured, or why the reload failed (the running bundle serves on).
    pub fn reload(&self) -> anyhow::Result<()> {
        let reload = self
            .reloader
            .ok_or_else(|| anyhow::anyhow!("this daemon has no boot options to reload with"))?;
        reload(self)
    }

    /// One line about the newest provisioning decision (audit log), or empty.
    pub fn last_provisioning(&self) -> String {
        let Some(dir) = &self.state_dir else {
            return String::new();
        };
        match outpost_provision::read_audit(dir, 1) {
            Ok(v) => v.last().map_or_else(String::new, |r| {
                let mut line = format!("{} {} {}", r.time, r.action, r.result);
                if let Some(b) = &r.bundle {
                    line += &format!(" {b}");
                }
                if let Some(why) = &r.reason {
                    line += &format!(": {why}");
                }
                line.chars().take(200).collect()
            }),
            Err(e) => format!("audit log unreadable: {e}"),
        }
    }

    /// Connected clients.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Releases a client slot taken with [`Daemon::try_add_client`].
    pub fn release_client(&self) {
        self.clients.fetch_sub(1, Ordering::SeqCst);
    }

    /// Reserves a client slot; `false` when the bound is reached.
    pub fn try_add_client(&self) -> bool {
        self.clients
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                (c < self.limits.max_clients).then_some(c + 1)
            })
            .is_ok()
    }

    /// The status report of `sv` as served by this daemon; `provisioning` is
    /// [`Daemon::last_provisioning`].
    pub fn status<'a>(&'a self, sv: &'a Serving, provisioning: &'a str) -> StatusReport<'a> {
        let mut providers = heapless::Vec::new();
        for p in &sv.bundle.providers {
            let _ = providers.push(*p);
        }
        let mut latency = heapless::Vec::new();
        for l in self.stats.snapshot() {
            let _ = latency.push(l);
        }
        let c = &self.counters;
        StatusReport {
            state: sv.state,
            detail: &sv.detail,
            bundle_name: &sv.bundle.name,
            bundle_version: sv.bundle.version,
            key_id: sv.bundle.key_id,
            development: sv.bundle.development,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            boot_to_ready_ms: self.boot_to_ready_ms.load(Ordering::Relaxed),
            clients: self.clients() as u16,
            streams: sv.scheduler.as_ref().map_or(0, |s| s.open_streams()) as u16,
            frames: c.frames.load(Ordering::Relaxed),
            detections: c.detections.load(Ordering::Relaxed),
            deadline_misses: c.deadline_misses.load(Ordering::Relaxed),
            rejections: c.rejections.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            providers,
            latency,
            slot: &sv.bundle.slot,
            provisioning,
            cancellations: c.cancellations.load(Ordering::Relaxed),
            wcet_us: sv
                .scheduler
                .as_ref()
                .map_or(0, |s| s.wcet_us().min(u32::MAX as u64) as u32),
            typical_us: sv
                .scheduler
                .as_ref()
                .map_or(0, |s| s.typical_us().min(u32::MAX as u64) as u32),
            late_writes: c.late_writes.load(Ordering::Relaxed),
            spread_us: sv
                .scheduler
                .as_ref()
                .map_or(0, |s| s.spread_us().min(u32::MAX as u64) as u32),
            throttled_for_errors: self.throttled_for_errors.load(Ordering::Relaxed),
            closed_for_errors: self.closed_for_errors.load(Ordering::Relaxed),
            verifications: c.verifications.load(Ordering::Relaxed),
            verify_misses: c.verify_misses.load(Ordering::Relaxed),
            verify_rejections: c.verify_rejections.load(Ordering::Relaxed),
            verify_wcet_us: sv
                .scheduler
                .as_ref()
                .map_or(0, |s| s.verify_wcet_us().min(u32::MAX as u64) as u32),
            verify_deadline_us: sv
                .scheduler
                .as_ref()
                .map_or(0, Scheduler::verify_deadline_us),
        }
    }
}

/// Model stages in status order with their providers.
pub fn stage_providers(p: [outpost_protocol::Provider; 4]) -> Vec<StageProvider> {
    MODEL_STAGES
        .iter()
        .zip(p)
        .map(|(s, p)| StageProvider {
            stage: *s,
            provider: p,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::{encode_frame, Response, MAX_FRAME_BYTES, MAX_PAYLOAD_BYTES};

    #[test]
    fn a_long_safe_mode_reason_is_cut_so_status_still_encodes() {
        let reason = "bündle rejected: ".repeat(400);
        let d = Daemon::new(
            Limits::default(),
            Serving::safe_mode(reason),
            Arc::new(LatencyStats::new()),
            Arc::new(Counters::default()),
            Instant::now(),
        );
        let sv = d.serving();
        assert!(sv.detail.len() <= MAX_DETAIL_BYTES && sv.detail.starts_with("bündle"));
        let provisioning = "x".repeat(200);
        let status = Response::Status(d.status(&sv, &provisioning));
        let (mut scratch, mut out) = ([0u8; MAX_PAYLOAD_BYTES], [0u8; MAX_FRAME_BYTES]);
        encode_frame(1, &status, &mut scratch, &mut out).expect("a status report always fits");
    }
}
