"""Re-decides stream_check.py's last run offline, to size the verifier's decision rule without
streaming again: every verification the daemon made is scored again in Python from the streamed
WAVs (CACHE/stream_check), all 13 labels, then the verdicts at the end of the utterance are
replayed under other values of `theta` (margin over `none`, nats) and of the command gap
(margin over the next best command, nats; outpostd --command-gap). --decoys also scores the
decoys of decoys.py (phrases one sound away from a command) in the same decoder call and
replays a rule that takes the best of `none` and the decoys as the competitor a command must
beat by theta, beside the bundle's rule.

Windows: 3 s of the stream ending with frame end_seq (the verification at the end of the
utterance, or the early one when it answered) and, when the trigger frame did not end the
utterance, with the trigger frame (the early verification). The early rule stays the run's
(theta + 2 nats over `none`, 4 over every other command): an early verdict that answered in the
run is replayed as a verdict of its window, so final rules stricter than it (theta above
theta + 2, a gap above 4) are refused. When the end of the utterance names no command, the early
window's command above theta and clear of every other command by --fallback-gap nats is the verdict
(outpostd's early fallback; --no-fallback replays without it). Triggers are those of the run: a rule that would have
answered a trigger differently cannot make stage 1 fire elsewhere. The replay prints how many of
the run's margins it reproduces (the daemon's ring holds only frames that ran, so a frame
refused in the run's fast pass moves a window).

  python stream_replay.py [--verifier DIR] [--theta 2,1.5] [--gap 0,0.5,1,2] [--fallback-gap 4]
                          [--no-fallback] [--decoys]
--verifier: the ONNX directory the bundle was built from (`outpost-provision build
--verifier DIR`; default .outpost/verifier, scripts/setup's). Scores are cached in
CACHE/stream_check/replay_scores.json for the raw.json, verifier and decoys they came from.
Runs in .venv-verifier; ~15 min on 2 cores for a full run's ~3 400 windows, ~20 with --decoys
(~120 more decoder rows).
"""
import argparse
import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

import common as C
import stream_check as SC
import verifier_check as VC

EARLY_MARGIN, EARLY_GAP = 2.0, 4.0      # outpostd's --early-verify-margin, --early-command-gap
FALLBACK_GAP = 4.0                      # outpostd's --early-fallback-gap


def window(audio, end_seq, n):
    """The n samples of `audio` that end with 80 ms frame end_seq, zeros before the stream's
    start: the daemon's ring of processed audio when that frame has run."""
    e = (end_seq + 1) * C.FRAME
    w = audio[max(0, e - n):e]
    return np.concatenate([np.zeros(n - len(w), np.float32), w])


class Scorer:
    """The verifier.json graphs of one export, scoring a 3 s window as the runtime does
    (prompt + candidate + <|endoftext|> per label, one decoder call); `extra` token sequences
    (decoys) are scored in the same call after the labels."""

    def __init__(self, d, extra=()):
        cfg = json.loads((d / "verifier.json").read_text())
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
        self.s = {k: ort.InferenceSession(str(d / cfg[k]["file"]), so, providers=["CPUExecutionProvider"])
                  for k in ("mel", "encoder", "decoder")}
        self.labels, self.theta, self.win = cfg["labels"], cfg["theta"], cfg["window_samples"]
        pr, eot = cfg["prompt"], cfg["eot"]
        full = [pr + c + [eot] for c in cfg["candidates"] + list(extra)]
        n = max(len(f) for f in full) - 1
        self.tokens = np.full((len(full), n), eot, np.int64)
        self.targets = self.tokens.copy()
        self.mask = np.zeros((len(full), n), np.float32)
        for i, f in enumerate(full):
            self.tokens[i, :len(f) - 1], self.targets[i, :len(f) - 1] = f[:-1], f[1:]
            self.mask[i, len(pr) - 1:len(f) - 1] = 1

    def __call__(self, audio, end_seq):
        """Scores (nats; labels in order, then the extra sequences) of the window ending with
        frame end_seq of `audio`."""
        return self.score(window(audio, end_seq, self.win))

    def score(self, w):
        """Scores (as __call__'s) of one window w, float32 [window_samples] in [-1, 1)."""
        mel = self.s["mel"].run(None, {"audio": w[None]})[0]
        enc = self.s["encoder"].run(None, {"log_mel": mel})[0]
        sc = self.s["decoder"].run(None, {"encoder_states": enc, "tokens": self.tokens,
                                          "targets": self.targets, "mask": self.mask})[0]
        return [float(x) for x in np.asarray(sc).reshape(-1)]


