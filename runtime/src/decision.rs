//! Turning per-frame head scores into detections: smoothing, threshold, VAD gating,
//! refractory period and re-arming, so that one utterance yields one detection.
//!
//! The training recipe's streaming evaluator (`models/reference/recipe/`) mirrors
//! this logic exactly for [`TriggerRule::BestCommand`]; change both together. The
//! two-stage rule is measured through the daemon itself (`recipe/stream_check.py`).
//!
//! Per frame t (80 ms):
//! 1. `s` = mean of the head's softmax output over the last `smoothing_frames` frames.
//! 2. `c` = argmax of `s` over command labels (the `none` label is excluded).
//! 3. VAD gate: some frame within the last `vad_hangover_ms` (including t) had a VAD
//!    probability ≥ `vad_threshold` (0 keeps the gate open). The reference bundle sets a
//!    floor, 0.005: most non-speech sounds that fire the head (recorded screaming monkeys,
//!    error beeps) stay below it, quiet speech reaches it, where a gate at 0.2 loses speech
//!    50 dB below the evaluation's level (training report items 20 and 22).
//! 4. Detect `c` iff `s[c]` ≥ its threshold, the gate is open, the detector is armed,
//!    and at least `refractory_ms` passed since the previous detection.
//! 5. After a detection the detector disarms; it re-arms at the first frame where every
//!    command's smoothed score is below its threshold.
//!
//! With [`TriggerRule::AnyCommand`] (stage 1 of a two-stage bundle, whose verifier names
//! the command) step 4 compares `1 - s[none]`, the smoothed probability that some command
//! was said, with the base threshold, and the detector re-arms when it falls below it;
//! the detection carries `c` and that probability. Measured on the verifier's held-out
//! clips (`docs/recognition.md`): the head spreads a command heard in babble over several
//! commands, so no single one reaches the threshold while their sum does.

use outpost_models::manifest::DecisionSpec;

/// Most labels a head may have.
pub const MAX_LABELS: usize = outpost_protocol::MAX_LABELS;
/// Longest smoothing window in frames.
pub const MAX_SMOOTHING: usize = outpost_models::format::MAX_SMOOTHING_FRAMES as usize;

/// What fires a detection (module docs, step 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TriggerRule {
    /// The best command's smoothed score reaches its threshold (one-stage bundles).
    #[default]
    BestCommand,
    /// The smoothed probability of any command, `1 - s[none]`, reaches the base
    /// threshold (stage 1 of a two-stage bundle). Needs a `none` label.
    AnyCommand,
}

/// Decision parameters resolved against the label list.
#[derive(Debug, Clone)]
pub struct DecisionParams {
    /// What fires a detection.
    pub rule: TriggerRule,
    /// The base threshold, in [0, 1] (the rule [`TriggerRule::AnyCommand`] compares with it).
    pub threshold: f32,
    /// Per-label threshold, in [0, 1]; `f32::INFINITY` for the `none` label.
    pub thresholds: Vec<f32>,
    /// Index of the `none` label, if any.
    pub none_index: Option<usize>,
    /// Frames averaged (1..=16).
    pub smoothing_frames: usize,
    /// Refractory period in frames.
    pub refractory_frames: u32,
    /// VAD probability that counts as speech.
    pub vad_threshold: f32,
    /// VAD hang-over in frames.
    pub vad_hangover_frames: u32,
}

