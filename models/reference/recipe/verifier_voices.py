"""Speech of engines other than espeak-ng for the stage-2 verifier (verifier_train.py): the
commands and negative speech in the training voices of four engines, and the neural-voice
check's held-out voices as a test of the verifier on speech it never trained on. Runs in .venv
with requirements-neural.txt (Piper, Kokoro) and needs flite (`apt-get install flite`).

`train` (CACHE/verifier/voices/<key>.wav, manifest CACHE/verifier/voices_train.json):
  - flite's training voices (common.FLITE_TRAIN_VOICES), duration stretch 0.8-1.3, mean f0 random
    or the voice's own (as synth.flite_params);
  - Piper en_US-joe-medium, length_scale 0.7-1.4, noise_scale 0.3-1.0, noise_w 0.3-1.1
    (synth_neural.jobs);
  - Kokoro-82M, random mixes of the three training styles (synth_neural.KOKORO_TRAIN_VOICES),
    weights -0.25..1.25, speed 0.8-1.25;
  - SVOX Pico's en-US voice (pico_tts.py; the en-GB voice is a check set), pitch 70-140 %, speed
    80-125 %.
  Per engine N_COMMAND clips per command (texts.command_forms, 10 % after a filler) and N_NEGATIVE
  negatives: near misses (texts.HARD_NEGATIVES without verifier_check's test slice [::4]),
  sentences, random word strings and numbers; no text holding a command.
`check` synthesises the clips of neural_check.py's three check sets (Kokoro jf_tebukuro and
  jm_kumo, Pico en-GB, RHVoice bdl and clb: voices no training step uses) into CACHE/neural,
  where neural_check.py keeps them, and lists them in CACHE/verifier/voices_check.json.

  python verifier_voices.py train [--engine flite|piper|kokoro|pico] [--shard K/N]
  python verifier_voices.py check [--shard K/N]
A run makes only the clips that are missing, then lists in the manifest the clips of every
engine whose clips are all made (a clip's key hashes its text, voice and engine parameters, so
a changed job list never reuses a clip made with other ones).
"""
import argparse
import hashlib
import json
import random
import tempfile
from pathlib import Path

import common as C
import texts as T

OUT = C.CACHE / "verifier" / "voices"
N_COMMAND = {"flite": 24, "piper": 20, "kokoro": 12, "pico": 10}     # per command
N_NEGATIVE = {"flite": 200, "piper": 150, "kokoro": 60, "pico": 60}
ENGINES = tuple(N_COMMAND)


def verifier_test_negatives():
    """The near misses verifier_check.py tests on (texts.HARD_NEGATIVES[::4]): never trained on."""
    return set(T.HARD_NEGATIVES[::4])


def negative_texts(rng, n):
    """n distinct negative texts (no command inside, none of the verifier's test near misses)."""
    test, out = verifier_test_negatives(), []
    while len(out) < n:
        t = T.negative_text(rng)
        if t in test or t in out or T.contains_command(t, C.COMMANDS):
            continue
        out.append(t)
    return out


def params(engine, rng):
    if engine == "flite":
        import synth
        return {k: v for k, v in synth.flite_params(rng, C.FLITE_TRAIN_VOICES).items() if k != "engine"}
    if engine == "piper":
        return dict(voice="en_US-joe-medium", length_scale=round(rng.uniform(0.7, 1.4), 3),
                    noise_scale=round(rng.uniform(0.3, 1.0), 3), noise_w=round(rng.uniform(0.3, 1.1), 3))
    if engine == "kokoro":
        import synth_neural as SN
        a, b = rng.sample(SN.KOKORO_TRAIN_VOICES, 2)
        w = round(rng.uniform(-0.25, 1.25), 2) if rng.random() < 0.75 else 1.0
        return dict(voice=a if w == 1.0 else f"{a}*{w}+{b}*{round(1 - w, 2)}", speed=round(rng.uniform(0.8, 1.25), 3))
    if engine == "pico":
        return dict(voice="en-US", pitch=rng.randint(70, 140), speed=rng.randint(80, 125))
    raise ValueError(f"unknown engine {engine!r}: expected one of {', '.join(ENGINES)}")


