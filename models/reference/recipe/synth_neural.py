"""Neural training speech for the extra training sets of features.py, speaking the commands
and negative speech of texts.py (surface forms, 20 % with a filler; negatives as synth.py):

- `trainn`: Piper `en_US-joe-medium` (neural_tts.Piper), one real speaker's voice. Variety from
  Piper's length_scale 0.7-1.4 (rate), noise_scale 0.3-1.0 and noise_w 0.3-1.1 (prosody
  sampling), and from features.py's AUG v3 (vocal-tract-length perturbation, EQ, channels,
  reverb, noise).
- `traink`, `traink2`, `traink3`: Kokoro-82M (neural_tts.Kokoro) with the three training styles
  KOKORO_TRAIN_VOICES, each utterance a random mix of two of them (or one alone), speed
  0.8-1.25; three rounds (KOKORO_ROUNDS), the third mostly negative speech. The styles
  jf_tebukuro and jm_kumo are never trained on: neural_check.py tests on them.

Output: CACHE/tts/<key>.wav and CACHE/tts_manifest_neural.json (splits "trainn", "traink",
"traink2", "traink3").

  python synth_neural.py                       # both engines
  python synth_neural.py kokoro --shard 1/2    # one engine, every 2nd job from the 2nd (parallel runs)
"""
import hashlib
import json
import random
import sys

import common as C
import neural_tts as N
import texts as T

N_POS = 100         # Piper, per command
N_NEG = 1000
N_POS_KOKORO = 40   # per command and round (Kokoro: ~2.2 s of one core per second of speech)
N_NEG_KOKORO = 160  # per round
KOKORO_TRAIN_VOICES = ["jf_alpha", "jf_gongitsune", "jf_nezumi"]   # held out: jf_tebukuro, jm_kumo


def texts(rng, n_pos, n_neg, params=dict):
    """[(label, text, params())]: n_pos surface forms per command (20 % after a filler), then n_neg
    negatives; params (drawing from rng) is called after each text."""
    out = []
    for ci, cmd in enumerate(C.COMMANDS):
        for _ in range(n_pos):
            text = rng.choice(T.command_forms(cmd))
            if rng.random() < 0.2:
                text = f"{rng.choice(T.FILLERS)}, {text}"
            out.append((ci, text, params()))
    for _ in range(n_neg):
        text = T.negative_text(rng)
        while T.contains_command(text, C.COMMANDS):
            text = T.negative_text(rng)
        out.append((C.NONE, text, params()))
    return out


# Rounds of Kokoro jobs: (split, seed, mix weight range, utterances per command, negatives). The
# second round extrapolates a little past the two styles (weights -0.25..1.25) for timbres
# outside the three speakers; the third is mostly negative speech (false accepts on natural
# voices: the first two rounds hold three commands per negative).
KOKORO_ROUNDS = [("traink", 9012, (0.0, 1.0), N_POS_KOKORO, N_NEG_KOKORO),
                 ("traink2", 9013, (-0.25, 1.25), N_POS_KOKORO, N_NEG_KOKORO),
                 ("traink3", 9014, (-0.25, 1.25), 10, 600)]


def kokoro_jobs():
    """The Kokoro jobs of every round (splits "traink", "traink2", "traink3")."""
    out = []
    for split, seed, (lo, hi), n_pos, n_neg in KOKORO_ROUNDS:
        rng = random.Random(seed)
        for label, text, _ in texts(rng, n_pos, n_neg):
            a, b = rng.sample(KOKORO_TRAIN_VOICES, 2)
            w = round(rng.uniform(lo, hi), 2) if rng.random() < 0.75 else 1.0
            voice = a if w == 1.0 else f"{a}*{w}+{b}*{round(1 - w, 2)}"
            out.append(dict(split=split, label=label, text=text, engine="kokoro", voice=voice,
                            speed=round(rng.uniform(0.8, 1.25), 3)))
    for j in out:
        j["key"] = "kj_" + hashlib.sha1(json.dumps(j, sort_keys=True).encode()).hexdigest()[:14]
    return out


def jobs():
    """The Piper jobs (split "trainn")."""
    rng = random.Random(5678)

    def params():
        return dict(length_scale=round(rng.uniform(0.7, 1.4), 3), noise_scale=round(rng.uniform(0.3, 1.0), 3),
                    noise_w=round(rng.uniform(0.3, 1.1), 3))

    out = [dict(split="trainn", label=label, text=text, engine="piper", voice="en_US-joe-medium", **p)
           for label, text, p in texts(rng, N_POS, N_NEG, params)]
    for j in out:
        j["key"] = "pj_" + hashlib.sha1(json.dumps(j, sort_keys=True).encode()).hexdigest()[:14]
    return out


def synthesise(js, engine, make, shard=(0, 1), out_dir=None):
    """Writes the missing out_dir/<key>.wav (default CACHE/tts) of js[shard[0]::shard[1]] (jobs:
    dicts with "key"), written under a temporary name and renamed, so an interrupted run leaves
    no partial clip. make: () -> engine, called once, only if a clip is missing (the engine
    loads in seconds); the engine maps a job to an int16 16 kHz clip."""
    out_dir = out_dir or C.CACHE / "tts"
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [j for j in js[shard[0]::shard[1]] if not (out_dir / f"{j['key']}.wav").exists()]
    random.Random(len(todo)).shuffle(todo)      # commands and negatives alike as the run goes on
    tts = make() if todo else None
    for i, j in enumerate(todo):
        tmp = out_dir / f"{j['key']}.part.wav"
        C.write_wav(tmp, tts(j))
        tmp.rename(out_dir / f"{j['key']}.wav")
        if (i + 1) % 50 == 0:
            print(f"{engine} {i + 1}/{len(todo)}", flush=True)
    print(f"{engine}: {len(js)} clips, {len(todo)} made", file=sys.stderr)


def piper_maker():
    """A loaded Piper engine as a job -> clip function (jobs with text and Piper's scales)."""
    p = N.Piper()
    return lambda j: p(j["text"], j["length_scale"], j["noise_scale"], j["noise_w"])


def kokoro_maker():
    """A loaded Kokoro engine as a job -> clip function (jobs with text, voice, speed)."""
    k = N.Kokoro()
    return lambda j: k(j["text"], j["voice"], j["speed"])


def main():
    args = sys.argv[1:]
    shard = (0, 1)
    if "--shard" in args:
        k, n = args.pop(args.index("--shard") + 1).split("/")
        args.remove("--shard")
        shard = (int(k) - 1, int(n))
    engines = args or ["piper", "kokoro"]
    piper_jobs, kokoro_jobs_ = jobs(), kokoro_jobs()
    if "piper" in engines:
        synthesise(piper_jobs, "piper", piper_maker, shard)
    if "kokoro" in engines:
        synthesise(kokoro_jobs_, "kokoro", kokoro_maker, shard)
    (C.CACHE / "tts_manifest_neural.json").write_text(json.dumps(piper_jobs + kokoro_jobs_))


if __name__ == "__main__":
    main()
