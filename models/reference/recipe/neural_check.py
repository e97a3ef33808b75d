"""Streaming evaluation on natural voices that no training step has heard.

The recipe trains on espeak-ng and flite (formant and diphone synthesis), one Piper voice and
mixes of three Kokoro-82M voice styles (synth_neural.py), and evaluates on held-out voices of
espeak-ng, flite and festival. This check (CHECKS) measures the head on natural voices that no
training step uses, in three sets:

- Kokoro: the styles jf_tebukuro (female) and jm_kumo (male), alone in turn, Japanese speakers
  speaking English from espeak-ng phonemes (neural_tts.Kokoro; accented English, natural timbre
  and prosody), speed 0.85-1.2. Packages pinned in `requirements-neural.txt`, installed by
  `neural_check.sh`.
- Pico: the en-GB voice of SVOX Pico (pico_tts.py; a British English speaker, an engine no
  training step uses), pitch 70-140 % and speed 75-135 % of the voice's own.
- RHVoice: its US English voices bdl (male) and clb (female) in turn (rhvoice_tts.py; two CMU
  ARCTIC speakers, a third engine no training step uses), rate -0.3..0.4 and pitch -0.3..0.3
  (RHVoice's absolute parameters, 0 = the voice's own).

Same protocol as evaluate.py + report.py: the utterances are concatenated into streams with
1.2-2.2 s gaps, noise over the whole stream (clean = 1 LSB floor; 20/10/5 dB with the noise
cycle of evaluate.py, babble made of the set's own negative speech), every frame goes
through the literal StreamingPipeline, and the decision runs at training_report.json's
operating point. Negative speech streams (near-miss words, sentences, random word strings of
texts.py, clean and at 10 dB) give false accepts per hour.

Variation: each command in its surface forms (texts.command_forms), the set's voices in turn,
engine parameters drawn with a fixed seed per set. The clips are cached in CACHE/neural/ under a
hash of (text, voice, parameters) and reused: Kokoro's output differs by a few LSB from run to
run and more across machines, so heads are compared on one set of clips.

  python neural_check.py                          # shipped head: prints and writes ../neural_voice_check.md
  python neural_check.py HEAD.onnx [T K R V H]    # another head / decision point: prints only
  python neural_check.py --synth-only K/N         # only synthesise shard K of N of the clips (those missing)
  python neural_check.py [HEAD.onnx [T K R V H]] --gain DB   # every utterance DB (<= 0) quieter: prints only
"""
import argparse
import hashlib
import json
import random


import augment as A
import check_clips as CC
import common as C
import evaluate as E
import pico_tts as P
import rhvoice_tts as RH
import synth_neural as SN
import texts as TX

# The check sets: voices that no training step uses. Each job draws its engine
# parameters with params(rng) after its text; its clip is cached under a hash of (text, voice,
# parameters), so a changed job list never reuses a clip made with other ones.
CHECKS = [
    dict(name="kokoro", title="Kokoro-82M int8, 2 held-out voice styles", prefix="k_", seed=4343,
         tags=("neural", "neuralneg"),       # stream seeds of evaluate.record_streams, as before Pico joined
         voices=["jf_tebukuro", "jm_kumo"], maker=SN.kokoro_maker,
         params=lambda rng: dict(speed=round(rng.uniform(0.85, 1.2), 3)), variation="speed 0.85–1.2",
         about="Two speakers of one engine with an accent, never trained on (three other styles of the "
               "engine are, mixed)"),
    dict(name="pico", title="SVOX Pico, en-GB voice", prefix="p_", seed=4344,
         tags=("neural-pico", "neural-pico-neg"),
         voices=["en-GB"], maker=lambda: P.maker(["en-GB"]),
         params=lambda rng: dict(pitch=rng.randint(70, 140), speed=rng.randint(75, 135)),
         variation="Pico pitch 70–140 % and speed 75–135 %",
         about="One British English speaker of a second engine (HMM synthesis trained on a recorded "
               "speaker), no voice of which is trained on"),
    dict(name="rhvoice", title="RHVoice, US English voices bdl and clb", prefix="rh_", seed=4345,
         tags=("neural-rhvoice", "neural-rhvoice-neg"),
         voices=RH.VOICES, maker=RH.maker,
         params=lambda rng: dict(rate=round(rng.uniform(-0.3, 0.4), 3), pitch=round(rng.uniform(-0.3, 0.3), 3)),
         variation="RHVoice rate −0.3..0.4 and pitch −0.3..0.3 (absolute, 0 = the voice's own)",
         about="Two US English speakers of the CMU ARCTIC recordings (a man and a woman) through a third engine "
               "(statistical parametric synthesis), none of whose voices is trained on"),
]
assert not set(CHECKS[0]["voices"]) & set(SN.KOKORO_TRAIN_VOICES), "a held-out Kokoro voice is in training"
N_PER_COMMAND = 20
N_NEGATIVE = 120