def score_events(scorer, wav, events):
    """The run's verified triggers of one stream with their windows' scores."""
    a = C.read_wav(wav).astype(np.float32) / 32768
    out = []
    for e in sorted(events, key=lambda e: e["seq"]):
        if "end_seq" not in e:          # refused / failed in the run: nothing to replay
            continue
        d = {k: e[k] for k in ("type", "seq", "end_seq", "margin_nats") if k in e}
        d["final"] = scorer(a, e["end_seq"])
        if e["seq"] != e["end_seq"]:
            d["early"] = scorer(a, e["seq"])
        out.append(d)
    return out


def score_run(scorer, raw):
    clips = []
    for (cond, (path, label, voice)), (events, _summary, _extra) in zip(raw["jobs"], raw["accuracy"]):
        if label == "none":
            continue
        wav = SC.WORK / "clips" / VC.safe(cond) / VC.safe(SC.clip_name(path))
        clips.append(dict(cond=cond, label=label, voice=voice, events=score_events(scorer, wav, events)))
    negs = []
    for name, streams in raw["negative_streams"].items():
        for stream, res in zip(streams, raw["negative_results"][name]):
            negs.append(dict(set=name, events=score_events(scorer, stream[0], res[0])))
    return dict(clips=clips, negs=negs)


def margins(s, n, decoys=False):
    """(best command's index, its margin over the competitor, its gap over the next command),
    nats, of one window's scores s: n labels in order (`none` last), then any decoys. The
    competitor is `none`, or with decoys=True the best of `none` and the decoys."""
    s = np.asarray(s)
    order = np.argsort(-s[:n - 1])
    other = max(s[n - 1], s[n:].max()) if decoys and len(s) > n else s[n - 1]
    return int(order[0]), float(s[order[0]] - other), float(s[order[0]] - s[order[1]])


def verdict(e, labels, theta, gap, decoys=True, fallback=FALLBACK_GAP):
    """The command a trigger's verifications name under the rule, or None. Scores hold the
    labels (`none` last) and then the decoys; decoys=False ignores them. fallback: the early
    fallback's command gap (nats), None for none."""
    n = len(labels)
    if "early" in e:
        b, m, g = margins(e["early"], n, decoys)
        if m >= theta + EARLY_MARGIN and g >= EARLY_GAP:
            return labels[b]
    b, m, g = margins(e["final"], n, decoys)
    if m >= theta and g >= gap:
        return labels[b]
    if "early" in e and fallback is not None:
        b, m, g = margins(e["early"], n, decoys)
        if m >= theta and g >= fallback:
            return labels[b]
    return None


def replay(sc, labels, theta, gap, decoys=True, fallback=FALLBACK_GAP):
    acc = defaultdict(Counter)
    for c in sc["clips"]:
        r = acc[c["cond"]]
        r["n"] += 1
        for e in c["events"]:
            v = verdict(e, labels, theta, gap, decoys, fallback)
            if v is not None:
                r["right" if v == c["label"] else "wrong"] += 1
                break
    fa = Counter({n["set"]: 0 for n in sc["negs"]})
    for n in sc["negs"]:
        fa[n["set"]] += sum(verdict(e, labels, theta, gap, decoys, fallback) is not None for e in n["events"])
    return acc, fa


