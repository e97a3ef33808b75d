//! Cost of one stage-2 verification on this machine: mel, encoder and decoder of the
//! shipped verifier (`.outpost/verifier`, made by `scripts/setup`, or `--dir DIR`) over
//! one 3 s window, `--runs` times (default 200) after 5 warm-up runs, one intra-op
//! thread, the CPU execution provider unless `OUTPOST_PROVIDER` says otherwise. Prints
//! p50 / p99 / p99.9 / max in ms per part and in all. With `--baseline DIR` (another
//! export, e.g. a copy of `.outpost/verifier` made before a change) both run in turns
//! in the same process, and the ratios of their totals are printed.
//!
//! ```sh
//! cargo run --release -p outpost-runtime --example verifier_bench -- --runs 200 [--baseline DIR]
//! ```

use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use ort::session::RunOptions;
use outpost_runtime::ort_env::SessionConfig;
use outpost_runtime::verifier::{Verifier, VerifierSpec};

/// One verifier export under test and its histograms (mel, encoder, decoder, total; µs).
struct Bench {
    name: String,
    v: Verifier,
    spec: VerifierSpec,
    h: Vec<Histogram<u64>>,
}

impl Bench {
    fn load(dir: &Path) -> Result<Self, Box<dyn std::error::Error>> {
        let read = |n: &str| {
            std::fs::read(dir.join(n))
                .map_err(|e| format!("{}: {e} (run scripts/setup first)", dir.join(n).display()))
        };
        let spec: VerifierSpec = serde_json::from_slice(&read("verifier.json")?)?;
        let v = Verifier::new(
            &read("whisper_mel.onnx")?,
            &read("whisper_encoder.onnx")?,
            &read("whisper_decoder.onnx")?,
            spec.clone(),
            &SessionConfig::default(),
        )?;
        let h = (0..4)
            .map(|_| Histogram::new_with_bounds(1, 60_000_000, 3))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name: dir.display().to_string(),
            v,
            spec,
            h,
        })
    }

    fn run(
        &mut self,
        window: &[i16],
        run: &RunOptions,
        record: bool,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let t = std::time::Instant::now();
        let verdict = self.v.verify(window, run)?;
        let total = t.elapsed().as_micros() as u64;
        if record {
            for (k, us) in verdict.stage_us.iter().enumerate() {
                self.h[k].record(u64::from(*us).max(1))?;
            }
            self.h[3].record(total.max(1))?;
        }
        Ok(())
    }

    fn print(&self, runs: usize) {
        let p = self.v.providers();
        println!(
            "{}: {runs} runs of one {} ms window, {} candidates, providers mel {} / encoder {} / decoder {}",
            self.name,
            self.spec.section.window_samples / 16,
            self.spec.section.candidates.len(),
            p[0],
            p[1],
            p[2]
        );
        println!("part       p50 ms   p99 ms  p99.9 ms   max ms");
        for (name, h) in ["mel", "encoder", "decoder", "total"].iter().zip(&self.h) {
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            println!(
                "{name:<8} {:>8.2} {:>8.2} {:>9.2} {:>8.2}",
                ms(0.5),
                ms(0.99),
                ms(0.999),
                h.max() as f64 / 1000.0
            );
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut runs = 200usize;
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.outpost/verifier");
    let mut baseline = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().ok_or("--runs needs a number")?.parse()?,
            "--dir" => dir = args.next().ok_or("--dir needs a directory")?.into(),
            "--baseline" => {
                baseline = Some(PathBuf::from(
                    args.next().ok_or("--baseline needs a directory")?,
                ))
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?} (expected --runs N, --dir DIR, --baseline DIR)"
                )
                .into())
            }
        }
    }
    let mut benches = vec![Bench::load(&dir)?];
    if let Some(b) = baseline {
        benches.push(Bench::load(&b)?);
    }
    // A deterministic speech-like window: a gliding harmonic tone with noise.
    let mut seed = 7u32;
    let window: Vec<i16> = (0..benches[0].spec.section.window_samples)
        .map(|i| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let t = i as f32 / 16_000.0;
            let f0 = 120.0 + 40.0 * (t * 3.0).sin();
            let s: f32 = (1..6)
                .map(|h| (2.0 * std::f32::consts::PI * f0 * h as f32 * t).sin() / h as f32)
                .sum();
            (s * 4000.0 + ((seed >> 16) as f32 / 65536.0 - 0.5) * 300.0) as i16
        })
        .collect();
    let run = RunOptions::new()?;
    for i in 0..5 + runs {
        for b in &mut benches {
            b.run(&window, &run, i >= 5)?;
        }
    }
    for b in &benches {
        b.print(runs);
    }
    if let [new, base] = &benches[..] {
        let q = |b: &Bench, q: f64| b.h[3].value_at_quantile(q) as f64;
        println!(
            "total against the baseline: p50 {:.2}x, p99 {:.2}x",
            q(new, 0.5) / q(base, 0.5),
            q(new, 0.99) / q(base, 0.99)
        );
    }
    Ok(())
}
