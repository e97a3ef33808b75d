//! The bundle spec: a TOML file holding the manifest minus `files`, plus the payload list.
//!
//! ```toml
//! name = "outpost-reference-dev"
//! version = 1
//! compatible = "any"
//! runtime_min = "0.1.0"
//! runtime_max = "0.1.99"
//! development = true
//!
//! [[payload]]
//! name = "silero_vad.onnx"
//! path = "${OUTPOST_MODELS}/silero_vad.onnx"   # or relative to the spec's directory
//!
//! [pipeline]
//! # ... every field of `outpost_models::manifest::PipelineSpec`
//!
//! [[self_tests]]
//! # ... every field of `outpost_models::manifest::SelfTest`
//!
//! [verifier]   # optional: stage 2 (a format v2 bundle)
//! # ... every field of `outpost_models::manifest::VerifierSection`
//! ```
//!
//! A verifier exported by the recipe (`verifier_export.py` writes `verifier.json` and
//! the three models into one directory) is added with [`BundleSpec::add_verifier_dir`]
//! (`outpost-provision build --verifier DIR`) instead of being copied into the spec.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use outpost_models::manifest::{PipelineSpec, SelfTest, VerifierSection};
use outpost_models::Manifest;
use serde::{Deserialize, Serialize};

/// A parsed bundle spec (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSpec {
    /// `Manifest::name`.
    pub name: String,
    /// `Manifest::version`.
    pub version: u32,
    /// `Manifest::compatible`.
    pub compatible: String,
    /// `Manifest::runtime_min`.
    pub runtime_min: String,
    /// `Manifest::runtime_max`.
    pub runtime_max: String,
    /// `Manifest::development`; must match the signing key.
    pub development: bool,
    /// `Manifest::pipeline`.
    pub pipeline: PipelineSpec,
    /// `Manifest::self_tests` (may be omitted: none).
    #[serde(default)]
    pub self_tests: Vec<SelfTest>,
    /// Payload files, in bundle order.
    pub payload: Vec<PayloadSpec>,
    /// `Manifest::verifier` (may be omitted: a v1 bundle without stage 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier: Option<VerifierSection>,
}

/// One `[[payload]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadSpec {
    /// Name inside the bundle (`[A-Za-z0-9._-]`, at most 64 bytes).
    pub name: String,
    /// Source path: absolute, or relative to the spec's directory; `${VAR}` is expanded.
    pub path: String,
}

