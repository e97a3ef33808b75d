//! Audio input of the `outpost` client: any PCM WAV a field recorder or a phone writes,
//! converted to what the device takes (16 kHz mono s16le, docs/DESIGN.md §3), or raw s16le
//! 16 kHz mono from stdin.
//!
//! Conversion, only when the WAV is not already 16 kHz mono 16-bit:
//! - samples of any integer width (8–32 bit) or 32-bit float are scaled to [-1, 1)
//!   (a NaN or infinite float sample is refused as corrupt);
//! - channels are averaged into one;
//! - the rate is converted with `rubato`'s synchronous FFT resampler (`rubato::Fft`,
//!   Blackman-Harris anti-aliasing window, its start-up delay trimmed), so content above
//!   8 kHz is filtered out instead of folding back into the speech band;
//! - the result is rounded to s16 and clipped to its range.
//!
//! A 16 kHz mono 16-bit WAV is passed through sample for sample; a WAV declaring a rate
//! outside [`WAV_RATE_RANGE_HZ`] (1 kHz to 768 kHz) is refused.

use std::fmt;
use std::io::{self, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use outpost_protocol::SAMPLE_RATE_HZ;
use rubato::audioadapter_buffers::owned::InterleavedOwned;
use rubato::{Fft, FixedSync, Resampler};

/// Chunk of the FFT resampler, in input frames (rubato rounds it to a multiple of the
/// rate pair's minimum block; 1024 keeps the FFT small and the delay a few ms).
const RESAMPLER_CHUNK_FRAMES: usize = 1024;

/// Sample rates a WAV may declare, in Hz: from telephone-band recorders (8 kHz; down to
/// 1 kHz accepted) to the highest rate studio interfaces write (768 kHz). Outside it the
/// resampler's buffers grow with the rate ratio: a header claiming 4.29 GHz made it
/// allocate gigabytes (found by the `wav_reader` fuzz target).
pub const WAV_RATE_RANGE_HZ: std::ops::RangeInclusive<u32> = 1_000..=768_000;

/// The format a WAV was in before [`read_audio`] converted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavFormat {
    /// Sample rate, Hz.
    pub sample_rate_hz: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// Bits per sample.
    pub bits_per_sample: u16,
    /// 32-bit IEEE float rather than integer PCM.
    pub float: bool,
}

impl fmt::Display for WavFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} Hz, {} channel(s), {}-bit {}",
            self.sample_rate_hz,
            self.channels,
            self.bits_per_sample,
            if self.float { "float" } else { "integer" }
        )
    }
}

/// Audio ready to stream: 16 kHz mono s16 samples.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedAudio {
    /// Samples at 16 kHz, one channel.
    pub pcm: Vec<i16>,
    /// The WAV's own format when it had to be converted; `None` when it was already
    /// 16 kHz mono 16-bit (or was raw s16le from stdin).
    pub converted_from: Option<WavFormat>,
}

