//! Test audio: the clips written by `scripts/make-clips` (`clips.tsv` +
//! 16 kHz mono s16 WAVs), cut into protocol frames, and a synthetic fallback.

use std::path::{Path, PathBuf};

use outpost_protocol::{FRAME_AUDIO_BYTES, FRAME_SAMPLES, SAMPLE_RATE_HZ};

/// Silence appended after each clip, in frames: ⌈1 s / 80 ms⌉ = 13, so a command at the
/// very end of a clip is still detected (detection fires 1–3 frames after speech ends).
pub const TAIL_SILENCE_FRAMES: usize = 13;

/// One row of `clips.tsv`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Clip {
    /// WAV file (relative paths in the TSV are resolved against the TSV's folder).
    pub path: PathBuf,
    /// Expected label, e.g. `lights on`.
    pub label: String,
    /// espeak-ng voice that spoke it, e.g. `en-us+f3`.
    pub voice: String,
}

/// Why clips could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    /// The TSV or a WAV could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// A TSV line does not have three tab-separated fields.
    #[error("{path}:{line}: expected `path<TAB>label<TAB>voice`, got {text:?}")]
    BadLine {
        /// TSV file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// A WAV is not 16 kHz mono 16-bit PCM.
    #[error(
        "{path}: {problem} (expected 16000 Hz mono 16-bit PCM; regenerate with scripts/make-clips)"
    )]
    BadWav {
        /// WAV file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// Parses `clips.tsv` text. Blank lines, `#` comments and a header row whose first
/// field is `path` are skipped; relative paths are joined to `base`.
///
/// # Errors
/// [`ClipError::BadLine`] for a line without three non-empty fields.
pub fn parse_clips_tsv(text: &str, base: &Path, origin: &Path) -> Result<Vec<Clip>, ClipError> {
    let mut clips = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != 3 || fields.iter().any(|f| f.trim().is_empty()) {
            return Err(ClipError::BadLine {
                path: origin.to_owned(),
                line: i + 1,
                text: line.to_owned(),
            });
        }
        if clips.is_empty() && fields[0] == "path" {
            continue;
        }
        let p = PathBuf::from(fields[0].trim());
        clips.push(Clip {
            path: if p.is_absolute() { p } else { base.join(p) },
            label: fields[1].trim().to_owned(),
            voice: fields[2].trim().to_owned(),
        });
    }
    Ok(clips)
}

/// Reads `clips.tsv` from a file.
///
/// # Errors
/// [`ClipError::Read`] or [`ClipError::BadLine`].
pub fn load_clips_tsv(path: &Path) -> Result<Vec<Clip>, ClipError> {
    let text = std::fs::read_to_string(path).map_err(|source| ClipError::Read {
        path: path.to_owned(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_clips_tsv(&text, base, path)
}

/// The default clips table: `$OUTPOST_CLIPS/clips.tsv`, else `.outpost/clips/clips.tsv`.
pub fn default_clips_tsv() -> PathBuf {
    let dir = std::env::var_os("OUTPOST_CLIPS")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(".outpost/clips"), PathBuf::from);
    dir.join("clips.tsv")
}

/// Reads a WAV as 16 kHz mono s16 samples.
///
/// # Errors
/// [`ClipError::Read`] / [`ClipError::BadWav`].
pub fn read_wav(path: &Path) -> Result<Vec<i16>, ClipError> {
    let bad = |problem: String| ClipError::BadWav {
        path: path.to_owned(),
        problem,
    };
    let reader = hound::WavReader::open(path).map_err(|e| match e {
        hound::Error::IoError(source) => ClipError::Read {
            path: path.to_owned(),
            source,
        },
        other => bad(other.to_string()),
    })?;
    let spec = reader.spec();
    if spec.sample_rate != SAMPLE_RATE_HZ
        || spec.channels != 1
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        return Err(bad(format!(
            "{} Hz, {} channel(s), {}-bit {:?}",
            spec.sample_rate, spec.channels, spec.bits_per_sample, spec.sample_format
        )));
    }
    reader
        .into_samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))
}

/// Cuts samples into frames of [`FRAME_AUDIO_BYTES`] s16le bytes, zero-padding the last
/// partial frame, then appends `tail_frames` frames of silence.
pub fn to_frames(samples: &[i16], tail_frames: usize) -> Vec<Vec<u8>> {
    let mut frames: Vec<Vec<u8>> = samples
        .chunks(FRAME_SAMPLES)
        .map(|chunk| {
            let mut f = Vec::with_capacity(FRAME_AUDIO_BYTES);
            for s in chunk {
                f.extend_from_slice(&s.to_le_bytes());
            }
            f.resize(FRAME_AUDIO_BYTES, 0);
            f
        })
        .collect();
    frames.extend((0..tail_frames).map(|_| vec![0u8; FRAME_AUDIO_BYTES]));
    frames
}

/// Reads a clip's WAV and returns its frames with [`TAIL_SILENCE_FRAMES`] appended.
///
/// # Errors
/// As [`read_wav`].
pub fn clip_frames(clip: &Clip) -> Result<Vec<Vec<u8>>, ClipError> {
    Ok(to_frames(&read_wav(&clip.path)?, TAIL_SILENCE_FRAMES))
}

/// Synthetic stand-in for speech when no clips exist: `seconds` of a 220 Hz tone with
/// vibrato plus white noise (deterministic), 16 kHz s16.
pub fn synth_tone_noise(seconds: f32) -> Vec<i16> {
    let n = (seconds * SAMPLE_RATE_HZ as f32) as usize;
    let mut state: u32 = 0x1234_5678;
    (0..n)
        .map(|i| {
            let t = i as f32 / SAMPLE_RATE_HZ as f32;
            let f = 220.0 + 30.0 * (2.0 * std::f32::consts::PI * 5.0 * t).sin();
            let tone = (2.0 * std::f32::consts::PI * f * t).sin() * 6000.0;
            // xorshift32 noise in [-1, 1)
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let noise = (state as f32 / u32::MAX as f32 - 0.5) * 2.0 * 1500.0;
            (tone + noise) as i16
        })
        .collect()
}

/// Normalises a label for comparison: lower case, `_`/`-` as spaces, single spaces.
pub fn normalise_label(label: &str) -> String {
    label
        .to_lowercase()
        .replace(['_', '-'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