impl BundleSpec {
    /// Parses spec text; `origin` names the file in errors. Unknown keys are errors, also
    /// inside `[pipeline]` and `[[self_tests]]`.
    ///
    /// # Errors
    /// TOML syntax or type errors, and unknown keys, naming `origin`.
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        let spec: Self = toml::from_str(text)
            .with_context(|| format!("parsing bundle spec {}", origin.display()))?;
        // The manifest types do not deny unknown fields; compare the keys given with the
        // keys the parsed value has, so a typo is an error rather than silently ignored.
        let given: toml::Value =
            toml::from_str(text).with_context(|| format!("parsing {}", origin.display()))?;
        let known = toml::Value::try_from(&spec).context("re-encoding the parsed spec")?;
        let mut unknown = Vec::new();
        unknown_keys(&given, &known, "", &mut unknown);
        if !unknown.is_empty() {
            bail!(
                "bundle spec {}: unknown key(s) {} (see `outpost-provision build --help`)",
                origin.display(),
                unknown.join(", ")
            );
        }
        Ok(spec)
    }

    /// Reads and parses a spec file.
    ///
    /// # Errors
    /// As [`BundleSpec::parse`], or the file cannot be read.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading bundle spec {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// The manifest this spec describes, with `files` empty (filled by `build_bundle`).
    #[must_use]
    pub fn manifest(&self) -> Manifest {
        Manifest {
            name: self.name.clone(),
            version: self.version,
            compatible: self.compatible.clone(),
            runtime_min: self.runtime_min.clone(),
            runtime_max: self.runtime_max.clone(),
            development: self.development,
            pipeline: self.pipeline.clone(),
            self_tests: self.self_tests.clone(),
            files: Vec::new(),
            verifier: self.verifier.clone(),
        }
    }

    /// Adds the verifier exported into `dir`: `dir/verifier.json` becomes the
    /// `[verifier]` section and its three models are appended to the payload. Its
    /// `trigger` object, when present, is stage 1's operating point for the two stages
    /// (`threshold`, `smoothing_frames`): it replaces `pipeline.decision`'s, since a
    /// trigger that a verifier checks is set for recall, not for false accepts (the
    /// recipe's `stream_check.py` measures the pair).
    ///
    /// # Errors
    /// The spec has a `[verifier]` already; `verifier.json` is missing or not a
    /// [`VerifierSection`]; its `labels` (the recipe's `commands.txt` and `none`) differ
    /// from `pipeline.labels`; a model's name is already in the payload.
    pub fn add_verifier_dir(&mut self, dir: &Path) -> Result<()> {
        #[derive(Deserialize)]
        struct Export {
            labels: Vec<String>,
            #[serde(default)]
            trigger: Option<TriggerPoint>,
            #[serde(flatten)]
            section: VerifierSection,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct TriggerPoint {
            threshold: f32,
            smoothing_frames: u32,
        }
        ensure!(
            self.verifier.is_none(),
            "the spec has a [verifier] section already; drop it or --verifier {}",
            dir.display()
        );
        // Absolute, since payload paths resolve against the spec's directory.
        let dir = &std::path::absolute(dir)
            .with_context(|| format!("resolving the verifier directory {}", dir.display()))?;
        let path = dir.join("verifier.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("reading {} (written by verifier_export.py)", path.display())
        })?;
        let export: Export = serde_json::from_str(&text)
            .with_context(|| format!("parsing {} as a verifier section", path.display()))?;
        ensure!(
            export.labels == self.pipeline.labels,
            "{}: labels {:?} differ from the spec's pipeline.labels {:?} (export the verifier from the same commands.txt)",
            path.display(),
            export.labels,
            self.pipeline.labels
        );
        if let Some(t) = export.trigger {
            log::info!(
                "stage 1 set for the verifier by {}: threshold {} (was {}), smoothing {} frames (was {})",
                path.display(),
                t.threshold,
                self.pipeline.decision.threshold,
                t.smoothing_frames,
                self.pipeline.decision.smoothing_frames
            );
            self.pipeline.decision.threshold = t.threshold;
            self.pipeline.decision.smoothing_frames = t.smoothing_frames;
        }
        let v = export.section;
        for stage in [&v.mel, &v.encoder, &v.decoder] {
            ensure!(
                self.payload.iter().all(|p| p.name != stage.file),
                "payload '{}' of {} is already in the spec's payload",
                stage.file,
                path.display()
            );
            self.payload.push(PayloadSpec {
                name: stage.file.clone(),
                path: dir.join(&stage.file).to_string_lossy().into_owned(),
            });
        }
        self.verifier = Some(v);
        Ok(())
    }
}

