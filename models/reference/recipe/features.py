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
N_NOISE_ONLY = {"train": 400, "val": 60, "trainx": 300}
# Extra training set "trainx" (AUG v3, same training clips): VTLP/EQ/channel augmentation of
# every clip (augment.random_effects_v3), noise in 85 % of the streams with the SNR weighted
# towards 0-10 dB, utterance levels -16..0 dB. Copies per clip by (engine, positive?): the
# flite training voices (all male) get more copies, they are the closest to unseen engines.
AUG_V3 = "v3"
# Extra training set "trainb" (AUG v3 utterances, streams "v3b"): babble-heavy, the hardest noise
# of the evaluation (speech of 2-5 other talkers, training voices only) at -3..12 dB SNR, 30 % of
# them with a second noise. N_BABBLE_STREAMS streams of a fresh plan of the training clips.
N_BABBLE_STREAMS = 900
# Extra training sets "trainnb", "traink2b" (streams "v3nb"): the same babble-heavy streams of the
# Piper / Kokoro clips, babble drawn from the negatives of every training split (espeak-ng,
# flite, Piper and Kokoro talkers), so the neural voices are heard behind other natural talkers.
BABBLE_SPLITS = ["train", "trainn", "traink", "traink2"]
V3_FAMILY = (AUG_V3, "v3b", "v3nb")    # stream versions with AUG v3 utterances (augment.random_effects_v3)
N_AUG_V3 = {("espeak", True): 1, ("flite", True): 3, ("espeak", False): 1, ("flite", False): 2,
            ("piper", True): 3, ("piper", False): 1, ("kokoro", True): 4, ("kokoro", False): 2,
            ("recorded", False): 3, ("field", True): 4, ("field", False): 2}
# Extra training set "trainn" (AUG v3 streams of split "trainn"): the neural Piper voice of
# synth_neural.py (CACHE/tts_manifest_neural.json), 3 VTLP/EQ/channel copies per command clip.
# Extra training sets "traink", "traink2", "traink3" (AUG v3 streams of those splits): mixes of three
# Kokoro voice styles (synth_neural.py, three rounds, the third mostly negatives), 4 copies per
# command clip, 2 per negative.
# Extra training set "trainr" (AUG v3 streams of split "trainr"): recorded human speech as
# negatives, the Italian and Russian Asterisk prompts (recorded_speech.py, CACHE/
# tts_manifest_recorded.json), 3 copies per prompt (training report item 23).
# Extra training set "trainf" (AUG v3 streams of split "trainf"): recordings of people saying the
# commands, imported by field_recordings.py (CACHE/tts_manifest_field.json; the training speakers
# only), 4 copies per command clip and 2 per negative, as Kokoro's.
PARTIAL = os.environ.get("OUTPOST_PARTIAL") == "1"   # only use already-cached streams (quick first head)