def clip_key(prefix, text, voice, params):
    """Cache key of a clip in CACHE/neural: prefix + 14 hex digits of the SHA-1 of its text, voice
    and engine parameters (in params' order)."""
    return prefix + hashlib.sha1(json.dumps([text, voice, *params.values()]).encode()).hexdigest()[:14]


def job_lists(check):
    """([(key, text, label, voice, params)] commands, [...] negatives) of one check set."""
    rng, voices = random.Random(check["seed"]), check["voices"]
    pos = []
    for li, cmd in enumerate(C.COMMANDS):
        forms = TX.command_forms(cmd)
        for i in range(N_PER_COMMAND):
            text, voice, p = forms[i % len(forms)], voices[(li + i) % len(voices)], check["params"](rng)
            pos.append((clip_key(check["prefix"], text, voice, p), text, li, voice, p))
    neg, seen = [], set()
    while len(neg) < N_NEGATIVE:
        t = TX.negative_text(rng)
        if t in seen or TX.contains_command(t, C.COMMANDS):
            continue
        seen.add(t)
        voice, p = voices[len(neg) % len(voices)], check["params"](rng)
        neg.append((clip_key(check["prefix"], t, voice, p), t, C.NONE, voice, p))
    return pos, neg


def record(head, pos, neg, check, gain_db=0.0):
    """evaluate.py's streams (evaluate.record_streams, seeded by check["tags"]) of these clips
    ([(job, clip)]) of one check set, every utterance gain_db (dB) from the protocol's level:
    (recs, negrec)."""
    bank = A.NoiseBank.of_speech([x for _, x in neg[::3]])
    return E.record_streams(pos, neg, head, bank, check["tags"], lambda it: it[0][2],
                            lambda it: ("neural", check["name"], it[0][3], it[0][1]), lambda it: it[0][1],
                            gain_db=gain_db)


def false_accept_texts(negrec, params):
    """The negative text that each detection fired on: [(condition, stream, utterance index or
    None, text, label)] in stream order; the utterance is evaluate.utterance_at's (the latest
    that started before the detection), as in the training report."""
    out = []
    for cname, (scs, vds, uts, txts) in negrec.items():
        for si, (sc, vd, ut, tx) in enumerate(zip(scs, vds, uts, txts)):
            for frame, lab, _ in E.decide_fast(sc, vd, *params):
                i = E.utterance_at(frame, ut)
                out.append((cname, si, i, tx[i] if i is not None else "(before first utterance)", C.LABELS[lab]))
    return out