def train_jobs(engine):
    """[job]: dicts with key, engine, text, label (index into common.LABELS) and the engine's
    parameters, seeded per engine."""
    rng = random.Random(f"verifier-voices-{engine}")
    jobs = []
    for ci, cmd in enumerate(C.COMMANDS):
        for _ in range(N_COMMAND[engine]):
            text = rng.choice(T.command_forms(cmd))
            if rng.random() < 0.1:
                text = f"{rng.choice(T.FILLERS)}, {text}"
            jobs.append(dict(engine=engine, text=text, label=ci, **params(engine, rng)))
    for text in negative_texts(rng, N_NEGATIVE[engine]):
        jobs.append(dict(engine=engine, text=text, label=C.NONE, **params(engine, rng)))
    for j in jobs:
        j["key"] = f"v{engine[0]}_" + hashlib.sha1(json.dumps(j, sort_keys=True).encode()).hexdigest()[:14]
    return jobs


def flite(j):
    """One flite job (train_jobs) as int16 16 kHz, made by synth.synth."""
    import synth
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "a.wav"
        synth.synth(j, out)
        return C.read_wav(out)


def maker(engine):
    """() -> (job -> int16 16 kHz clip) for synth_neural.synthesise."""
    import synth_neural as SN
    if engine == "flite":
        return lambda: flite
    if engine == "piper":
        return SN.piper_maker
    if engine == "kokoro":
        return SN.kokoro_maker
    import pico_tts
    return lambda: pico_tts.maker(["en-US"])


def check_jobs():
    """[(check name, key, text, label, voice)] of neural_check.py's three sets."""
    import neural_check as NC
    out = []
    for check in NC.CHECKS:
        pos, neg = NC.job_lists(check)
        out += [(check["name"], key, text, label, voice) for key, text, label, voice, _ in pos + neg]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["train", "check"])
    ap.add_argument("--engine", choices=ENGINES, action="append", help="only this engine (train; repeatable)")
    ap.add_argument("--shard", default="1/1", metavar="K/N", help="every N-th missing clip from the K-th")
    a = ap.parse_args()
    k, _, n = a.shard.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        ap.error(f"--shard {a.shard}: expected K/N with 1 <= K <= N")
    shard = (int(k) - 1, int(n))
    import synth_neural as SN
    if a.what == "train":
        engines = a.engine or ENGINES
        for e in engines:
            SN.synthesise(train_jobs(e), f"{e} (verifier training)", maker(e), shard, OUT)
        # the manifest lists every engine whose clips are all made (scripts/train-commands makes some first)
        done = [e for e in ENGINES if all((OUT / f"{j['key']}.wav").exists() for j in train_jobs(e))]
        if done:
            rows = [dict(path=str(OUT / f"{j['key']}.wav"), label=j["label"], engine=e, voice=j["voice"], text=j["text"])
                    for e in done for j in train_jobs(e)]
            (C.CACHE / "verifier" / "voices_train.json").write_text(json.dumps(rows))
            print(f"voices_train.json: {len(rows)} clips of {', '.join(done)}")
    else:
        import neural_check as NC
        out_dir = C.CACHE / "neural"
        for check in NC.CHECKS:
            pos, neg = NC.job_lists(check)
            jobs = [dict(key=key, text=text, voice=voice, **p) for key, text, _, voice, p in pos + neg]
            SN.synthesise(jobs, f"{check['name']} (neural check)", check["maker"], shard, out_dir)
        if shard == (0, 1):
            rows = [dict(path=str(out_dir / f"{key}.wav"), label=label, set=name, voice=voice, text=text)
                    for name, key, text, label, voice in check_jobs()]
            (C.CACHE / "verifier" / "voices_check.json").write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