def seed_of(*parts):
    return int(hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def load_manifest():
    jobs = json.loads((C.CACHE / "tts_manifest.json").read_text())
    # synth_neural.py (splits "trainn", "traink*"), recorded_speech.py (split "trainr"),
    # field_recordings.py (splits "trainf", "valf")
    for extra in (C.CACHE / "tts_manifest_neural.json", C.CACHE / "tts_manifest_recorded.json",
                  C.CACHE / "tts_manifest_field.json"):
        jobs = jobs + (json.loads(extra.read_text()) if extra.exists() else [])
    return jobs


def babble_pool(jobs, splits, n=300):
    """n trimmed negative utterances of the given training splits (a name, or a list: then n per
    TTS engine, so that the many espeak-ng clips do not drown the natural voices), seeded."""
    one = isinstance(splits, str)
    splits = [splits] if one else splits
    rng = np.random.default_rng(seed_of("babble", *splits))
    neg = [j for j in jobs if j["split"] in splits and j["label"] == C.NONE]
    groups = [neg] if one else [[j for j in neg if j["engine"] == e] for e in sorted({j["engine"] for j in neg})]
    out = []
    for g in groups:
        for i in rng.choice(len(g), size=min(n, len(g)), replace=False):
            out.append(g[i])
    return [trimmed(j) for j in out]


def trimmed(job):
    """A clip of the TTS cache as float32, cut to its speech (augment.speech_bounds)."""
    x = C.read_wav(C.CACHE / "tts" / f"{job['key']}.wav").astype(np.float32)
    s, e = A.speech_bounds(x)
    return x[s:e]


def utterance(job, aug, version=AUG_VERSION):
    """Clean (sox-augmented for aug > 0, always for v3) utterance trimmed to its speech + a
    little margin."""
    rng = np.random.default_rng(seed_of(job["key"], aug, version))
    x = C.read_wav(C.CACHE / "tts" / f"{job['key']}.wav").astype(np.float32)
    if version in V3_FAMILY:
        eff = A.random_effects_v3(rng, job["engine"])
        try:
            x = A.sox(x, eff)
        except Exception:      # sox 14.4 `pitch` occasionally segfaults on a clip: redo in two calls
            i = eff.index("rate") + 3 if "rate" in eff else 2
            try:
                x = A.sox(A.sox(x, eff[:i]), eff[i:])
            except Exception:
                x = A.sox(x, [e for e in eff[i:]] or ["gain", "-8"])
    elif aug > 0:
        x = A.sox(x, A.random_effects(rng))
    s, e = A.speech_bounds(x)
    s0, e0 = max(0, s - 800), min(len(x), e + 1600)     # keep reverb tails / soft edges
    return x[s0:e0], (s - s0, e - s0)


def place(utts, labels, rng, min_gain_db):
    """Utterances at random gains (min_gain_db..0 dB) with 0.15-2.5 s log-uniform gaps after
    0.1-1.5 s of lead-in and 10 silent frames at the end, padded to whole frames.
    Returns (float32 stream, segments [(label, start, end)], mean speech power)."""
    parts = [np.zeros(int(rng.uniform(0.1, 1.5) * C.SR), np.float32)]
    pos = len(parts[0])
    segs = []
    for (x, (s, e)), lab in zip(utts, labels):
        g = 10 ** (rng.uniform(min_gain_db, 0) / 20)
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
    return y, segs, p_speech


def set_level(y, rng):
    """Random peak level (-35..-1 dBFS), 5 % clipped (0..+6 dB over full scale), 5 % soft
    saturation; returns int16."""
    peak = np.abs(y).max() + 1e-9
    target = 10 ** (rng.uniform(-35, -1) / 20) * 32767
    if rng.random() < 0.05:
        target = 10 ** (rng.uniform(0, 6) / 20) * 32767     # clipping
    if rng.random() < 0.05:
        y = np.tanh(y / peak * rng.uniform(1.5, 4)) * peak     # soft saturation
    y = y * (target / peak)
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


def maybe_second_noise(nz, rng, bank, p):
    """With probability p, mixes in a second, weaker noise (3-12 dB below), renormalised."""
    if rng.random() < p:
        nz2, _ = bank.noise(rng, len(nz))
        nz = nz + nz2 * 10 ** (-rng.uniform(3, 12) / 20)
        nz = nz / (nz.std() + 1e-9)
    return nz


def compose(utts, labels, rng, bank, version=AUG_VERSION):
    """utts: list of (audio, (s, e)). Returns int16 stream, segments [(label, start, end)]."""
    if version in V3_FAMILY:
        return compose_v3(utts, labels, rng, bank, babble=version != AUG_V3)
    y, segs, p_speech = place(utts, labels, rng, min_gain_db=-10)
    r = rng.random()
    if r < 0.7:
        nz, _ = bank.noise(rng, len(y))
        snr = rng.uniform(-2, 30)
        y = y + nz * np.sqrt(p_speech / 10 ** (snr / 10))
    elif r < 0.93:
        y = y + rng.normal(0, rng.uniform(0.5, 8), len(y))   # mic/ADC floor
    return set_level(y, rng), segs


def compose_v3(utts, labels, rng, bank, babble=False):
    y, segs, p_speech = place(utts, labels, rng, min_gain_db=-16)
    if babble:
        snr = rng.uniform(-3, 12)
        nz, _ = bank.noise(rng, len(y), "babble")
        nz = maybe_second_noise(nz, rng, bank, 0.3)
        y = y + nz * np.sqrt(p_speech / 10 ** (snr / 10))
    elif rng.random() < 0.85:
        r = rng.random()
        snr = rng.uniform(-3, 10) if r < 0.45 else rng.uniform(10, 20) if r < 0.8 else rng.uniform(20, 35)
        nz, _ = bank.noise(rng, len(y))
        nz = maybe_second_noise(nz, rng, bank, 0.2)
        y = y + nz * np.sqrt(p_speech / 10 ** (snr / 10))
    else:
        y = y + rng.normal(0, rng.uniform(0.5, 8), len(y))   # mic/ADC floor
    return set_level(y, rng), segs


def noise_only_stream(i, split, bank, version=AUG_VERSION):
    rng = np.random.default_rng(seed_of("noise", split, i, version))
    n = C.FRAME * int(rng.integers(20, 60))
    if rng.random() < 0.1:
        x = rng.normal(0, rng.uniform(0, 5), n)
    else:
        nz, _ = bank.noise(rng, n)
        x = nz * 10 ** (rng.uniform(-55, -10) / 20) * 32767
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def plan(split, version=AUG_VERSION):
    jobs = [j for j in load_manifest() if j["split"] == split]
    items = []
    for j in jobs:
        if version in V3_FAMILY:
            n = N_AUG_V3[(j["engine"], j["label"] != C.NONE)]
        else:
            n = N_AUG["pos" if j["label"] != C.NONE else "neg"]
        for a in range(n):
            items.append((j, a))
    rng = np.random.default_rng(seed_of("plan", split, version))
    perm = rng.permutation(len(items))
    streams, i = [], 0
    while i < len(perm):
        n = int(rng.integers(4, 10))
        streams.append([items[k] for k in perm[i:i + n]])
        i += n
    return streams


def build(name):
    """name: "train", "val" (AUG v2), "trainx" (AUG v3 streams of the training clips), "trainb"
    (babble-heavy), "trainn" / "traink", "traink2", "traink3" (AUG v3 streams of the Piper / Kokoro
    clips), "trainr" (AUG v3 streams of the recorded Italian and Russian prompts, negatives only),
    "trainf" (AUG v3 streams of the training speakers' recordings of field_recordings.py),
    "trainnb" / "traink2b" (babble-heavy streams of the Piper / second-round Kokoro clips)."""
    split, version = {"trainx": ("train", AUG_V3), "trainb": ("train", "v3b"),
                      "trainn": ("trainn", AUG_V3), "traink": ("traink", AUG_V3),
                      "traink2": ("traink2", AUG_V3), "traink3": ("traink3", AUG_V3),
                      "trainr": ("trainr", AUG_V3), "trainf": ("trainf", AUG_V3), "trainnb": ("trainn", "v3nb"),
                      "traink2b": ("traink2", "v3nb")}.get(name, (name, AUG_VERSION))
    streams = plan(split, version)
    if not streams:
        raise SystemExit(f"features {name}: split {split!r} has no clips in the manifests (CACHE/tts_manifest*.json)"
                         + (": import recordings with field_recordings.py import DIR --train" if split == "trainf" else ""))
    if version in ("v3b", "v3nb"):
        streams = streams[:N_BABBLE_STREAMS]
    if version == "v3nb":
        bank = A.NoiseBank(babble_pool(load_manifest(), BABBLE_SPLITS, 250))    # 250 per engine
    else:
        pool = babble_pool(load_manifest(), split, 300 if version == AUG_VERSION else 800)
        # recordings imported without negatives (field_recordings.py): babble of the training engines
        bank = A.NoiseBank(pool or babble_pool(load_manifest(), BABBLE_SPLITS, 250))
    d = C.CACHE / "feat" / version
    d.mkdir(parents=True, exist_ok=True)
    embs, segs, voices = [], [], []
    t0 = time.time()
    total = len(streams) + N_NOISE_ONLY.get(name, 0)
    for si in range(total):
        f = d / f"{split}_{si}.npz"
        if PARTIAL and not f.exists():
            continue
        # the clips (and copy numbers) the stream is made of: a cached stream of another job
        # list (a changed split) is made again; files written before this check carry no digest
        digest = hashlib.sha1(json.dumps([(j["key"], a) for j, a in streams[si]] if si < len(streams)
                                         else ["noise", si]).encode()).hexdigest()[:16]
        z = np.load(f) if f.exists() else None
        if z is not None and (str(z["digest"]) if "digest" in z.files else digest) == digest:
            e, sg = z["emb"], z["segs"]
        else:
            rng = np.random.default_rng(seed_of("stream", split, si, version))
            if si < len(streams):
                st = streams[si]
                audio, sg = compose([utterance(j, a, version) for j, a in st], [j["label"] for j, _ in st],
                                    rng, bank, version)
            else:
                audio, sg = noise_only_stream(si, split, bank, version), []
            sg = np.array(sg, np.int64).reshape(-1, 3)
            e = C.stream_embeddings(audio).astype(np.float16)
            np.savez(f, emb=e, segs=sg, digest=digest)
        sidx = len(embs)
        embs.append(e)
        segs += [(sidx, *s) for s in sg.tolist()]
        voices.append(";".join(sorted({j["engine"] + ":" + j["voice"] for j, _ in streams[si]})) if si < len(streams) else "noise")
        if si % 200 == 0:
            print(f"features {name} {si}/{total} {time.time() - t0:.0f}s", flush=True)
    off = np.cumsum([0] + [len(e) for e in embs])
    np.savez(C.CACHE / f"features_{name}.npz", emb=np.concatenate(embs), off=off,
             segs=np.array(segs, np.int64).reshape(-1, 4), voice=np.array(voices))
    print(f"features {name}: {len(embs)} streams, {off[-1]} frames ({off[-1] * 0.08 / 3600:.2f} h), "
          f"{len(segs)} utterances, {time.time() - t0:.0f}s")


if __name__ == "__main__":
    for split in sys.argv[1:] or ["val", "train"]:
        build(split)
