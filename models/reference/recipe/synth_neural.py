"""Neural training speech: Piper `en_US-joe-medium` (neural_tts.Piper) speaking the commands
and negative speech of texts.py, for the extra training set `trainn` of features.py.

One real speaker's voice; variety comes from Piper's length_scale 0.7-1.4 (rate), noise_scale
0.3-1.0 and noise_w 0.3-1.1 (prosody sampling), and from features.py's AUG v3
(vocal-tract-length perturbation up to female formants, EQ, channels, reverb, noise).
Texts as synth.py: the commands' surface forms (20 % with a filler) and negatives.

Output: CACHE/tts/<key>.wav and CACHE/tts_manifest_neural.json (split "trainn", engine
"piper"). The evaluation never uses Piper: neural_check.py tests on Kokoro voices.

  python synth_neural.py
"""
import hashlib
import json
import random
import sys

import common as C
import neural_tts as N
import texts as T

N_POS = 100         # per command
N_NEG = 1000


def jobs():
    rng = random.Random(5678)
    out = []

    def params():
        return dict(length_scale=round(rng.uniform(0.7, 1.4), 3), noise_scale=round(rng.uniform(0.3, 1.0), 3),
                    noise_w=round(rng.uniform(0.3, 1.1), 3))

    for ci, cmd in enumerate(C.COMMANDS):
        for _ in range(N_POS):
            text = rng.choice(T.command_forms(cmd))
            if rng.random() < 0.2:
                text = f"{rng.choice(T.FILLERS)}, {text}"
            out.append(dict(split="trainn", label=ci, text=text, engine="piper", voice="en_US-joe-medium", **params()))
    for _ in range(N_NEG):
        text = T.negative_text(rng)
        while T.contains_command(text, C.COMMANDS):
            text = T.negative_text(rng)
        out.append(dict(split="trainn", label=C.NONE, text=text, engine="piper", voice="en_US-joe-medium", **params()))
    for j in out:
        j["key"] = "pj_" + hashlib.sha1(json.dumps(j, sort_keys=True).encode()).hexdigest()[:14]
    return out


def main():
    tts = C.CACHE / "tts"
    tts.mkdir(parents=True, exist_ok=True)
    js = jobs()
    piper = None
    for i, j in enumerate(js):
        wav = tts / f"{j['key']}.wav"
        if wav.exists():
            continue
        piper = piper or N.Piper()
        C.write_wav(wav, piper(j["text"], j["length_scale"], j["noise_scale"], j["noise_w"]))
        if (i + 1) % 200 == 0:
            print(f"piper {i + 1}/{len(js)}", flush=True)
    (C.CACHE / "tts_manifest_neural.json").write_text(json.dumps(js))
    print(f"piper: {len(js)} clips ({sum(j['label'] != C.NONE for j in js)} commands)", file=sys.stderr)


if __name__ == "__main__":
    main()