/// Reads audio for the device: a WAV file (converted as the module docs describe), or
/// stdin for `-` ([`read_audio_from`]).
///
/// # Errors
/// A file that does not exist or cannot be opened (said first, with the path); a file
/// that is not a PCM WAV; a float WAV that is not 32-bit; a WAV with no channels;
/// corrupt sample data; a rate the resampler refuses. Each names the file and what was
/// expected.
pub fn read_audio(path: &Path) -> Result<LoadedAudio> {
    if path == Path::new("-") {
        return read_audio_from(io::stdin().lock(), "stdin");
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let r = hound::WavReader::new(io::BufReader::new(file)).with_context(|| {
        format!(
            "cannot read {} as a PCM WAV (expected a RIFF/WAVE file; raw s16le 16 kHz mono \
             goes through stdin with `-`)",
            path.display()
        )
    })?;
    decode(r, &path.display().to_string())
}

/// Reads audio from a byte stream (stdin): a WAV if it starts with a RIFF/WAVE header
/// (converted as a file would be), otherwise raw s16le 16 kHz mono. `name` labels errors.
///
/// # Errors
/// No bytes at all; raw input of an odd number of bytes (not whole 16-bit samples); a
/// RIFF header whose WAV cannot be decoded; a read error.
pub fn read_audio_from(mut input: impl Read, name: &str) -> Result<LoadedAudio> {
    let mut raw = Vec::new();
    input
        .read_to_end(&mut raw)
        .with_context(|| format!("reading audio from {name}"))?;
    if raw.is_empty() {
        bail!("no audio on {name}: expected raw s16le 16 kHz mono samples or a WAV file");
    }
    if raw.len() >= 12 && &raw[..4] == b"RIFF" && &raw[8..12] == b"WAVE" {
        let r = hound::WavReader::new(io::Cursor::new(raw)).with_context(|| {
            format!("{name} starts with a RIFF/WAVE header but is not a PCM WAV")
        })?;
        return decode(r, &format!("the WAV on {name}"));
    }
    if raw.len() % 2 != 0 {
        bail!(
            "{} bytes on {name}: raw audio must be whole s16le samples (an even number of \
             bytes), 16 kHz mono",
            raw.len()
        );
    }
    let pcm = raw
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    Ok(LoadedAudio {
        pcm,
        converted_from: None,
    })
}

/// Decodes and converts an opened WAV; `name` labels errors.
fn decode<R: Read>(mut r: hound::WavReader<R>, name: &str) -> Result<LoadedAudio> {
    let s = r.spec();
    let format = WavFormat {
        sample_rate_hz: s.sample_rate,
        channels: s.channels,
        bits_per_sample: s.bits_per_sample,
        float: s.sample_format == hound::SampleFormat::Float,
    };
    let corrupt = || format!("corrupt samples in {name} ({format})");
    if format.channels == 0 {
        bail!("{name} declares 0 channels: expected at least one");
    }
    if !WAV_RATE_RANGE_HZ.contains(&format.sample_rate_hz) {
        bail!(
            "{name} declares a sample rate of {} Hz: expected {}..={} Hz",
            format.sample_rate_hz,
            WAV_RATE_RANGE_HZ.start(),
            WAV_RATE_RANGE_HZ.end()
        );
    }
    if !format.float
        && format.bits_per_sample == 16
        && format.channels == 1
        && format.sample_rate_hz == SAMPLE_RATE_HZ
    {
        let pcm = r
            .samples::<i16>()
            .collect::<Result<Vec<_>, _>>()
            .with_context(corrupt)?;
        return Ok(LoadedAudio {
            pcm,
            converted_from: None,
        });
    }
    let interleaved: Vec<f32> = if format.float {
        if format.bits_per_sample != 32 {
            bail!(
                "{name} is {format}: float WAVs must be 32-bit (expected 32-bit float or \
                 8–32-bit integer PCM)"
            );
        }
        let x = r
            .samples::<f32>()
            .collect::<Result<Vec<_>, _>>()
            .with_context(corrupt)?;
        // NaN or infinity is never audio; passed on, it made the resampler's inverse FFT
        // panic (found by the `wav_reader` fuzz target).
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            bail!(
                "corrupt samples in {name} ({format}): sample {i} is {} (expected finite values)",
                x[i]
            );
        }
        x
    } else {
        let scale = 1.0 / f64::from(1u32 << (format.bits_per_sample.clamp(1, 32) - 1));
        r.samples::<i32>()
            .map(|v| v.map(|v| (f64::from(v) * scale) as f32))
            .collect::<Result<Vec<_>, _>>()
            .with_context(corrupt)?
    };
    let ch = usize::from(format.channels);
    let mono = interleaved
        .chunks_exact(ch)
        .map(|f| f.iter().sum::<f32>() / ch as f32)
        .collect();
    finish(mono, format, name)
}

