//! Micro-batching across streams: does running several streams' frames through one
//! model call lower the cost per frame on this machine? (docs/DESIGN.md §4.)
//!
//! For each batchable stage (Silero VAD with per-stream state, the openWakeWord
//! embedding model, the command head) it times one call at batch 1, 2, 4 and 8 on the
//! CPU provider with the daemon's session settings (one intra-op thread), and prints
//! per-call p50 / p99 / p99.9 / max in µs, the per-frame p50, and the per-frame p50
//! against batch 1 measured in the same run. The mel stage is not batchable: the
//! upstream `melspectrogram.onnx` floors its output at the window's own maximum − 80 dB,
//! so a batch would mix streams (see the recipe README).
//!
//! A model called over and over stays in cache; in the daemon each stage runs once per
//! frame after the others. So the second table times whole frames of B streams in the
//! daemon's order (per stream: 2 VAD calls, mel, embedding, head) against the batched
//! order (2 VAD calls and one head call for all B streams, mel and embedding per
//! stream), per frame.
//!
//! Run: `cargo bench -p outpost-runtime --bench batching` (needs `scripts/setup`: the
//! fetched models in `.outpost/models` and the ONNX Runtime library). `BATCH_ITERS` sets
//! the calls per row (default 2000).

use std::path::{Path, PathBuf};
use std::time::Instant;

use hdrhistogram::Histogram;
use ort::session::Session;
use ort::value::TensorRef;
use outpost_protocol::{Provider, Stage};
use outpost_runtime::ort_env::{build_session, ProviderChoice, SessionConfig};

const BATCHES: [usize; 4] = [1, 2, 4, 8];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn load(what: Stage, path: PathBuf) -> Session {
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup)", path.display()));
    let cfg = SessionConfig {
        providers: ProviderChoice::Only(Provider::Cpu),
        trt_cache_dir: None,
    };
    build_session(what, &bytes, &cfg)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .0
}

