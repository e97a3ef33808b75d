"""Build augmented training/validation streams and compute their embeddings exactly as the
runtime does (per-frame mel on the last 1760 samples, embedding of the last 76 mel frames,
stream pre-filled with digital silence).

A stream is a sequence of 4-9 utterances (commands and negative speech from one split, each
with its own sox augmentation and level) separated by random gaps of 0.15-2.5 s, with one noise
type at one SNR over the whole stream: the head always sees realistic context (preceding
speech, other commands, noise) in its 2 s window, and utterances start at arbitrary sample
offsets relative to the 80 ms frames. Plus noise-only streams.

Output: CACHE/features_<split>.npz (embeddings of all streams concatenated, offsets, and the
segment list (stream, label, start, end) used for labelling in train.py).
"""
import hashlib
import json
import os
import sys
import time

import numpy as np

import augment as A
import common as C

AUG_VERSION = "v2"
N_AUG = {"pos": int(os.environ.get("OUTPOST_N_AUG_POS", "2")),
         "neg": int(os.environ.get("OUTPOST_N_AUG_NEG", "1"))}
N_NOISE_ONLY = {"train": 400, "val": 60}
PARTIAL = os.environ.get("OUTPOST_PARTIAL") == "1"   # only use already-cached streams (quick first head)


def seed_of(*parts):
    return int(hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def load_manifest():
    return json.loads((C.CACHE / "tts_manifest.json").read_text())


def babble_pool(jobs, split, n=300):
    rng = np.random.default_rng(seed_of("babble", split))
    neg = [j for j in jobs if j["split"] == split and j["label"] == C.NONE]
    pick = rng.choice(len(neg), size=min(n, len(neg)), replace=False)
    out = []
    for i in pick:
        x = C.read_wav(C.CACHE / "tts" / f"{neg[i]['key']}.wav").astype(np.float32)
        s, e = A.speech_bounds(x)
        out.append(x[s:e])
    return out


def utterance(job, aug):
    """Clean (sox-augmented for aug > 0) utterance trimmed to its speech + a little margin."""
    rng = np.random.default_rng(seed_of(job["key"], aug, AUG_VERSION))
    x = C.read_wav(C.CACHE / "tts" / f"{job['key']}.wav").astype(np.float32)
    if aug > 0:
        x = A.sox(x, A.random_effects(rng))
    s, e = A.speech_bounds(x)
    s0, e0 = max(0, s - 800), min(len(x), e + 1600)     # keep reverb tails / soft edges
    return x[s0:e0], (s - s0, e - s0)


def compose(utts, labels, rng, bank):
    """utts: list of (audio, (s, e)). Returns int16 stream, segments [(label, start, end)]."""
    parts = [np.zeros(int(rng.uniform(0.1, 1.5) * C.SR), np.float32)]
    pos = len(parts[0])
    segs = []
    for (x, (s, e)), lab in zip(utts, labels):
        g = 10 ** (rng.uniform(-10, 0) / 20)
        parts.append(x * g)
        segs.append((lab, pos + s, pos + e))
        pos += len(x)
        gap = int(np.exp(rng.uniform(np.log(0.15), np.log(2.5))) * C.SR)
        parts.append(np.zeros(gap, np.float32))
        pos += gap
    parts.append(np.zeros(C.FRAME * 10, np.float32))
    y = np.concatenate(parts)
    y = np.concatenate([y, np.zeros((-len(y)) % C.FRAME, np.float32)])
    sp = np.concatenate([y[s:e] for _, s, e in segs])
    p_speech = np.mean(sp.astype(np.float64) ** 2) + 1e-9
    r = rng.random()
    if r < 0.7:
        nz, _ = bank.noise(rng, len(y))
        snr = rng.uniform(-2, 30)
        y = y + nz * np.sqrt(p_speech / 10 ** (snr / 10))
    elif r < 0.93:
        y = y + rng.normal(0, rng.uniform(0.5, 8), len(y))   # mic/ADC floor
    peak = np.abs(y).max() + 1e-9
    target = 10 ** (rng.uniform(-35, -1) / 20) * 32767
    if rng.random() < 0.05:
        target = 10 ** (rng.uniform(0, 6) / 20) * 32767     # clipping
    if rng.random() < 0.05:
        y = np.tanh(y / peak * rng.uniform(1.5, 4)) * peak     # soft saturation
    y = y * (target / peak)
    return np.clip(np.round(y), -32768, 32767).astype(np.int16), segs


def noise_only_stream(i, split, bank):
    rng = np.random.default_rng(seed_of("noise", split, i, AUG_VERSION))
    n = C.FRAME * int(rng.integers(20, 60))
    if rng.random() < 0.1:
        x = rng.normal(0, rng.uniform(0, 5), n)
    else:
        nz, _ = bank.noise(rng, n)
        x = nz * 10 ** (rng.uniform(-55, -10) / 20) * 32767
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def plan(split):
    jobs = [j for j in load_manifest() if j["split"] == split]
    items = []
    for j in jobs:
        for a in range(N_AUG["pos" if j["label"] != C.NONE else "neg"]):
            items.append((j, a))
    rng = np.random.default_rng(seed_of("plan", split, AUG_VERSION))
    perm = rng.permutation(len(items))
    streams, i = [], 0
    while i < len(perm):
        n = int(rng.integers(4, 10))
        streams.append([items[k] for k in perm[i:i + n]])
        i += n
    return streams


def build(split):
    streams = plan(split)
    bank = A.NoiseBank(babble_pool(load_manifest(), split))
    d = C.CACHE / "feat" / AUG_VERSION
    d.mkdir(parents=True, exist_ok=True)
    embs, segs, voices = [], [], []
    t0 = time.time()
    total = len(streams) + N_NOISE_ONLY.get(split, 0)
    for si in range(total):
        f = d / f"{split}_{si}.npz"
        if PARTIAL and not f.exists():
            continue
        if f.exists():
            z = np.load(f)
            e, sg = z["emb"], z["segs"]
        else:
            rng = np.random.default_rng(seed_of("stream", split, si, AUG_VERSION))
            if si < len(streams):
                st = streams[si]
                audio, sg = compose([utterance(j, a) for j, a in st], [j["label"] for j, _ in st], rng, bank)
            else:
                audio, sg = noise_only_stream(si, split, bank), []
            sg = np.array(sg, np.int64).reshape(-1, 3)
            e = C.stream_embeddings(audio).astype(np.float16)
            np.savez(f, emb=e, segs=sg)
        sidx = len(embs)
        embs.append(e)
        segs += [(sidx, *s) for s in sg.tolist()]
        voices.append(";".join(sorted({j["engine"] + ":" + j["voice"] for j, _ in streams[si]})) if si < len(streams) else "noise")
        if si % 200 == 0:
            print(f"features {split} {si}/{total} {time.time() - t0:.0f}s", flush=True)
    off = np.cumsum([0] + [len(e) for e in embs])
    np.savez(C.CACHE / f"features_{split}.npz", emb=np.concatenate(embs), off=off,
             segs=np.array(segs, np.int64).reshape(-1, 4), voice=np.array(voices))
    print(f"features {split}: {len(embs)} streams, {off[-1]} frames ({off[-1] * 0.08 / 3600:.2f} h), "
          f"{len(segs)} utterances, {time.time() - t0:.0f}s")


if __name__ == "__main__":
    for split in sys.argv[1:] or ["val", "train"]:
        build(split)
