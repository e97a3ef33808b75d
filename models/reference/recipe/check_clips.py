"""Streams each hold-out test clip of scripts/make-clips (.outpost/clips/clips.tsv) through the
literal streaming pipeline (fresh stream, clip zero-padded to whole frames + 13 silent frames,
as hil-tests' clip_frames) and the decision logic at the operating point of
training_report.json (including its per-label thresholds, if any). A clip counts as recognised
when its first detection has its label.

  python check_clips.py [HEAD.onnx] [T K R V H]
"""
import argparse
import json
import os

import numpy as np

import common as C

TAIL = 13


def report_point():
    """(T, K, R, V, H, label_thresholds) of training_report.json's decision; label_thresholds:
    {label index: threshold} (empty when the report adopted none)."""
    d = json.loads((C.REF / "training_report.json").read_text())["decision"]
    lt = {C.LABELS.index(l): t for l, t in d.get("label_thresholds", [])}
    return d["threshold"], d["smoothing_frames"], d["refractory_ms"], d["vad_threshold"], d["vad_hangover_ms"], lt


def add_head_and_point(ap):
    """Adds the checks' common positional arguments `[HEAD.onnx [T K R V H]]` to ArgumentParser ap."""
    ap.add_argument("head", nargs="?", help="head ONNX (default: the shipped command_head.onnx)")
    ap.add_argument("point", nargs="*", metavar="T K R V H",
                    help="decision point: threshold (score, 0-1), smoothing (80 ms frames), refractory (ms), "
                         "VAD threshold (probability), VAD hang-over (ms); default: training_report.json's")


def head_and_point(ap, args, label_thresholds=False):
    """(head path, (T, K, R, V, H[, label_thresholds])) of arguments parsed with add_head_and_point:
    the head as given (relative to the working directory) or the shipped command_head.onnx, and the
    point as given or training_report.json's (report_point). T: score threshold in [0, 1]; K:
    smoothing in 80 ms frames; R: refractory period in ms; V: VAD probability threshold; H: VAD
    hang-over in ms. With label_thresholds the tuple ends with {label index: threshold}; without
    it, a report point with per-command thresholds is a SystemExit (the caller's decision has one
    threshold). A head that is not a file, a point that is not five numbers after a head, or a
    value of the wrong type is a usage error (ap.error)."""
    if args.head is not None and not os.path.isfile(args.head):
        ap.error(f"no head model at {args.head} (expected HEAD.onnx [T K R V H])")
    if args.point and (args.head is None or len(args.point) != 5):
        ap.error("the decision point is five values after the head: T K R V H")
    head = args.head or str(C.REF / "command_head.onnx")
    if args.point:
        try:
            point = tuple(f(v) for f, v in zip((float, int, int, float, int), args.point)) + ({},)
        except ValueError:
            ap.error(f"decision point {' '.join(args.point)}: expected T (number) K R (integers) V (number) "
                     "H (integer)")
    else:
        point = report_point()
    if point[5] and not label_thresholds:
        raise SystemExit("per-command thresholds are not supported by this check: give the point as HEAD.onnx T K R V H")
    return head, point if label_thresholds else point[:5]


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
    ap = argparse.ArgumentParser(description="Streams the hold-out test clips of scripts/make-clips through the pipeline.")
    add_head_and_point(ap)
    head, op = head_and_point(ap, ap.parse_args(), label_thresholds=True)
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
