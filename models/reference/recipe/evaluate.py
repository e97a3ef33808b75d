"""Streaming evaluation through the full frame pipeline (StreamingPipeline: per-frame mel on
the last 1760 samples, embedding, head, silero VAD with carried state) and the decision logic.

Held-out voices only (split "val": held-out espeak-ng languages/variants, flite slt, all of
festival; split "demo": the holdout_voices.txt voices).

1. Per condition (clean, 20, 10, 5 dB SNR) the utterances are concatenated into long streams
   with 1.2-2.2 s gaps, noise is added over the whole stream, and every frame's head scores and
   VAD probability are recorded (CACHE/eval/*.npz).
2. Negative speech streams (held-out voices, random sentences, near-miss words) for false
   accepts per hour, clean and at 10 dB.
3. Decision parameters are swept on the recorded scores (the decision logic is cheap); the
   operating point is chosen to satisfy FA/h <= 0.5 and maximise the accuracy (see report).
"""
import hashlib
import itertools
import json
import os
import time

import numpy as np

import augment as A
import common as C

CONDITIONS = [("clean", None), ("snr20", 20.0), ("snr10", 10.0), ("snr5", 5.0)]
NOISE_CYCLE = ["pink", "babble", "white", "brown", "tones", "hum", "babble", "pink"]
ASSIGN_AFTER_S = 1.1     # a detection belongs to an utterance if it falls in [start, end + this]