def fidelity(sc, n):
    """Events whose replayed margin (of the window that answered: the end of the utterance's, or
    the early one's for an early fallback) is the run's, within 0.01 nats (n labels, `none`
    last; decoys after them do not count)."""
    same = total = 0
    for e in (e for x in sc["clips"] + sc["negs"] for e in x["events"]):
        total += 1
        same += any(abs(float(s[:n - 1].max() - s[n - 1]) - e["margin_nats"]) < 0.01
                    for s in (np.asarray(e[w]) for w in ("final", "early") if w in e))
    return same, total


def floats(s):
    return [float(x) for x in s.split(",")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--verifier", default=str(C.REPO / ".outpost" / "verifier"))
    ap.add_argument("--raw", default=str(SC.WORK / "raw.json"))
    ap.add_argument("--theta", type=floats, default=None, help="values of theta (default: the bundle's)")
    ap.add_argument("--gap", type=floats, default=[0.0, 0.5, 1.0, 2.0])
    ap.add_argument("--fallback-gap", type=float, default=FALLBACK_GAP, help="the early fallback's command gap (nats)")
    ap.add_argument("--no-fallback", action="store_true", help="replay without the early fallback")
    ap.add_argument("--decoys", action="store_true", help="score decoys.py's decoys too and replay with them")
    a = ap.parse_args()
    vdir, raw_path = Path(a.verifier), Path(a.raw)
    extra = []
    if a.decoys:
        import decoys as D
        import whisper_ct2
        tok = whisper_ct2.WhisperCT2().tokenizer()
        phrases = [d for _, d in D.decoys(C.COMMANDS)]
        extra = [tok.encode(D.caption(d), add_special_tokens=False).ids for d in phrases]
    key = hashlib.sha256(raw_path.read_bytes() + (vdir / "verifier.json").read_bytes()
                         + (vdir / "whisper_decoder.onnx").read_bytes() + json.dumps(extra).encode()).hexdigest()
    cache = SC.WORK / "replay_scores.json"
    scorer = Scorer(vdir, extra)
    sc = None
    if cache.exists():
        c = json.loads(cache.read_text())
        sc = c["scores"] if c.get("key") == key else None
    if sc is None:
        sc = score_run(scorer, json.loads(raw_path.read_text()))
        cache.write_text(json.dumps(dict(key=key, scores=sc)))
    n = len(scorer.labels)
    same, total = fidelity(sc, n)
    print(f"replay of {raw_path} with {vdir}: {same} of {total} margins as in the run (within 0.01 nats)")
    conds = list(dict.fromkeys(c["cond"] for c in sc["clips"]))
    print("| decoys | theta | gap | " + " | ".join(conds) + " | right / wrong, all | false accepts |")
    print("|---" * (len(conds) + 5) + "|")
    for decoys in ([False, True] if extra else [False]):
        for theta in a.theta or [scorer.theta]:
            for gap in a.gap:
                if theta > scorer.theta + EARLY_MARGIN or gap > EARLY_GAP:
                    raise SystemExit(f"theta {theta} / gap {gap}: stricter than the early rule, not replayable")
                acc, fa = replay(sc, scorer.labels, theta, gap, decoys, None if a.no_fallback else a.fallback_gap)
                cells = [f"{100 * acc[c]['right'] / acc[c]['n']:.1f} / {100 * acc[c]['wrong'] / acc[c]['n']:.1f}"
                         for c in conds]
                right, wrong = sum(acc[c]["right"] for c in conds), sum(acc[c]["wrong"] for c in conds)
                print(f"| {'yes' if decoys else 'no'} | {theta:g} | {gap:g} | " + " | ".join(cells)
                      + f" | {right} / {wrong} | " + ", ".join(f"{k} {v}" for k, v in fa.items()) + " |")


if __name__ == "__main__":
    main()
