"""Streams each hold-out test clip of scripts/make-clips (.outpost/clips/clips.tsv) through the
literal streaming pipeline (fresh stream, clip zero-padded to whole frames + 13 silent frames,
as hil-tests' clip_frames) and the decision logic at the operating point of
training_report.json (including its per-label thresholds, if any). A clip counts as recognised
when its first detection has its label.

  python check_clips.py [HEAD.onnx] [T K R V H]
"""
import json
import os
import sys

import numpy as np

import common as C

TAIL = 13


def operating_point(argv=()):
    """(T, K, R, V, H, label_thresholds): from argv[2:7] (a script's `HEAD T K R V H` arguments,
    no per-label thresholds) when given, else the decision of training_report.json."""
    if len(argv) > 6:
        return float(argv[2]), int(argv[3]), int(argv[4]), float(argv[5]), int(argv[6]), {}
    d = json.loads((C.REF / "training_report.json").read_text())["decision"]
    lt = {C.LABELS.index(l): t for l, t in d.get("label_thresholds", [])}
    return d["threshold"], d["smoothing_frames"], d["refractory_ms"], d["vad_threshold"], d["vad_hangover_ms"], lt


def head_and_point(ap, argv=None):
    """The checks' common arguments `[HEAD.onnx [T K R V H]]`: adds them to ArgumentParser ap,
    parses argv (None: sys.argv) and returns (args, head path, (T, K, R, V, H)), by default the
    shipped command_head.onnx at training_report.json's point. A usage error when the head is not
    a file or the point is not five values after a head; SystemExit when the report's point has per-command thresholds, which
    these checks' single-threshold decision does not apply."""
    ap.add_argument("head", nargs="?", help="head ONNX (default: the shipped command_head.onnx)")
    ap.add_argument("point", nargs="*", metavar="T K R V H", help="decision point (default: training_report.json)")
    args = ap.parse_args(argv)
    if args.head is not None and not os.path.isfile(args.head):
        ap.error(f"no head model at {args.head} (expected HEAD.onnx [T K R V H])")
    if args.point and (args.head is None or len(args.point) != 5):
        ap.error("the decision point is five values after the head: T K R V H")
    head = args.head or str(C.REF / "command_head.onnx")
    T, K, R, V, H, lt = operating_point([None, head, *args.point])
    if lt:
        raise SystemExit("per-command thresholds are not supported by this check: give the point as HEAD.onnx T K R V H")
    return args, head, (T, K, R, V, H)


def stream_clip(x, head, op, label=None):
    """Streams int16 clip x (zero-padded to whole frames + TAIL silent frames) through a fresh
    pipeline and the decision at op = (T, K, R, V, H, label_thresholds).
    Returns (detected labels in order, max score of `label` or 0.0)."""
    T, K, R, V, H, lt = op
    x = np.concatenate([x, np.zeros((-len(x)) % C.FRAME + TAIL * C.FRAME, np.int16)])
    p = C.StreamingPipeline(head)
    dec = C.Decision(T, K, R, V, H, label_thresholds=lt)
    dets, peak = [], 0.0
    for k in range(len(x) // C.FRAME):
        _, sc, v = p.push(x[k * C.FRAME:(k + 1) * C.FRAME])
        if label is not None:
            peak = max(peak, float(sc[C.LABELS.index(label)]))
        r = dec.push(sc, v)
        if r:
            dets.append(C.LABELS[r[0]])
    return dets, peak


def main():
    head = sys.argv[1] if len(sys.argv) > 1 else str(C.REF / "command_head.onnx")
    op = operating_point(sys.argv)
    T, K, R, V, H, lt = op
    tsv = os.environ.get("OUTPOST_CLIPS", str(C.REPO / ".outpost" / "clips")) + "/clips.tsv"
    ok, by_voice = 0, {}
    rows = [l.rstrip("\n").split("\t") for l in open(tsv) if l.strip()]
    for path, label, voice in rows:
        dets, peak = stream_clip(C.read_wav(path), head, op, label)
        good = bool(dets) and dets[0] == label
        ok += good
        by_voice.setdefault(voice, [0, 0])
        by_voice[voice][0] += good
        by_voice[voice][1] += 1
        print(f"{'ok  ' if good else 'FAIL'} {voice:22s} {label:16s} detections={dets} max score of label={peak:.3f}")
    print(f"recognised {ok}/{len(rows)} at T={T} K={K} R={R} V={V} H={H}" + (f" label thresholds {lt}" if lt else "") + ";",
          ", ".join(f"{v}: {a}/{b}" for v, (a, b) in by_voice.items()))


if __name__ == "__main__":
    main()
