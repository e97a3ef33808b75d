"""The bundle spec of a custom vocabulary (scripts/train-commands): OUT/bundle.toml for the head
OUT/command_head.onnx that train.py trained on C.COMMANDS (OUTPOST_COMMANDS), with a self-test
clip of one command, for `outpost-provision build --verifier`.

- Decision: refractory and VAD gate from the shipped operating point (../training_report.json);
  threshold and smoothing from the verifier's `trigger` (verifier.json), which
  `outpost-provision build --verifier` writes into the bundle anyway (stage 1 of a two-stage
  bundle fires on any command, DESIGN §3); no per-label thresholds (those were tuned for the
  shipped head's commands).
- Self-test: the command said by golden.SELFTEST_VOICE (a held-out espeak-ng voice), 0.5 s of
  silence before and 0.8 s after, as OUT/selftest_<command>.raw (s16le, 16 kHz). Before it is
  written into the spec, the literal streaming pipeline (golden.stream_detections) with the
  trigger's threshold and smoothing must detect that command exactly once, best command
  taking it (stricter than the runtime's any-command rule), and the verifier must name it on
  the window the runtime would verify; otherwise this exits naming what was detected, so a
  bundle that would boot into safe mode is never written. Runs in .venv-verifier.

  python custom_bundle.py OUT --verifier VDIR [--name NAME] [--version N] [--production] [--selftest COMMAND]
"""
import argparse
import json
from pathlib import Path

import numpy as np

import common as C
import golden


def verdict(vdir, vj, clip, trigger, vads):
    """(label, margin in nats) of the verifier in `vdir` on the window the runtime verifies for a
    trigger at frame `trigger`: the 3 s ending on the first frame from the trigger on whose VAD
    probability is below end_of_speech_vad, or max_wait_ms after it (runtime
    VerifyConfig::utterance_ended), zeros before the clip."""
    import verifier_train as VT
    import whisper_ct2
    wait = vj["max_wait_ms"] // (C.FRAME * 1000 // C.SR)
    k = next((k for k in range(trigger, len(vads)) if vads[k] < vj["end_of_speech_vad"] or k - trigger >= wait),
             len(vads) - 1)
    x = clip[:(k + 1) * C.FRAME].astype(np.float32) / 32768
    m = whisper_ct2.WhisperCT2()
    seqs = VT.sequences(m)
    enc = VT.Encoder({"mel": Path(vdir) / "whisper_mel.onnx", "encoder": Path(vdir) / "whisper_encoder.onnx"}, 1)
    s = VT.Scorer(Path(vdir) / "whisper_decoder.onnx", m, seqs, 1)(enc(VT.place(x, 0)))
    best = int(np.argmax(s[:-1]))
    d = VT.decide(s, vj["theta"])
    return C.LABELS[d], float(s[best] - s[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="directory holding command_head.onnx; bundle.toml and the self-test clip go there")
    ap.add_argument("--verifier", required=True, help="verifier_export.py's directory (verifier.json)")
    ap.add_argument("--name", default="outpost-custom")
    ap.add_argument("--version", type=int, default=1, help="bundle version (must exceed the device's anti-rollback floor)")
    ap.add_argument("--production", action="store_true",
                    help="a production bundle (development = false): sign it with a production key")
    ap.add_argument("--selftest", default=None, help="command of the self-test clip (default: the last of the list)")
    a = ap.parse_args()
    out = Path(a.out)
    head = out / "command_head.onnx"
    if not head.exists():
        raise SystemExit(f"custom_bundle.py: {head} is missing (train.py with OUTPOST_HEAD_OUT writes it)")
    vj = json.loads((Path(a.verifier) / "verifier.json").read_text())
    if vj["labels"] != C.LABELS:
        raise SystemExit(f"custom_bundle.py: the verifier's labels {vj['labels']} are not {C.LABELS} "
                         "(export it with the same OUTPOST_COMMANDS)")
    cmd = a.selftest or C.COMMANDS[-1]
    if cmd not in C.COMMANDS:
        raise SystemExit(f"custom_bundle.py: --selftest {cmd!r} is not one of the commands {C.COMMANDS}")
    base = golden.decision_params()
    dec = dict(threshold=vj["trigger"]["threshold"], smoothing_frames=vj["trigger"]["smoothing_frames"],
               refractory_ms=base["refractory_ms"], vad_threshold=base["vad_threshold"],
               vad_hangover_ms=base["vad_hangover_ms"], label_thresholds=[])
    clip = golden.selftest_clip(cmd)
    got, vads = golden.stream_detections(head, clip, golden.make_decision(dec))
    if [l for _, l, _ in got] != [cmd]:
        raise SystemExit(f"custom_bundle.py: the head does not pass its own self-test: {cmd!r} in "
                         f"{golden.SELFTEST_VOICE} gave detections {got}, expected exactly one {cmd!r}")
    said, margin = verdict(a.verifier, vj, clip, got[0][0], vads)
    if said != cmd:
        raise SystemExit(f"custom_bundle.py: the verifier does not pass the self-test: {cmd!r} in "
                         f"{golden.SELFTEST_VOICE} was verified as {said!r} (best command by {margin:.1f} nats over "
                         f"none, theta {vj['theta']}); was it fine-tuned on these commands (verifier_train.py)?")
    st = f"selftest_{cmd.replace(' ', '_').replace(chr(39), '')}.raw"
    (out / st).write_bytes(clip.astype("<i2").tobytes())
    golden.write_bundle(dec, out / "bundle.toml", name=a.name, version=a.version, selftest=(st, cmd), development=not a.production,
                        generator="models/reference/recipe/custom_bundle.py (scripts/train-commands)")
    print(f"{out / 'bundle.toml'}: {len(C.COMMANDS)} commands, self-test {st} ({cmd!r} triggered at frame {got[0][0]}, "
          f"verified by {margin:.1f} nats)")


if __name__ == "__main__":
    main()