/// Resamples mono `x` (in [-1, 1)) from `format`'s rate to 16 kHz and rounds to s16.
fn finish(x: Vec<f32>, format: WavFormat, name: &str) -> Result<LoadedAudio> {
    let y = if format.sample_rate_hz == SAMPLE_RATE_HZ || x.is_empty() {
        x
    } else {
        resample(x, format.sample_rate_hz)
            .with_context(|| format!("cannot convert {name} ({format}) to 16000 Hz"))?
    };
    let pcm = y
        .iter()
        .map(|&v| (v * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16)
        .collect();
    Ok(LoadedAudio {
        pcm,
        converted_from: Some(format),
    })
}

/// Mono `x` at `rate_hz` → 16 kHz, `⌈len · 16000 / rate_hz⌉` samples, delay-free.
fn resample(x: Vec<f32>, rate_hz: u32) -> Result<Vec<f32>> {
    let n = x.len();
    let mut fft = Fft::<f32>::new(
        rate_hz as usize,
        SAMPLE_RATE_HZ as usize,
        RESAMPLER_CHUNK_FRAMES,
        1,
        FixedSync::Input,
    )?;
    let input = InterleavedOwned::new_from(x, 1, n)?;
    Ok(fft.process_all(&input, n, None)?.take_data())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::TAU;

    fn write_wav(spec: hound::WavSpec, frames: &[Vec<f32>]) -> tempfile::NamedTempFile {
        let f = tempfile::Builder::new().suffix(".wav").tempfile().unwrap();
        let mut w = hound::WavWriter::create(f.path(), spec).unwrap();
        for frame in frames {
            for &v in frame {
                match (spec.sample_format, spec.bits_per_sample) {
                    (hound::SampleFormat::Float, _) => w.write_sample(v).unwrap(),
                    (_, 8) => w.write_sample((v * 127.0).round() as i8).unwrap(),
                    (_, 16) => w.write_sample((v * 32_767.0).round() as i16).unwrap(),
                    (_, b) => w
                        .write_sample((v * ((1u32 << (b - 1)) - 1) as f32).round() as i32)
                        .unwrap(),
                }
            }
        }
        w.finalize().unwrap();
        f
    }

    fn spec(rate: u32, channels: u16, bits: u16, float: bool) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        }
    }

    fn tone(freq: f32, rate: u32, secs: f32, amp: f32) -> Vec<f32> {
        let n = (secs * rate as f32) as usize;
        (0..n)
            .map(|i| amp * (TAU * freq * i as f32 / rate as f32).sin())
            .collect()
    }

    /// RMS of `x` over its middle half (away from the edges of the resampled clip).
    fn mid_rms(x: &[f32]) -> f32 {
        let m = &x[x.len() / 4..3 * x.len() / 4];
        (m.iter().map(|v| v * v).sum::<f32>() / m.len() as f32).sqrt()
    }

    /// Least-squares amplitude and phase (rad) of a `freq` Hz sine at 16 kHz in the middle
    /// half of `x`: x ≈ amp · sin(2π f t + phase).
    fn fit_tone(x: &[f32], freq: f32) -> (f32, f32) {
        let (a, b) = (x.len() / 4, 3 * x.len() / 4);
        let (mut s, mut c) = (0.0f64, 0.0f64);
        for (i, &v) in x.iter().enumerate().take(b).skip(a) {
            let w = f64::from(TAU * freq * i as f32 / 16_000.0);
            s += f64::from(v) * w.sin();
            c += f64::from(v) * w.cos();
        }
        let n = (b - a) as f64 / 2.0;
        let (s, c) = (s / n, c / n);
        (s.hypot(c) as f32, c.atan2(s) as f32)
    }

    fn as_f32(pcm: &[i16]) -> Vec<f32> {
        pcm.iter().map(|&v| f32::from(v) / 32_768.0).collect()
    }

    /// Regression (fuzz target `wav_reader`): a 48-byte WAV declaring 4 294 967 295 Hz made
    /// the resampler allocate gigabytes; it is refused with the rate named.
    #[test]
    fn a_wav_with_an_absurd_sample_rate_is_refused_not_resampled() {
        let mut wav = b"RIFFP\x01\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0".to_vec();
        wav.extend([0xff; 8]);
        wav.extend(b"\x01\0\x08\0data\x02\0\0\0>?PA");
        assert_eq!(wav.len(), 48);
        let e = read_audio_from(&wav[..], "fuzz.wav")
            .unwrap_err()
            .to_string();
        assert!(e.contains("4294967295 Hz") && e.contains("768000"), "{e}");
        // The range's ends are accepted.
        for rate in [1_000, 768_000] {
            let x = tone(100.0, rate, 0.05, 0.5);
            let f = write_wav(
                spec(rate, 1, 16, false),
                &x.iter().map(|&v| vec![v]).collect::<Vec<_>>(),
            );
            assert!(read_audio(f.path()).is_ok(), "{rate} Hz");
        }
    }

    /// Regression (fuzz target `wav_reader`): a float WAV holding NaN made rubato's inverse
    /// FFT panic; it is refused, naming the sample.
    #[test]
    fn a_float_wav_with_nan_samples_is_refused_not_resampled() {
        let f = write_wav(
            spec(48_000, 1, 32, true),
            &[vec![0.25], vec![f32::NAN], vec![0.5]],
        );
        let e = read_audio(f.path()).unwrap_err().to_string();
        assert!(e.contains("sample 1 is NaN"), "{e}");
    }

    #[test]
    fn a_16_khz_mono_16_bit_wav_passes_through_unchanged() {
        let x: Vec<f32> = tone(440.0, 16_000, 0.5, 0.5);
        let f = write_wav(
            spec(16_000, 1, 16, false),
            &x.iter().map(|&v| vec![v]).collect::<Vec<_>>(),
        );
        let a = read_audio(f.path()).unwrap();
        assert_eq!(a.converted_from, None);
        let want: Vec<i16> = x.iter().map(|v| (v * 32_767.0).round() as i16).collect();
        assert_eq!(a.pcm, want);
    }

    #[test]
    fn a_44k1_stereo_24_bit_wav_becomes_16_khz_mono_with_the_tone_in_place() {
        // 1 kHz in both channels, 0.5 s: after conversion it must be the same 1 kHz sine at
        // 16 kHz (same phase: the resampler's delay is trimmed), at the same level.
        let l = tone(1000.0, 44_100, 0.5, 0.5);
        let frames: Vec<Vec<f32>> = l.iter().map(|&v| vec![v, v]).collect();
        let f = write_wav(spec(44_100, 2, 24, false), &frames);
        let a = read_audio(f.path()).unwrap();
        assert_eq!(
            a.converted_from,
            Some(WavFormat {
                sample_rate_hz: 44_100,
                channels: 2,
                bits_per_sample: 24,
                float: false
            })
        );
        assert_eq!(a.pcm.len(), (l.len() * 16_000).div_ceil(44_100));
        let (amp, phase) = fit_tone(&as_f32(&a.pcm), 1000.0);
        assert!(
            (amp - 0.5).abs() < 0.01,
            "1 kHz amplitude {amp}, expected 0.5"
        );
        // A 1 kHz phase error of 0.1 rad is 16 µs, a quarter sample at 16 kHz.
        assert!(
            phase.abs() < 0.1,
            "1 kHz phase {phase} rad, expected 0 (delay trimmed)"
        );
    }

    #[test]
    fn content_above_8_khz_is_filtered_not_folded_into_the_speech_band() {
        // 48 kHz float: a 10 kHz tone would alias to 6 kHz under plain decimation.
        let pass = tone(3000.0, 48_000, 0.5, 0.3);
        let stop = tone(10_000.0, 48_000, 0.5, 0.3);
        let f = write_wav(
            spec(48_000, 1, 32, true),
            &stop.iter().map(|&v| vec![v]).collect::<Vec<_>>(),
        );
        let y = as_f32(&read_audio(f.path()).unwrap().pcm);
        assert!(
            mid_rms(&y) < 0.01 * mid_rms(&stop),
            "10 kHz leaked: {}",
            mid_rms(&y)
        );
        let f = write_wav(
            spec(48_000, 1, 32, true),
            &pass.iter().map(|&v| vec![v]).collect::<Vec<_>>(),
        );
        let y = as_f32(&read_audio(f.path()).unwrap().pcm);
        let ratio = mid_rms(&y) / mid_rms(&pass);
        assert!(
            (0.97..1.03).contains(&ratio),
            "3 kHz level changed: {ratio}"
        );
    }

    #[test]
    fn an_8_khz_8_bit_wav_is_upsampled_and_channels_are_averaged() {
        // Left +0.4 DC-free tone, right its negation plus a smaller tone: the mean is the
        // smaller tone alone.
        let a = tone(500.0, 8_000, 0.5, 0.4);
        let b = tone(700.0, 8_000, 0.5, 0.4);
        let frames: Vec<Vec<f32>> = a
            .iter()
            .zip(&b)
            .map(|(&a, &b)| vec![a + b * 0.5, -a + b * 0.5])
            .collect();
        let f = write_wav(spec(8_000, 2, 8, false), &frames);
        let out = read_audio(f.path()).unwrap();
        assert_eq!(out.pcm.len(), 2 * a.len());
        let y = as_f32(&out.pcm);
        let want = tone(700.0, 16_000, 0.5, 0.2);
        let err: Vec<f32> = y.iter().zip(&want).map(|(a, b)| a - b).collect();
        // 8-bit samples: quantisation noise ~0.4/127/√3 per channel.
        assert!(
            mid_rms(&err) < 0.05 * mid_rms(&want),
            "error RMS {}",
            mid_rms(&err)
        );
    }

    #[test]
    fn a_file_that_is_not_a_wav_names_itself_and_what_was_expected() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), b"not a riff file at all").unwrap();
        let e = format!("{:#}", read_audio(f.path()).unwrap_err());
        assert!(e.contains(&f.path().display().to_string()), "{e}");
        assert!(e.contains("PCM WAV"), "{e}");
    }

    #[test]
    fn stdin_takes_raw_s16le_or_a_whole_wav_and_refuses_what_is_neither() {
        let raw: Vec<u8> = [1i16, -2, 300]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let a = read_audio_from(&raw[..], "stdin").unwrap();
        assert_eq!((a.pcm, a.converted_from), (vec![1, -2, 300], None));

        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut wav = io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut wav, spec).unwrap();
        for v in [100i16, 300, -100, -300] {
            w.write_sample(v).unwrap();
        }
        w.finalize().unwrap();
        let a = read_audio_from(&wav.get_ref()[..], "stdin").unwrap();
        assert_eq!(
            a.pcm,
            [200, -200],
            "the header is used, not played as samples"
        );
        assert!(a.converted_from.is_some());

        let e = read_audio_from(&[][..], "stdin").unwrap_err().to_string();
        assert!(e.contains("no audio on stdin"), "{e}");
        let e = read_audio_from(&[1u8, 2, 3][..], "stdin")
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 bytes on stdin") && e.contains("even"), "{e}");
    }

    #[test]
    fn a_missing_file_is_named_as_missing() {
        let e = format!(
            "{:#}",
            read_audio(Path::new("/nonexistent/clip.wav")).unwrap_err()
        );
        assert!(e.starts_with("cannot open /nonexistent/clip.wav"), "{e}");
        assert!(e.contains("No such file"), "{e}");
    }
}