fn unknown_keys(given: &toml::Value, known: &toml::Value, at: &str, out: &mut Vec<String>) {
    match (given, known) {
        (toml::Value::Table(g), toml::Value::Table(k)) => {
            for (key, gv) in g {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                match k.get(key) {
                    Some(kv) => unknown_keys(gv, kv, &path, out),
                    None => out.push(format!("'{path}'")),
                }
            }
        }
        (toml::Value::Array(g), toml::Value::Array(k)) => {
            for (i, (gv, kv)) in g.iter().zip(k).enumerate() {
                unknown_keys(gv, kv, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Expands `${VAR}` references with `lookup`. `$` not followed by `{` is kept as is.
///
/// # Errors
/// A variable that `lookup` does not know (named in the message), an unterminated `${`,
/// or an invalid variable name.
pub fn expand_vars(s: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            bail!("unterminated '${{' in '{s}' (expected ${{NAME}})");
        };
        let name = &after[..end];
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            bail!(
                "invalid variable name '${{{name}}}' in '{s}' (expected letters, digits and '_')"
            );
        }
        let value = lookup(name)
            .with_context(|| format!("environment variable {name} is not set (used in '{s}'); set it or use a plain path"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Resolves a payload path: expands `${VAR}` from the environment, then makes a relative
/// path relative to `spec_dir`.
///
/// # Errors
/// As [`expand_vars`].
pub fn resolve_path(raw: &str, spec_dir: &Path) -> Result<PathBuf> {
    let expanded = expand_vars(raw, |name| std::env::var(name).ok())?;
    let path = PathBuf::from(expanded);
    Ok(if path.is_absolute() {
        path
    } else {
        spec_dir.join(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "MODELS").then(|| "/opt/m".to_owned())
    }

    #[test]
    fn expansion() {
        assert_eq!(
            expand_vars("${MODELS}/vad.onnx", env).unwrap(),
            "/opt/m/vad.onnx"
        );
        assert_eq!(
            expand_vars("a/${MODELS}${MODELS}", env).unwrap(),
            "a//opt/m/opt/m"
        );
        assert_eq!(expand_vars("$HOME/x", env).unwrap(), "$HOME/x");
        let err = expand_vars("${OUTPOST_NOPE}/x", env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("OUTPOST_NOPE is not set"), "{err}");
        assert!(expand_vars("${MODELS", env)
            .unwrap_err()
            .to_string()
            .contains("unterminated"));
        assert!(expand_vars("${1X}", env)
            .unwrap_err()
            .to_string()
            .contains("invalid variable name"));
    }

    #[test]
    fn relative_paths_follow_the_spec() {
        assert_eq!(
            resolve_path("a/b.onnx", Path::new("/specs")).unwrap(),
            PathBuf::from("/specs/a/b.onnx")
        );
        assert_eq!(
            resolve_path("/abs/b.onnx", Path::new("/specs")).unwrap(),
            PathBuf::from("/abs/b.onnx")
        );
    }

    const SPEC: &str = r#"
name = "t"
version = 1
compatible = "any"
runtime_min = "0.1.0"
runtime_max = "0.9.0"
development = true
[pipeline]
sample_rate_hz = 16000
frame_samples = 1280
head_window = 16
labels = ["lights on", "none"]
[pipeline.vad]
file = "vad.onnx"
inputs = ["input", "state", "sr"]
outputs = ["output", "stateN"]
[pipeline.mel]
file = "mel.onnx"
inputs = ["input"]
outputs = ["output"]
[pipeline.embedding]
file = "emb.onnx"
inputs = ["input_1"]
outputs = ["conv2d_19"]
[pipeline.head]
file = "head.onnx"
inputs = ["embeddings"]
outputs = ["scores"]
[pipeline.decision]
threshold = 0.95
label_thresholds = []
smoothing_frames = 4
refractory_ms = 1000
vad_threshold = 0.005
vad_hangover_ms = 800
[pipeline.budgets_us]
vad_us = 1000
mel_us = 2000
embedding_us = 6000
head_us = 1000
[[payload]]
name = "head.onnx"
path = "head.onnx"
"#;

    fn export(dir: &Path, labels: &str, trigger: &str) {
        let stage = |f: &str, i: &str, o: &str| {
            format!(r#"{{"file": "{f}", "inputs": [{i}], "outputs": ["{o}"]}}"#)
        };
        let json = format!(
            r#"{{"mel": {}, "encoder": {}, "decoder": {}, "window_samples": 48000, "prompt": [1, 2],
                "eot": 3, "labels": {labels}, "candidates": [[4, 5], [6]], "theta": 2.0,
                "end_of_speech_vad": 0.5, "max_wait_ms": 320, "deadline_ms": 250,
                "budget_us": 100000{trigger}, "check": {{"clip": "x.wav"}}}}"#,
            stage("whisper_mel.onnx", r#""audio""#, "log_mel"),
            stage("whisper_encoder.onnx", r#""log_mel""#, "encoder_states"),
            stage(
                "whisper_decoder.onnx",
                r#""encoder_states", "tokens", "targets", "mask""#,
                "score"
            ),
        );
        std::fs::write(dir.join("verifier.json"), json).unwrap();
    }

    #[test]
    fn a_verifier_export_adds_its_section_its_models_and_its_trigger_point() {
        let dir = tempfile::tempdir().unwrap();
        export(
            dir.path(),
            r#"["lights on", "none"]"#,
            r#", "trigger": {"threshold": 0.5, "smoothing_frames": 2}"#,
        );
        let mut spec = BundleSpec::parse(SPEC, Path::new("t.toml")).unwrap();
        spec.add_verifier_dir(dir.path()).unwrap();
        let v = spec.verifier.as_ref().unwrap();
        assert_eq!(v.candidates, [vec![4, 5], vec![6]]);
        assert_eq!(v.decoder.inputs.len(), 4);
        let names: Vec<&str> = spec.payload.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "head.onnx",
                "whisper_mel.onnx",
                "whisper_encoder.onnx",
                "whisper_decoder.onnx"
            ]
        );
        assert!(Path::new(&spec.payload[3].path).is_absolute());
        assert_eq!(spec.pipeline.decision.threshold, 0.5);
        assert_eq!(spec.pipeline.decision.smoothing_frames, 2);
        assert!(spec.manifest().verifier.is_some());
        let again = spec.add_verifier_dir(dir.path()).unwrap_err().to_string();
        assert!(again.contains("already"), "{again}");
    }

    #[test]
    fn a_verifier_export_of_other_commands_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        export(dir.path(), r#"["lights off", "none"]"#, "");
        let mut spec = BundleSpec::parse(SPEC, Path::new("t.toml")).unwrap();
        let e = spec.add_verifier_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("differ from the spec's pipeline.labels"), "{e}");
        assert!(spec.verifier.is_none() && spec.payload.len() == 1);
        let e = spec
            .add_verifier_dir(&dir.path().join("absent"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("verifier.json"), "{e}");
    }
}