/// Deterministic pseudo-random input in [-1, 1) (xorshift32).
fn noise(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

struct Row {
    stage: &'static str,
    batch: usize,
    call: Histogram<u64>,
}

/// Per-call wall time in µs over `iters` calls, after a short warm-up.
fn time(iters: usize, mut f: impl FnMut()) -> Histogram<u64> {
    for _ in 0..iters / 10 + 5 {
        f();
    }
    let mut h = Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds");
    for _ in 0..iters {
        let t = Instant::now();
        f();
        h.saturating_record(t.elapsed().as_micros().max(1) as u64);
    }
    h
}

fn main() {
    let iters: usize = std::env::var("BATCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let models = repo().join(".outpost/models");
    let mut vad = load(Stage::Vad, models.join("silero_vad.onnx"));
    let mut emb = load(Stage::Embedding, models.join("embedding_model.onnx"));
    let mut head = load(
        Stage::Head,
        repo().join("models/reference/command_head.onnx"),
    );
    let mut mel = load(Stage::Mel, models.join("melspectrogram.onnx"));
    let mut rows = Vec::new();
    for &b in &BATCHES {
        // Silero VAD: input [b, 64 context + 512 samples], state [2, b, 128], sr scalar.
        let audio = noise(b * 576, 1);
        let state = vec![0f32; 2 * b * 128];
        let call = time(iters, || run_vad(&mut vad, b, &audio, &state));
        rows.push(Row {
            stage: "VAD (one Silero call)",
            batch: b,
            call,
        });
        // Embedding: [b, 76 mel frames, 32 bins, 1] -> [b, 1, 1, 96].
        let m = noise(b * 76 * 32, 2);
        let call = time(iters, || {
            run_one(&mut emb, "input_1", vec![b, 76, 32, 1], &m)
        });
        rows.push(Row {
            stage: "embedding",
            batch: b,
            call,
        });
        // Head: [b, 16, 96] -> [b, labels].
        let e = noise(b * 16 * 96, 3);
        let call = time(iters, || {
            run_one(&mut head, "embeddings", vec![b, 16, 96], &e)
        });
        rows.push(Row {
            stage: "command head",
            batch: b,
            call,
        });
    }
    let frames = frame_rows(iters / 4, &mut vad, &mut mel, &mut emb, &mut head);
    println!(
        "# Micro-batching across streams (CPU provider, 1 intra-op thread, {iters} calls per row)\n"
    );
    println!(
        "| stage | batch | per call p50 / p99 / p99.9 / max µs | per frame p50 µs | per frame vs batch 1 |"
    );
    println!("|---|---:|---|---:|---:|");
    for r in &rows {
        let base = rows
            .iter()
            .find(|x| x.stage == r.stage && x.batch == 1)
            .map_or(1, |x| x.call.value_at_quantile(0.5).max(1));
        let p50 = r.call.value_at_quantile(0.5);
        let per_frame = p50 as f64 / r.batch as f64;
        println!(
            "| {} | {} | {} / {} / {} / {} | {:.0} | {:.2} |",
            r.stage,
            r.batch,
            p50,
            r.call.value_at_quantile(0.99),
            r.call.value_at_quantile(0.999),
            r.call.max(),
            per_frame,
            per_frame / base as f64
        );
    }
    println!(
        "\n## Whole frames, B streams, daemon order vs batched VAD and head ({} rounds per row)\n",
        iters / 4
    );
    println!("| B | daemon order per frame p50 / p99 µs | batched per frame p50 / p99 µs | batched / daemon order (p50) |");
    println!("|---:|---|---|---:|");
    for (b, seq, bat) in &frames {
        let (s50, b50) = (seq.value_at_quantile(0.5), bat.value_at_quantile(0.5));
        println!(
            "| {b} | {} / {} | {} / {} | {:.2} |",
            s50 / *b as u64,
            seq.value_at_quantile(0.99) / *b as u64,
            b50 / *b as u64,
            bat.value_at_quantile(0.99) / *b as u64,
            b50 as f64 / s50.max(1) as f64
        );
    }
}

fn run_vad(vad: &mut Session, b: usize, audio: &[f32], state: &[f32]) {
    let sr = [16_000i64];
    let out = vad
        .run(ort::inputs![
            "input" => TensorRef::from_array_view(([b, 576usize], audio)).expect("vad input"),
            "state" => TensorRef::from_array_view(([2usize, b, 128], state)).expect("vad state"),
            "sr" => TensorRef::from_array_view((Vec::<i64>::new(), &sr[..])).expect("vad sr"),
        ])
        .expect("vad run");
    let (_, p) = out["output"]
        .try_extract_tensor::<f32>()
        .expect("vad output");
    assert_eq!(p.len(), b);
}

fn run_one(s: &mut Session, input: &str, shape: Vec<usize>, x: &[f32]) {
    let out = s
        .run(ort::inputs![input => TensorRef::from_array_view((shape, x)).expect("input")])
        .expect("run");
    assert!(!out[0]
        .try_extract_tensor::<f32>()
        .expect("output")
        .1
        .is_empty());
}

/// Per round: B streams' frames in the daemon's order, then in the batched order; both
/// timed per round (all B frames), µs.
fn frame_rows(
    rounds: usize,
    vad: &mut Session,
    mel: &mut Session,
    emb: &mut Session,
    head: &mut Session,
) -> Vec<(usize, Histogram<u64>, Histogram<u64>)> {
    let mut rows = Vec::new();
    for &b in &BATCHES[1..] {
        let audio = noise(b * 576, 4);
        let state = vec![0f32; 2 * b * 128];
        let pcm: Vec<f32> = noise(1760, 5).iter().map(|x| x * 3000.0).collect();
        let m = noise(76 * 32, 6);
        let e = noise(b * 16 * 96, 7);
        let mut seq = Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds");
        let mut bat = seq.clone();
        for r in 0..rounds + 10 {
            let t = Instant::now();
            for i in 0..b {
                for _ in 0..2 {
                    run_vad(vad, 1, &audio[i * 576..(i + 1) * 576], &state[..256]);
                }
                run_one(mel, "input", vec![1, 1760], &pcm);
                run_one(emb, "input_1", vec![1, 76, 32, 1], &m);
                run_one(
                    head,
                    "embeddings",
                    vec![1, 16, 96],
                    &e[i * 1536..(i + 1) * 1536],
                );
            }
            let t_seq = t.elapsed();
            let t = Instant::now();
            for _ in 0..2 {
                run_vad(vad, b, &audio, &state);
            }
            for _ in 0..b {
                run_one(mel, "input", vec![1, 1760], &pcm);
                run_one(emb, "input_1", vec![1, 76, 32, 1], &m);
            }
            run_one(head, "embeddings", vec![b, 16, 96], &e);
            let t_bat = t.elapsed();
            if r >= 10 {
                seq.saturating_record(t_seq.as_micros().max(1) as u64);
                bat.saturating_record(t_bat.as_micros().max(1) as u64);
            }
        }
        rows.push((b, seq, bat));
    }
    rows
}