impl DecisionParams {
    /// Resolves a manifest's decision spec for `labels` at `frame_ms` per frame, under
    /// `rule`.
    ///
    /// # Errors
    /// A message naming the bad parameter (threshold outside [0, 1], unknown label in
    /// an override, smoothing outside 1..=16, too many labels, the rule
    /// [`TriggerRule::AnyCommand`] without a `none` label).
    pub fn from_spec(
        spec: &DecisionSpec,
        labels: &[String],
        frame_ms: u32,
        rule: TriggerRule,
    ) -> Result<Self, String> {
        if labels.is_empty() || labels.len() > MAX_LABELS {
            return Err(format!(
                "{} labels (expected 1..={MAX_LABELS})",
                labels.len()
            ));
        }
        let check = |name: &str, v: f32| {
            if (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                Err(format!("{name} = {v} is outside [0, 1]"))
            }
        };
        let base = check("threshold", spec.threshold)?;
        let none_index = labels.iter().position(|l| l == "none");
        let mut thresholds = vec![base; labels.len()];
        for (label, t) in &spec.label_thresholds {
            let i = labels
                .iter()
                .position(|l| l == label)
                .ok_or_else(|| format!("threshold override for unknown label '{label}'"))?;
            thresholds[i] = check(&format!("threshold of '{label}'"), *t)?;
        }
        if let Some(n) = none_index {
            thresholds[n] = f32::INFINITY;
        } else if rule == TriggerRule::AnyCommand {
            return Err("the any-command trigger needs a 'none' label".into());
        }
        let k = spec.smoothing_frames as usize;
        if !(1..=MAX_SMOOTHING).contains(&k) {
            return Err(format!(
                "smoothing_frames = {k} (expected 1..={MAX_SMOOTHING})"
            ));
        }
        let frames = |ms: u32| ms.div_ceil(frame_ms.max(1));
        Ok(Self {
            rule,
            threshold: base,
            thresholds,
            none_index,
            smoothing_frames: k,
            refractory_frames: frames(spec.refractory_ms),
            vad_threshold: check("vad_threshold", spec.vad_threshold)?,
            vad_hangover_frames: frames(spec.vad_hangover_ms).max(1),
        })
    }
}

/// A detection decided on one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decided {
    /// Label index.
    pub label: usize,
    /// Smoothed score in [0, 1].
    pub score: f32,
}

/// Per-stream decision state. Fixed size; no allocation per frame.
#[derive(Debug, Clone)]
pub struct Decider {
    history: [[f32; MAX_LABELS]; MAX_SMOOTHING],
    filled: usize,
    next: usize,
    frame: u32,
    last_speech_frame: Option<u32>,
    last_detection_frame: Option<u32>,
    armed: bool,
}

impl Default for Decider {
    fn default() -> Self {
        Self::new()
    }
}

impl Decider {
    /// Fresh state: armed, no history.
    pub fn new() -> Self {
        Self {
            history: [[0.0; MAX_LABELS]; MAX_SMOOTHING],
            filled: 0,
            next: 0,
            frame: 0,
            last_speech_frame: None,
            last_detection_frame: None,
            armed: true,
        }
    }

