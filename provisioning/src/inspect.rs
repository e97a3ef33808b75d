//! `inspect`: show what a bundle claims, without needing to trust it.

use std::fmt::Write as _;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use outpost_models::format::{self, to_hex, Header, MAGIC};
use outpost_models::verify::bundle_id;
use outpost_models::{KeyId, Manifest};
use serde_json::{json, Value};

/// What `inspect` found. Nothing here is trusted unless `verification` is `Some(Ok(_))`.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The bundle file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub file_size: u64,
    /// The (checked) header.
    pub header: Header,
    /// Key id from the signature block (unverified).
    pub key_id: KeyId,
    /// SHA-256 of the manifest bytes.
    pub manifest_sha256: [u8; 32],
    /// The decoded manifest, or why it does not decode.
    pub manifest: Result<Manifest, String>,
    /// `Manifest::validate` or `Manifest::check_runtime` failure, if decoded and invalid.
    pub validation_error: Option<String>,
    /// `None`: not attempted (no keys given). `Some(Ok(line))` / `Some(Err(message))`.
    pub verification: Option<Result<String, String>>,
}

/// Reads the header, manifest and signature block of `bundle`. With `keys`, also verifies
/// it fully against the `*.pub` keys there (development bundles allowed: inspect reports,
/// it does not install).
///
/// # Errors
/// The file cannot be opened or its header/manifest/signature block cannot be read (bad
/// magic, truncated, ...). Verification failures are reported in the result, not as errors.
pub fn inspect(bundle: &Path, keys: Option<&Path>) -> Result<Inspection> {
    let file = File::open(bundle).with_context(|| format!("opening {}", bundle.display()))?;
    let file_size = file
        .metadata()
        .with_context(|| format!("reading {}", bundle.display()))?
        .len();
    let head = format::read_head(&mut BufReader::new(file))
        .with_context(|| format!("{}", bundle.display()))?;
    let manifest_sha256 = format::sha256(&head.manifest_bytes);
    let manifest = format::decode_manifest(head.header.format_version, &head.manifest_bytes)
        .map_err(|e| e.to_string());
    let validation_error = manifest
        .as_ref()
        .ok()
        .and_then(|m| m.validate().and_then(|()| m.check_runtime()).err())
        .map(|e| e.to_string());
    let verification = keys.map(|dir| {
        crate::verify(bundle, dir, true, None)
            .map(|v| crate::verify_ok_line(&v))
            .map_err(|e| format!("{e:#}"))
    });
    Ok(Inspection {
        path: bundle.to_owned(),
        file_size,
        header: head.header,
        key_id: head.signature.key_id,
        manifest_sha256,
        manifest,
        validation_error,
        verification,
    })
}

impl Inspection {
    /// `true` when keys were given and the bundle did not verify.
    #[must_use]
    pub fn failed_verification(&self) -> bool {
        matches!(self.verification, Some(Err(_)))
    }

    fn signature_status(&self) -> String {
        match &self.verification {
            None => "signature NOT verified (pass --keys DIR to verify)".to_owned(),
            Some(Ok(line)) => format!("signature verified: {line}"),
            Some(Err(e)) => format!("verification FAILED: {e}"),
        }
    }

    fn expected_size(&self) -> Option<u64> {
        let m = self.manifest.as_ref().ok()?;
        Some(
            (format::HEADER_LEN + format::SIGNATURE_BLOCK_LEN) as u64
                + u64::from(self.header.manifest_len)
                + m.payload_len(),
        )
    }

