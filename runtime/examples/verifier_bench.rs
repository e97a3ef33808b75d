//! Cost of one stage-2 verification on this machine: mel, encoder and decoder of the
//! shipped verifier (`.outpost/verifier`, made by `scripts/setup`) over one 3 s window,
//! `--runs` times (default 200) after 5 warm-up runs, one intra-op thread, the CPU
//! execution provider unless `OUTPOST_PROVIDER` says otherwise. Prints p50 / p99 /
//! p99.9 / max in ms per part and in all.
//!
//! ```sh
//! cargo run --release -p outpost-runtime --example verifier_bench -- --runs 200
//! ```

use std::path::Path;

use hdrhistogram::Histogram;
use ort::session::RunOptions;
use outpost_runtime::ort_env::SessionConfig;
use outpost_runtime::verifier::{Verifier, VerifierSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut runs = 200usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().ok_or("--runs needs a number")?.parse()?,
            other => return Err(format!("unknown argument {other:?} (expected --runs N)").into()),
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.outpost/verifier");
    let read = |n: &str| {
        std::fs::read(dir.join(n))
            .map_err(|e| format!("{}: {e} (run scripts/setup first)", dir.join(n).display()))
    };
    let spec: VerifierSpec = serde_json::from_slice(&read("verifier.json")?)?;
    let mut v = Verifier::new(
        &read("whisper_mel.onnx")?,
        &read("whisper_encoder.onnx")?,
        &read("whisper_decoder.onnx")?,
        spec.clone(),
        &SessionConfig::default(),
    )?;
    // A deterministic speech-like window: a gliding harmonic tone with noise.
    let mut seed = 7u32;
    let window: Vec<i16> = (0..spec.section.window_samples)
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
    for _ in 0..5 {
        v.verify(&window, &run)?;
    }
    let mut h: Vec<Histogram<u64>> = (0..4)
        .map(|_| Histogram::new_with_bounds(1, 60_000_000, 3))
        .collect::<Result<_, _>>()?;
    for _ in 0..runs {
        let t = std::time::Instant::now();
        let verdict = v.verify(&window, &run)?;
        let total = t.elapsed().as_micros() as u64;
        for (k, us) in verdict.stage_us.iter().enumerate() {
            h[k].record(u64::from(*us).max(1))?;
        }
        h[3].record(total.max(1))?;
    }
    let p = v.providers();
    println!(
        "verifier: {runs} runs of one {} ms window, {} candidates, providers mel {} / encoder {} / decoder {}",
        spec.section.window_samples / 16,
        spec.section.candidates.len(),
        p[0],
        p[1],
        p[2]
    );
    println!("part       p50 ms   p99 ms  p99.9 ms   max ms");
    for (name, h) in ["mel", "encoder", "decoder", "total"].iter().zip(&h) {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{name:<8} {:>8.2} {:>8.2} {:>9.2} {:>8.2}",
            ms(0.5),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0
        );
    }
    Ok(())
}