def seed_of(*parts):
    return int(hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def build_stream(clips, labels, rng, bank, snr, gap=(1.2, 2.2), noise_kind=None, gain_db=0.0):
    """Concatenate clips (int16 clean) with gaps; returns int16 stream and utterance list.
    gain_db (dB, <= 0) scales every utterance after its random level: a quieter talker into the
    same ADC, so the noise keeps its SNR to the speech and the clean floor stays 1 LSB."""
    parts, utts, pos = [], [], 0
    lead = int(rng.uniform(0.5, 1.0) * C.SR) + int(rng.integers(0, C.FRAME))
    parts.append(np.zeros(lead, np.float32))
    pos = lead
    for x, lab in zip(clips, labels):
        x = x.astype(np.float32)
        s, e = A.speech_bounds(x)
        x = x[s:e] * 10 ** ((rng.uniform(-14, 0) + gain_db) / 20)   # level varies per utterance
        parts.append(x)
        utts.append((pos, pos + len(x), lab))
        pos += len(x)
        g = int(rng.uniform(*gap) * C.SR)
        parts.append(np.zeros(g, np.float32))
        pos += g
    y = np.concatenate(parts)
    y = np.concatenate([y, np.zeros((-len(y)) % C.FRAME, np.float32)])
    sp = np.concatenate([y[s:e] for s, e, _ in utts])
    p_speech = np.mean(sp.astype(np.float64) ** 2)
    if snr is None:
        y = y + rng.normal(0, 1.0, len(y))        # "clean": 1 LSB noise floor (a real ADC), no added noise
    else:
        nz, kind = bank.noise(rng, len(y), noise_kind)
        y = y + nz * np.sqrt(p_speech / 10 ** (snr / 10))
    peak = np.abs(y).max()
    if peak > 32000:
        y *= 32000 / peak
    return np.clip(np.round(y), -32768, 32767).astype(np.int16), utts


def run_stream(audio, head, embs_out=None):
    p = C.StreamingPipeline(head)
    n = len(audio) // C.FRAME
    scores = np.zeros((n, len(C.LABELS)), np.float32)
    vad = np.zeros(n, np.float32)
    embs = np.zeros((n, C.EMB_DIM), np.float32)
    for k in range(n):
        e, sc, v = p.push(audio[k * C.FRAME:(k + 1) * C.FRAME])
        scores[k], vad[k], embs[k] = sc, v, e
    if embs_out is not None:
        embs_out.append(embs)
    return scores, vad


def utterance_at(k, utts):
    """Index of the utterance a detection at frame k is credited to: the latest one that started
    before the end of frame k's audio (utts: [(start, end, label)] in samples, in stream order),
    or None before the first. Used to name the negative text behind each false accept."""
    j = int(np.searchsorted([u[0] for u in utts], C.frame_audio_end(k), side="right")) - 1
    return j if j >= 0 else None


def thresholds(T):
    """T: one threshold for every command, or a sequence of C.NONE per-command thresholds."""
    return np.broadcast_to(np.asarray(T, np.float64), (C.NONE,))


def decide(scores, vad, T, K, R, V, H):
    if np.ndim(T):
        d = C.Decision(max(T), K, R, V, H, label_thresholds={i: float(t) for i, t in enumerate(T)})
    else:
        d = C.Decision(T, K, R, V, H)
    dets = []
    for k in range(len(scores)):
        r = d.push(scores[k], vad[k])
        if r:
            dets.append((k, r[0], r[1]))
    return dets


def decide_fast(scores, vad, T, K, R, V, H):
    """Same result as C.Decision (checked in report.py), vectorised: only frames where a
    detection is possible are visited. T: one threshold or C.NONE per-command thresholds."""
    n = len(scores)
    if n == 0:
        return []
    cs = np.cumsum(np.vstack([np.zeros((1, C.NONE)), scores[:, :C.NONE].astype(np.float64)]), axis=0)
    k = np.arange(n)
    lo = np.maximum(0, k - K + 1)
    s = (cs[k + 1] - cs[lo]) / (k + 1 - lo)[:, None]
    nh = max(1, H // 80 + 1)
    vp = np.concatenate([np.full(nh - 1, -1.0), vad])
    vr = np.lib.stride_tricks.sliding_window_view(vp, nh).max(1) >= V
    c = s.argmax(1)
    smax = s[k, c]
    thr = thresholds(T)                                     # per-command thresholds (T may be one number)
    above = smax >= thr[c]                                  # the argmax command reaches its threshold
    below = (s < thr[None, :]).all(1)                       # every command below its threshold (re-arm)
    nb = np.where(below, k, n)
    next_below = np.minimum.accumulate(nb[::-1])[::-1]     # first j >= i with every s[j, c] < thr[c]
    armed_from, t_last, dets = 0, None, []
    for i in np.nonzero(above & vr)[0]:
        if i >= armed_from and (t_last is None or i * 80 - t_last >= R):
            dets.append((int(i), int(c[i]), float(smax[i])))
            t_last = i * 80
            armed_from = next_below[i + 1] + 1 if i + 1 < n else n + 1
    return dets


def score_utts(dets, utts, n_frames):
    """Per utterance: first detection in [start, end + ASSIGN_AFTER_S] -> label or miss.
    Detections outside every utterance window or extra ones inside count as false accepts."""
    res = []
    used = set()
    for (s, e, lab) in utts:
        lo, hi = s // C.FRAME, (e + int(ASSIGN_AFTER_S * C.SR)) // C.FRAME
        ds = [d for d in dets if lo <= d[0] <= hi]
        for d in ds:
            used.add(d[0])
        first = ds[0][1] if ds else None
        lat = (ds[0][0] * C.FRAME + C.FRAME - e) / C.SR if ds else None
        res.append((lab, first, len(ds), lat))
    extra = [d for d in dets if d[0] not in used]
    return res, extra


def load_clips(split_filter):
    jobs = json.loads((C.CACHE / "tts_manifest.json").read_text())
    out = []
    for j in jobs:
        if split_filter(j):
            out.append((j, C.read_wav(C.CACHE / "tts" / f"{j['key']}.wav")))
    return out


def record_streams(pos, neg, head, bank, tags, label_of, meta_of, text_of, emb_rec=None, log=None, gain_db=0.0):
    """Streams of the evaluation protocol, run through the literal pipeline with `head`.

    pos, neg: command and negative items (anything holding a clip: item[1] is int16 16 kHz audio);
    label_of / meta_of / text_of read an item's label, metadata tuple and text. For each of
    CONDITIONS the command items go in a seeded order (tags[0]) into streams of 40 utterances,
    noise kinds in NOISE_CYCLE turn; the negatives (order seeded by tags[1]) into clean and
    10 dB streams of 60 utterances with 0.2-1.2 s gaps. bank: NoiseBank of the babble noise.
    emb_rec: dict that receives each condition's per-frame embeddings (rescore.py).
    gain_db: level of every utterance relative to the protocol's (build_stream; 0 = the protocol).
    Returns recs {condition: (scores, vad, utterances, meta)} and negrec {condition: (scores,
    vad, utterances, texts)}, per stream.
    """
    def streams(items, order, size, rng, snr, sink, label_of, info_of, **kw):
        """items in `order`, `size` per stream (noise kinds of NOISE_CYCLE in turn):
        (scores, vad, utterances, [info_of(item) per utterance]) per stream."""
        out = ([], [], [], [])
        for ci, i0 in enumerate(range(0, len(order), size)):
            ch = order[i0:i0 + size]
            audio, utts = build_stream([items[i][1] for i in ch], [label_of(items[i]) for i in ch], rng, bank, snr,
                                       noise_kind=NOISE_CYCLE[ci % len(NOISE_CYCLE)], **kw)
            sc, vd = run_stream(audio, head, sink)
            for lst, v in zip(out, (sc, vd, utts, [info_of(items[i]) for i in ch])):
                lst.append(v)
        return out

    recs = {}
    for cname, snr in CONDITIONS:
        rng = np.random.default_rng(seed_of(tags[0], cname))
        order = rng.permutation(len(pos))
        sink = emb_rec.setdefault(cname, []) if emb_rec is not None else None
        recs[cname] = streams(pos, order, 40, rng, snr, sink, label_of, meta_of, gain_db=gain_db)
        if log:
            log(f"eval {cname}: {len(pos)} utterances, {sum(len(s) for s in recs[cname][0])} frames")
    negrec = {}
    for cname, snr in [("clean", None), ("snr10", 10.0)]:
        rng = np.random.default_rng(seed_of(tags[1], cname))
        rng.permutation(len(neg))          # a draw the first version made; kept so the streams stay the same
        order = rng.permutation(len(neg))
        sink = emb_rec.setdefault("neg_" + cname, []) if emb_rec is not None else None
        negrec[cname] = streams(neg, order, 60, rng, snr, sink, lambda it: C.NONE, text_of, gap=(0.2, 1.2),
                                gain_db=gain_db)
        if log:
            log(f"eval negatives {cname}: {sum(len(s) for s in negrec[cname][0]) * 0.08 / 3600:.2f} h")
    return recs, negrec


def record(head):
    d = C.CACHE / "eval"
    d.mkdir(parents=True, exist_ok=True)
    pos = load_clips(lambda j: j["split"] in ("val", "demo") and j["label"] != C.NONE)
    neg = load_clips(lambda j: j["split"] == "val" and j["label"] == C.NONE)
    frac = float(os.environ.get("OUTPOST_EVAL_FRACTION", "1"))   # < 1: quick look (not for the report)
    if frac < 1:
        pos, neg = pos[::int(round(1 / frac))], neg[::int(round(1 / frac))]
    bank = A.NoiseBank.of_speech([x for _, x in neg[::3]])
    t0 = time.time()
    emb_rec = {}      # per-frame embeddings of every stream (head-independent; see rescore.py)
    recs, negrec = record_streams(
        pos, neg, head, bank, ("eval", "evalneg"), lambda it: it[0]["label"],
        lambda it: (it[0]["split"], it[0]["engine"], it[0]["voice"], it[0]["text"]), lambda it: it[0]["text"],
        emb_rec, lambda msg: print(f"{msg}, {time.time() - t0:.0f}s", flush=True))
    import pickle
    with open(d / "embeddings.pkl", "wb") as f:
        pickle.dump(emb_rec, f)
    return recs, negrec


def evaluate(recs, negrec, params):
    T, K, R, V, H = params
    out = {}
    for cname, (scs, vds, utts, meta) in recs.items():
        rows, extras, frames = [], 0, 0
        for sc, vd, ut, me in zip(scs, vds, utts, meta):
            dets = decide_fast(sc, vd, T, K, R, V, H)
            res, extra = score_utts(dets, ut, len(sc))
            rows += [r + m for r, m in zip(res, me)]
            extras += len(extra)
            frames += len(sc)
        out[cname] = (rows, extras, frames)
    fa = {}
    for cname, v in negrec.items():
        scs, vds = v[0], v[1]
        n = sum(len(decide_fast(sc, vd, T, K, R, V, H)) for sc, vd in zip(scs, vds))
        hours = sum(len(s) for s in scs) * 0.08 / 3600
        fa[cname] = (n, hours)
    return out, fa


def per_noise(recs, params):
    """Accuracy by noise kind: {condition: {kind: [correct, n]}} for the noisy conditions at params
    (T, K, R, V, H). A stream's kind is NOISE_CYCLE[i % len(NOISE_CYCLE)] for the i-th stream of its
    condition, as record_streams builds them, so recs must be whole (not report.subset's halves).
    Each kind's streams are scored by evaluate(), as the report's totals are."""
    out = {}
    for cname, snr in CONDITIONS:
        if snr is None:
            continue
        v = recs[cname]
        out[cname] = {}
        for kind in dict.fromkeys(NOISE_CYCLE):
            idx = [i for i in range(len(v[0])) if NOISE_CYCLE[i % len(NOISE_CYCLE)] == kind]
            rows = evaluate({cname: tuple([x[i] for i in idx] for x in v)}, {}, params)[0][cname][0]
            out[cname][kind] = [sum(r[1] == r[0] for r in rows), len(rows)]
    return out


def per_noise_table(pn):
    """Markdown table of per_noise's result: a row per noise kind, a column per noisy condition."""
    conds = list(pn)
    L = ["| noise | " + " | ".join(conds) + " |", "|---|" + "---|" * len(conds)]
    for kind in next(iter(pn.values())):
        n = pn[conds[0]][kind][1]
        L.append(f"| {kind} (n={n}) | " + " | ".join(f"{100 * pn[c][kind][0] / max(1, pn[c][kind][1]):.1f} %" for c in conds) + " |")
    return "\n".join(L)


def accuracy_table(out, title, groups, cell):
    """Markdown lines of a table of accuracy per group (rows) and condition of evaluate()'s out
    (columns, CONDITIONS' order). groups: [(row name, keep)], keep(row) -> bool over out's rows
    ((label, detected, detections, latency) + the item's meta tuple of record_streams); cell(accuracy
    in %, n) -> the cell's text, called with (None, 0) for a group without rows."""
    L = [f"| {title} | " + " | ".join(c for c, _ in CONDITIONS) + " |", "|---|" + "---|" * len(CONDITIONS)]
    for name, keep in groups:
        cells = []
        for cname, _ in CONDITIONS:
            sel = [r for r in out[cname][0] if keep(r)]
            cells.append(cell(100 * np.mean([r[1] == r[0] for r in sel]) if sel else None, len(sel)))
        L.append(f"| {name} | " + " | ".join(cells) + " |")
    return L


def summarize(out, fa):
    s = {}
    for cname, (rows, extras, frames) in out.items():
        acc = np.mean([r[1] == r[0] for r in rows])
        s[cname] = dict(accuracy=float(acc), n=len(rows), extra_detections=int(extras))
    tot = sum(v[0] for v in fa.values())
    hrs = sum(v[1] for v in fa.values())
    s["fa_per_hour"] = tot / hrs
    s["fa"] = {k: dict(false_accepts=v[0], hours=v[1]) for k, v in fa.items()}
    return s


def sweep(recs, negrec):
    grid = []
    for T, K, R, V, H in itertools.product([0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95], [1, 2, 3, 4], [1000],
                                           [0.3, 0.5], [400, 800]):
        out, fa = evaluate(recs, negrec, (T, K, R, V, H))
        sm = summarize(out, fa)
        grid.append(((T, K, R, V, H), sm))
    return grid


def main():
    head = os.environ.get("OUTPOST_HEAD", str(C.REF / "command_head.onnx"))
    recs, negrec = record(head)
    import pickle
    with open(C.CACHE / "eval" / "recorded.pkl", "wb") as f:
        pickle.dump((recs, negrec), f)


if __name__ == "__main__":
    main()