    /// Human-readable report.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let h = &self.header;
        let _ = writeln!(s, "bundle     {}", self.path.display());
        let _ = writeln!(s, "status     {}", self.signature_status());
        let _ = write!(s, "size       {} bytes", self.file_size);
        match self.expected_size() {
            Some(e) if e == self.file_size => s.push_str(" (as the manifest says)\n"),
            Some(e) => {
                let _ = writeln!(s, " (the manifest says {e} bytes)");
            }
            None => s.push('\n'),
        }
        let _ = writeln!(
            s,
            "header     magic {}, format_version {}, flags 0x{:04x}, manifest_len {} bytes",
            String::from_utf8_lossy(&MAGIC),
            h.format_version,
            h.flags,
            h.manifest_len
        );
        let _ = writeln!(s, "key id     {}", self.key_id);
        let _ = writeln!(s, "manifest   sha256 {}", to_hex(&self.manifest_sha256));
        let m = match &self.manifest {
            Ok(m) => m,
            Err(e) => {
                let _ = writeln!(s, "manifest does not decode: {e}");
                return s;
            }
        };
        let _ = writeln!(s, "bundle id  {}", bundle_id(m, &self.manifest_sha256));
        if let Some(e) = &self.validation_error {
            let _ = writeln!(s, "INVALID    {e}");
        }
        let _ = writeln!(s, "  name          {}", m.name);
        let _ = writeln!(s, "  version       {}", m.version);
        let _ = writeln!(s, "  compatible    {}", m.compatible);
        let _ = writeln!(s, "  runtime       {} ..= {}", m.runtime_min, m.runtime_max);
        let _ = writeln!(s, "  development   {}", m.development);
        let p = &m.pipeline;
        let _ = writeln!(
            s,
            "  pipeline      {} Hz, {} samples/frame, head window {} embeddings",
            p.sample_rate_hz, p.frame_samples, p.head_window
        );
        for (n, st) in [
            ("vad", &p.vad),
            ("mel", &p.mel),
            ("embedding", &p.embedding),
            ("head", &p.head),
        ] {
            let _ = writeln!(
                s,
                "    {n:<11} {}  inputs {:?}  outputs {:?}",
                st.file, st.inputs, st.outputs
            );
        }
        let _ = writeln!(s, "    labels      {}", p.labels.join(", "));
        let d = &p.decision;
        let _ = writeln!(
            s,
            "    decision    threshold {}, label thresholds {:?}, smoothing {} frames, refractory {} ms, vad threshold {}, vad hangover {} ms",
            d.threshold, d.label_thresholds, d.smoothing_frames, d.refractory_ms, d.vad_threshold, d.vad_hangover_ms
        );
        let b = &p.budgets_us;
        let _ = writeln!(
            s,
            "    budgets     vad {} µs, mel {} µs, embedding {} µs, head {} µs",
            b.vad_us, b.mel_us, b.embedding_us, b.head_us
        );
        let _ = writeln!(s, "  self tests    {}", m.self_tests.len());
        for t in &m.self_tests {
            let _ = writeln!(
                s,
                "    {} -> {} (max {} µs/frame)",
                t.audio_file, t.expect_label, t.max_frame_us
            );
        }
        let _ = writeln!(
            s,
            "  files         {} ({} bytes)",
            m.files.len(),
            m.payload_len()
        );
        for f in &m.files {
            let _ = writeln!(
                s,
                "    {:<24} {:>10} bytes  sha256 {}",
                f.name,
                f.len,
                to_hex(&f.sha256)
            );
        }
        s
    }

    /// Machine-readable report. SHA-256 values are lowercase hex strings.
    ///
    /// # Errors
    /// Only if the manifest cannot be represented as JSON (non-finite thresholds).
    pub fn to_json(&self) -> Result<Value> {
        let manifest = match &self.manifest {
            Ok(m) => {
                let mut v = serde_json::to_value(m).context("encoding the manifest as JSON")?;
                if let Some(files) = v.get_mut("files").and_then(Value::as_array_mut) {
                    for (fv, f) in files.iter_mut().zip(&m.files) {
                        fv["sha256"] = Value::String(to_hex(&f.sha256));
                    }
                }
                v
            }
            Err(_) => Value::Null,
        };
        let (verified, verification) = match &self.verification {
            None => (false, Value::Null),
            Some(Ok(line)) => (true, Value::String(line.clone())),
            Some(Err(e)) => (false, Value::String(e.clone())),
        };
        Ok(json!({
            "path": self.path.display().to_string(),
            "file_size": self.file_size,
            "expected_size": self.expected_size(),
            "header": {
                "magic": String::from_utf8_lossy(&MAGIC),
                "format_version": self.header.format_version,
                "flags": self.header.flags,
                "manifest_len": self.header.manifest_len,
            },
            "key_id": self.key_id.to_string(),
            "signature_verified": verified,
            "verification": verification,
            "manifest_sha256": to_hex(&self.manifest_sha256),
            "bundle_id": self.manifest.as_ref().ok().map(|m| bundle_id(m, &self.manifest_sha256)),
            "manifest_error": self.manifest.as_ref().err(),
            "validation_error": self.validation_error,
            "manifest": manifest,
        }))
    }
}