    /// Feeds one frame's head output (`scores.len()` = number of labels) and its VAD
    /// probability; returns the detection, if any.
    pub fn push(&mut self, p: &DecisionParams, scores: &[f32], vad_prob: f32) -> Option<Decided> {
        let n = scores.len().min(MAX_LABELS);
        let t = self.frame;
        self.frame = self.frame.wrapping_add(1);
        self.history[self.next][..n].copy_from_slice(&scores[..n]);
        self.next = (self.next + 1) % p.smoothing_frames;
        self.filled = (self.filled + 1).min(p.smoothing_frames);
        if vad_prob >= p.vad_threshold {
            self.last_speech_frame = Some(t);
        }

        let mut smoothed = [0.0f32; MAX_LABELS];
        for row in &self.history[..self.filled] {
            for (s, v) in smoothed[..n].iter_mut().zip(&row[..n]) {
                *s += v;
            }
        }
        let inv = 1.0 / self.filled as f32;
        let mut best: Option<(usize, f32)> = None;
        let mut any_above = false;
        for (i, s) in smoothed[..n].iter_mut().enumerate() {
            *s *= inv;
            if Some(i) == p.none_index {
                continue;
            }
            if *s >= p.thresholds[i] {
                any_above = true;
            }
            if best.is_none_or(|(_, b)| *s > b) {
                best = Some((i, *s));
            }
        }
        // The any-command probability, under that rule (from_spec ensures a `none` label).
        let any = p
            .none_index
            .filter(|_| p.rule == TriggerRule::AnyCommand)
            .map(|n| 1.0 - smoothed[n]);
        let firing = any.map_or(any_above, |a| a >= p.threshold);
        if !self.armed {
            if !firing {
                self.armed = true;
            }
            return None;
        }
        let (c, best_score) = best?;
        let reached = any.map_or(best_score >= p.thresholds[c], |_| firing);
        let gate = self
            .last_speech_frame
            .is_some_and(|f| t.wrapping_sub(f) < p.vad_hangover_frames);
        let refractory_over = self
            .last_detection_frame
            .is_none_or(|f| t.wrapping_sub(f) >= p.refractory_frames);
        if reached && gate && refractory_over {
            self.armed = false;
            self.last_detection_frame = Some(t);
            return Some(Decided {
                label: c,
                score: any.unwrap_or(best_score),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> DecisionParams {
        let labels: Vec<String> = ["lights on", "lights off", "none"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        DecisionParams::from_spec(
            &DecisionSpec {
                threshold: 0.6,
                label_thresholds: vec![("lights off".into(), 0.8)],
                smoothing_frames: 2,
                refractory_ms: 800,
                vad_threshold: 0.5,
                vad_hangover_ms: 400,
            },
            &labels,
            80,
            TriggerRule::BestCommand,
        )
        .unwrap()
    }

    fn any_command() -> DecisionParams {
        DecisionParams {
            rule: TriggerRule::AnyCommand,
            ..params()
        }
    }

    /// (frame index, label) of each detection over `seq`, all frames at VAD 0.9.
    fn hits(p: &DecisionParams, d: &mut Decider, seq: &[[f32; 3]]) -> Vec<(usize, usize)> {
        seq.iter()
            .enumerate()
            .filter_map(|(i, s)| d.push(p, s, 0.9).map(|x| (i, x.label)))
            .collect()
    }

    /// A spec with one threshold, no smoothing, refractory or hang-over.
    fn plain_spec(threshold: f32) -> DecisionSpec {
        DecisionSpec {
            threshold,
            label_thresholds: vec![],
            smoothing_frames: 1,
            refractory_ms: 0,
            vad_threshold: 0.5,
            vad_hangover_ms: 0,
        }
    }

    const ON: [f32; 3] = [0.9, 0.05, 0.05];
    const OFF: [f32; 3] = [0.05, 0.9, 0.05];
    const NONE: [f32; 3] = [0.0, 0.0, 1.0];

    #[test]
    fn one_detection_per_utterance_after_smoothing() {
        let p = params();
        let mut d = Decider::new();
        let mut hits = vec![];
        for (i, s) in [NONE, ON, ON, ON, ON, ON, NONE, NONE].iter().enumerate() {
            if let Some(x) = d.push(&p, s, 0.9) {
                hits.push((i, x.label));
            }
        }
        // Frame 1 alone averages 0.45 with the NONE frame before it; frame 2 reaches 0.9.
        assert_eq!(hits, vec![(2, 0)]);
    }

    #[test]
    fn no_detection_without_recent_speech() {
        let p = params();
        let mut d = Decider::new();
        for _ in 0..10 {
            assert_eq!(d.push(&p, &ON, 0.0), None);
        }
    }

    #[test]
    fn vad_hangover_keeps_gate_open_for_its_length_only() {
        let p = params(); // 400 ms = 5 frames
        let mut d = Decider::new();
        d.push(&p, &NONE, 0.9); // speech at frame 0
        for _ in 1..5 {
            d.push(&p, &NONE, 0.0);
        }
        // Frame 5 is 5 frames after speech: gate closed.
        assert_eq!(d.push(&p, &ON, 0.0), None);
        assert_eq!(d.push(&p, &ON, 0.0), None);
    }

    #[test]
    fn vad_threshold_zero_opens_the_gate_even_at_vad_probability_zero() {
        // The reference bundle's setting: a command spoken far below full scale, where the
        // VAD reports 0, is still detected once; with a gate (0.5) it is not.
        let open = DecisionParams {
            vad_threshold: 0.0,
            ..params()
        };
        let mut d = Decider::new();
        let hits: Vec<_> = (0..6).filter_map(|_| d.push(&open, &ON, 0.0)).collect();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].label, 0);
        let mut gated = Decider::new();
        assert!((0..6).all(|_| gated.push(&params(), &ON, 0.0).is_none()));
    }

    #[test]
    fn per_label_threshold_applies() {
        let p = params();
        let mut d = Decider::new();
        let weak_off = [0.1, 0.75, 0.15];
        for _ in 0..5 {
            assert_eq!(d.push(&p, &weak_off, 0.9), None, "0.75 < 0.8 override");
        }
        assert!(d.push(&p, &OFF, 0.9).is_some());
    }

    #[test]
    fn refractory_and_rearm_separate_two_utterances() {
        let p = params(); // refractory 800 ms = 10 frames
        let mut d = Decider::new();
        let mut seq = vec![ON; 3];
        seq.extend(vec![NONE; 3]);
        seq.extend(vec![OFF; 3]); // too soon: inside refractory
        seq.extend(vec![NONE; 6]);
        seq.extend(vec![OFF; 3]); // frame 15..: allowed
                                  // Frame 0 detects at once (smoothing uses the frames seen so far).
        assert_eq!(hits(&p, &mut d, &seq), vec![(0, 0), (16, 1)]);
    }

    #[test]
    fn any_command_fires_when_the_commands_together_reach_the_threshold() {
        // Babble: the command is spread over both, none alone reaches 0.6 (nor 0.8 for
        // "lights off"), together they hold 0.7.
        let spread = [0.4, 0.3, 0.3];
        let mut best = Decider::new();
        assert!((0..5).all(|_| best.push(&params(), &spread, 0.9).is_none()));
        let mut any = Decider::new();
        let hits: Vec<_> = (0..5)
            .filter_map(|_| any.push(&any_command(), &spread, 0.9))
            .collect();
        assert_eq!(hits.len(), 1, "one detection while the sum stays up");
        assert_eq!(hits[0].label, 0, "the best command names it");
        assert!((hits[0].score - 0.7).abs() < 1e-6, "{}", hits[0].score);
    }

    #[test]
    fn any_command_rearms_when_none_comes_back_and_keeps_the_gates() {
        let p = any_command(); // refractory 800 ms = 10 frames, VAD gate 0.5
        let mut d = Decider::new();
        assert_eq!(d.push(&p, &ON, 0.0), None, "no speech: gate closed");
        let mut seq = vec![ON; 3];
        seq.extend(vec![NONE; 12]);
        seq.extend(vec![OFF; 3]);
        // The gated ON before the sequence makes its first frame reach 0.95 at once; the
        // first NONE pair re-arms (0.475 < 0.6); the first OFF frame averages with NONE to
        // 0.475, the second reaches 0.95, past the refractory period.
        assert_eq!(hits(&p, &mut d, &seq), vec![(0, 0), (16, 1)]);
    }

    #[test]
    fn any_command_needs_a_none_label() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let spec = plain_spec(0.5);
        assert!(
            DecisionParams::from_spec(&spec, &labels, 80, TriggerRule::AnyCommand)
                .unwrap_err()
                .contains("'none' label")
        );
    }

    #[test]
    fn bad_specs_are_named() {
        let labels = vec!["a".to_string(), "none".to_string()];
        let mut spec = plain_spec(1.5);
        assert!(
            DecisionParams::from_spec(&spec, &labels, 80, TriggerRule::BestCommand)
                .unwrap_err()
                .contains("threshold = 1.5")
        );
        spec.threshold = 0.5;
        spec.label_thresholds = vec![("b".into(), 0.5)];
        assert!(
            DecisionParams::from_spec(&spec, &labels, 80, TriggerRule::BestCommand)
                .unwrap_err()
                .contains("unknown label 'b'")
        );
        spec.label_thresholds = vec![];
        spec.smoothing_frames = 0;
        assert!(
            DecisionParams::from_spec(&spec, &labels, 80, TriggerRule::BestCommand)
                .unwrap_err()
                .contains("smoothing_frames")
        );
    }
}
