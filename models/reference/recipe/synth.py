"""Synthesize positives and negatives with espeak-ng, flite and festival (cached, seeded).
Writes CACHE/tts/<hash>.wav (16 kHz mono s16) and CACHE/tts_manifest.json."""
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import time

import common as C
import texts as T

N_POS_TRAIN_ESPEAK = 420     # per command
N_POS_TRAIN_FLITE = 70
N_POS_VAL_ESPEAK = 60
N_POS_VAL_FLITE = 12
N_POS_VAL_FESTIVAL = 18
N_POS_DEMO = 4               # per command per holdout demo voice (test only)
N_NEG_TRAIN_ESPEAK = 3600
N_NEG_TRAIN_FLITE = 600
N_NEG_VAL_ESPEAK = 700
N_NEG_VAL_FLITE = 150
N_NEG_VAL_FESTIVAL = 200


def espeak_params(rng, voices):
    return dict(engine="espeak", voice=rng.choice(voices), speed=rng.randint(120, 220),
                pitch=rng.randint(20, 80), gap=rng.choice([0, 0, 0, 1, 2, 4]),
                amp=rng.randint(80, 150))


def flite_params(rng, voices):
    return dict(engine="flite", voice=rng.choice(voices), stretch=round(rng.uniform(0.8, 1.3), 2),
                f0=rng.choice([None, rng.randint(80, 220)]))


def festival_params(rng, voices):
    return dict(engine="festival", voice=rng.choice(voices), stretch=round(rng.uniform(0.85, 1.25), 2))


def espeak_voices(heldout):
    if heldout:
        vs = [f"{l}+{v}" if v else l for l in C.ESPEAK_HELDOUT_LANGS for v in [""] + C.ESPEAK_VARIANTS]
        vs += [f"{l}+{v}" for l in C.ESPEAK_TRAIN_LANGS for v in C.ESPEAK_HELDOUT_VARIANTS]
        return sorted(set(vs) - set(C.holdout_demo_voices()))
    vs = [f"{l}+{v}" if v else l for l in C.ESPEAK_TRAIN_LANGS for v in C.ESPEAK_TRAIN_VARIANTS]
    bad = [v for v in vs if C.espeak_voice_is_heldout(v)]
    assert not bad, f"held-out voices leaked into training: {bad}"
    return vs


def build_jobs():
    rng = random.Random(1234)
    jobs = []
    tr_es, va_es = espeak_voices(False), espeak_voices(True)
    gens = {"train": [(espeak_params, tr_es, N_POS_TRAIN_ESPEAK, N_NEG_TRAIN_ESPEAK),
                      (flite_params, C.FLITE_TRAIN_VOICES, N_POS_TRAIN_FLITE, N_NEG_TRAIN_FLITE)],
            "val": [(espeak_params, va_es, N_POS_VAL_ESPEAK, N_NEG_VAL_ESPEAK),
                    (flite_params, C.FLITE_HELDOUT_VOICES, N_POS_VAL_FLITE, N_NEG_VAL_FLITE),
                    (festival_params, C.FESTIVAL_HELDOUT_VOICES, N_POS_VAL_FESTIVAL, N_NEG_VAL_FESTIVAL)]}
    for split, lst in gens.items():
        for pf, voices, npos, nneg in lst:
            for ci, cmd in enumerate(C.COMMANDS):
                for _ in range(npos):
                    p = pf(rng, voices)
                    text = rng.choice(T.command_forms(cmd))
                    if rng.random() < 0.2:
                        text = f"{rng.choice(T.FILLERS)}, {text}"
                    jobs.append(dict(split=split, label=ci, text=text, **p))
            for _ in range(nneg):
                p = pf(rng, voices)
                text = T.negative_text(rng)
                while T.contains_command(text, C.COMMANDS):
                    text = T.negative_text(rng)
                jobs.append(dict(split=split, label=C.NONE, text=text, **p))
    # demo voices: test only
    for v in C.holdout_demo_voices():
        for ci, cmd in enumerate(C.COMMANDS):
            for _ in range(N_POS_DEMO):
                p = espeak_params(rng, [v])
                jobs.append(dict(split="demo", label=ci, text=rng.choice(T.command_forms(cmd)), **p))
    for j in jobs:
        j["key"] = hashlib.sha1(json.dumps({k: j[k] for k in sorted(j) if k != "split"},
                                           sort_keys=True).encode()).hexdigest()[:16]
    return jobs


def synth(job, out):
    with tempfile.TemporaryDirectory() as td:
        tmp = f"{td}/a.wav"
        if job["engine"] == "espeak":
            cmd = ["espeak-ng", "-v", job["voice"], "-s", str(job["speed"]), "-p", str(job["pitch"]),
                   "-g", str(job["gap"]), "-a", str(job["amp"]), "-w", tmp, job["text"]]
        elif job["engine"] == "flite":
            cmd = ["flite", "-voice", job["voice"], "--setf", f"duration_stretch={job['stretch']}"]
            if job["f0"]:
                cmd += ["--setf", f"int_f0_target_mean={job['f0']}"]
            cmd += ["-t", job["text"], "-o", tmp]
        else:
            txt = f"{td}/t.txt"
            open(txt, "w").write(job["text"])
            cmd = ["text2wave", "-eval", f"(voice_{job['voice']})", "-eval",
                   f"(Parameter.set 'Duration_Stretch {job['stretch']})", "-o", tmp, txt]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["sox", "-V1", "-D", tmp, "-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer",
                        str(out) + ".part.wav"], check=True)
    (out.parent / (out.name + ".part.wav")).rename(out)


def main():
    """python synth.py [SPLIT ...]: the jobs of the given splits ("train", "val", "demo"; default
    all three; the job list and its seeds are the same either way)."""
    splits = sys.argv[1:] or ["train", "val", "demo"]
    bad = [s for s in splits if s not in ("train", "val", "demo")]
    if bad:
        raise SystemExit(f"synth.py: unknown split(s) {bad}: expected train, val or demo")
    d = C.CACHE / "tts"
    d.mkdir(parents=True, exist_ok=True)
    jobs = [j for j in build_jobs() if j["split"] in splits]
    t0 = time.time()
    done = 0
    for i, j in enumerate(jobs):
        out = d / f"{j['key']}.wav"
        if not out.exists():
            try:
                synth(j, out)
            except subprocess.CalledProcessError as e:
                print("synth failed", j, e, file=sys.stderr)
                j["failed"] = True
                continue
            done += 1
        if i % 1000 == 0:
            print(f"synth {i}/{len(jobs)} ({done} new, {time.time() - t0:.0f}s)", flush=True)
    jobs = [j for j in jobs if not j.get("failed")]
    (C.CACHE / "tts_manifest.json").write_text(json.dumps(jobs))
    from collections import Counter
    print("synth done", Counter((j["split"], j["engine"], j["label"] == C.NONE) for j in jobs))


if __name__ == "__main__":
    main()