def section(check, head_name, pos, neg, recs, negrec, params):
    """The markdown section of one check set and its summary (evaluate.summarize)."""
    out, fa = E.evaluate(recs, negrec, params)
    sm = E.summarize(out, fa)
    L = [f"## {check['title']} (never trained on)\n",
         f"{len(pos)} command utterances ({N_PER_COMMAND} per command, surface forms of texts.py, "
         f"voice{'s' if len(check['voices']) > 1 else ''} {', '.join(check['voices'])}"
         f"{' in turn' if len(check['voices']) > 1 else ''}, {check['variation']}) through `{head_name}`, "
         f"streamed as evaluate.py does; {len(neg)} negative utterances for false accepts. {check['about']}: a "
         f"check of how the head carries over to natural voices, with wide error bars ({N_PER_COMMAND} "
         "utterances per command and condition).\n",
         "| condition | accuracy | n | misses | wrong label |", "|---|---|---|---|---|"]
    for cname, _ in E.CONDITIONS:
        rows = out[cname][0]
        L.append(f"| {cname} | **{sm[cname]['accuracy'] * 100:.1f} %** | {len(rows)} | "
                 f"{sum(r[1] is None for r in rows)} | {sum(r[1] is not None and r[1] != r[0] for r in rows)} |")
    hours = sum(v[1] for v in fa.values())
    L.append(f"\nFalse accepts: {sum(v[0] for v in fa.values())} in {hours:.3f} h of negative speech "
             f"(clean + 10 dB) = **{sm['fa_per_hour']:.1f} per hour**.\n")
    if len(check["voices"]) > 1:       # rows: (label, detected, ...) + record()'s meta ("neural", set, voice, text)
        L += E.accuracy_table(out, "voice", [(v, lambda r, v=v: r[6] == v) for v in check["voices"]],
                              lambda a, n: f"{a:.1f} %") + [""]
    L += ["Per noise type (the babble is 2–5 simultaneous talkers of this set's own negative speech):\n",
          E.per_noise_table(E.per_noise(recs, params)), ""]
    L += E.accuracy_table(out, "command", [(cmd, lambda r, li=li: r[0] == li) for li, cmd in enumerate(C.COMMANDS)],
                          lambda a, n: f"{a:.0f} %")
    conf = {}
    for cname, _ in E.CONDITIONS:
        for r in out[cname][0]:
            if r[1] is not None and r[1] != r[0]:
                k = f"{C.LABELS[r[0]]} → {C.LABELS[r[1]]}"
                conf[k] = conf.get(k, 0) + 1
    fas = false_accept_texts(negrec, params)
    if fas:
        L.append("\nFalse accepts (negative text → command): " + ", ".join(f"`{t}` → {l}" for *_, t, l in fas) + ".")
    if conf:
        L.append("\nWrong labels (all conditions): " + ", ".join(f"{k} ×{n}" for k, n in sorted(conf.items())) + ".")
    return L, sm


def main():
    out_dir = C.CACHE / "neural"
    out_dir.mkdir(parents=True, exist_ok=True)
    ap = argparse.ArgumentParser(description="Streaming check of a head on the held-out natural voices.")
    ap.add_argument("--gain", type=float, default=0.0, metavar="DB",
                    help="every utterance DB from the protocol's level (<= 0: quieter); prints only")
    ap.add_argument("--synth-only", metavar="K/N", help="only synthesise shard K of N of the clips (those missing)")
    CC.add_head_and_point(ap)
    args = ap.parse_args()
    shard = (0, 1)
    if args.synth_only:
        k, _, n = args.synth_only.partition("/")
        if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
            ap.error(f"--synth-only {args.synth_only}: expected K/N with 1 <= K <= N")
        shard = (int(k) - 1, int(n))
    jobs = {}
    for check in CHECKS:
        pos_jobs, neg_jobs = jobs[check["name"]] = job_lists(check)
        clip_jobs = [dict(key=key, text=text, voice=voice, **p) for key, text, _, voice, p in pos_jobs + neg_jobs]
        SN.synthesise(clip_jobs, f"{check['name']} (neural check)", check["maker"], shard, out_dir)
    if args.synth_only:
        return
    head, params = CC.head_and_point(ap, args)
    T, K, R, V, H = params
    L = ["# Neural-voice check: voices never trained on\n",
         f"Generated by `models/reference/recipe/neural_check.sh` (neural_check.py) for `{head.split('/')[-1]}` "
         f"at T={T} K={K} R={R} V={V} H={H} (the operating point of training_report.json unless given)"
         + (f", every utterance {args.gain:+.0f} dB from the protocol's level" if args.gain else "") + ".\n"]
    summaries = {}
    for check in CHECKS:
        pos_jobs, neg_jobs = jobs[check["name"]]
        pos = [(j, C.read_wav(out_dir / f"{j[0]}.wav")) for j in pos_jobs]
        neg = [(j, C.read_wav(out_dir / f"{j[0]}.wav")) for j in neg_jobs]
        recs, negrec = record(head, pos, neg, check, args.gain)
        lines, summaries[check["name"]] = section(check, head.split("/")[-1], pos, neg, recs, negrec, params)
        L += lines + [""]
    text = "\n".join(L)
    print(text)
    if args.head is None and not args.gain:    # the shipped head at its operating point and level: the record
        (C.REF / "neural_voice_check.md").write_text(text)
        (C.CACHE / "neural_check.json").write_text(json.dumps(summaries, indent=1))


if __name__ == "__main__":
    main()
