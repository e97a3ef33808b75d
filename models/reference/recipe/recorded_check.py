"""False accepts per hour on recorded human speech (recorded_speech.py: the Asterisk prompts of
four speakers in five languages, ~2.2 h, none of it a command).

Same protocol as the negative streams of evaluate.py: each voice's prompts, peak-normalised to
0.7 of full scale like the synthetic clips, go in a seeded order into streams of 60 utterances
with 0.2-1.2 s gaps and a per-utterance level of -14..0 dB, clean (1 LSB floor) and at 10 dB SNR
(the noise cycle of evaluate.py, babble made of the voice's own prompts), in DRAWS seeded
draws; every frame goes through the literal StreamingPipeline and the decision runs at
training_report.json's operating point. A detection anywhere in a stream is a false accept.
The Italian and Russian speech prompts are also training negatives (recorded_speech.TRAIN_LANGS),
so the record gives the voices never trained on (English, Spanish, French) their own total.
The per-frame scores and VAD are kept per head (CACHE/recorded/negrec_<SHA-256 of the head and
of the stream code>.pkl), so another decision point of the same head is re-decided in seconds.

  python recorded_check.py                        # shipped head: prints and writes ../recorded_speech_check.md
  python recorded_check.py HEAD.onnx [T K R V H]  # another head / decision point: prints only
"""
import argparse
import hashlib
import json
import os
import pickle
from concurrent.futures import ProcessPoolExecutor

import augment as A
import check_clips as CC
import common as C
import evaluate as E
import neural_check as NC
import neural_tts as NT
import recorded_speech as R
import texts as TX


SOUNDS = "sounds"     # the set of every language's sound-effect prompts (recorded_speech.SOUNDS)


def negatives(lang):
    """[((lang, name, transcript), int16 clip)] peak-normalised to 0.7: one voice's speech prompts
    (no silence files, no sound effects), or with lang SOUNDS the sound effects of every voice."""
    langs = list(R.VOICES) if lang == SOUNDS else [lang]
    return [((lg, name, text), NT.peak_normalise(x)) for lg in langs for name, text, x in R.prompts(lg)
            if R.prompt_kind(name, x) == ("sound" if lang == SOUNDS else "speech")]


# Seeded draws of each set's streams (order, gaps, levels, noise). One draw is a coarse
# estimate: adding one prompt to the English set reshuffled its streams and moved its count 19 -> 11.
DRAWS = 3


def record(lang, head):
    """negrec of evaluate.record_streams for one set (no command streams), DRAWS draws of its
    streams in one: every prompt is played DRAWS times clean and DRAWS times at 10 dB."""
    neg = negatives(lang)
    bank = A.NoiseBank([x[slice(*A.speech_bounds(x))] for _, x in neg[::3]])
    negrec = {}
    for d in range(DRAWS):
        _, one = E.record_streams([], neg, head, bank, ("recorded", f"recorded-{lang}" + (f"-{d}" if d else "")),
                                  None, None, lambda it: it[0][2] or it[0][1])
        for cname, lists in one.items():
            for acc, new in zip(negrec.setdefault(cname, ([], [], [], [])), lists):
                acc.extend(new)
    return lang, len(neg), negrec


def main():
    ap = argparse.ArgumentParser(description="False accepts of a head on recorded human speech.")
    ap.add_argument("head", nargs="?", help="head ONNX (default: the shipped command_head.onnx)")
    ap.add_argument("point", nargs="*", metavar="T K R V H", help="decision point (default: training_report.json)")
    args = ap.parse_args()
    if args.point and (args.head is None or len(args.point) != 5):
        ap.error("the decision point is five values after the head: T K R V H")
    head = args.head or str(C.REF / "command_head.onnx")
    T, K, R_, V, H, lt = CC.operating_point([None, head, *args.point])
    if lt:
        raise SystemExit("per-command thresholds are not supported by this check: give the point as "
                         "HEAD.onnx T K R V H")
    params = (T, K, R_, V, H)
    # the scores and VAD of the streams depend on the head and the stream code only: recorded
    # once per (head, code), so other decision points of the same head take seconds
    key = hashlib.sha256(open(head, "rb").read())
    for m in (A, C, E, R, NT, TX):
        key.update(open(m.__file__, "rb").read())
    key.update(open(__file__, "rb").read())
    cache = C.CACHE / "recorded" / f"negrec_{key.hexdigest()[:16]}.pkl"
    if cache.exists():
        results = pickle.loads(cache.read_bytes())
    else:
        for lang in R.VOICES:          # fetch and decode once, before the workers read the cache
            R.prompts(lang)
        with ProcessPoolExecutor(2) as pool:
            sets = [*R.VOICES, SOUNDS]
            results = list(pool.map(record, sets, [head] * len(sets)))
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(pickle.dumps(results))
        os.replace(tmp, cache)            # an interrupted run leaves no half-written cache
    L = ["# Recorded-speech check: false accepts on human speech\n",
         f"Generated by `models/reference/recipe/recorded_check.sh` (recorded_check.py) for `{head.split('/')[-1]}` "
         f"at T={T} K={K} R={R_} V={V} H={H} (the operating point of training_report.json unless given).\n",
         "Negative speech of four people, recorded (the Asterisk PBX prompts, Debian's "
         "`asterisk-core-sounds-*-g722` 1.6.1-1, 16 kHz; recorded_speech.py): menu sentences, digits, "
         "letters and a few long paragraphs, none of them a command (three English prompts that say "
         "`cancel` are left out); the sets' sound effects (screaming monkeys, beeps, tone sequences) "
         "are streamed apart, in the last row. Streamed as evaluate.py streams negatives (60 prompts per stream, "
         f"0.2–1.2 s gaps, level −14..0 dB), in {DRAWS} seeded draws (order, gaps, levels, noise), each "
         f"clean and at 10 dB SNR: every prompt is played {2 * DRAWS} times, and the hours below are those "
         "streams, gaps included. The report's own false accepts are "
         "counted on synthetic voices and weighted to near-miss words (`concern`, `park position`); "
         "this is everyday speech, the kind openWakeWord counts false accepts on. The Italian and Russian "
         "speech prompts are training negatives (recorded_speech.TRAIN_LANGS, split `trainr`, training report "
         "item 23, in other streams and augmentations than these), so the row that counts is that of the voices "
         "never trained on: Allison Smith (US English, Mexican Spanish) and June Wallack (Canadian French).\n",
         "| voice | licence | prompts | hours (clean + 10 dB) | false accepts | per hour |", "|---|---|---|---|---|---|"]
    tot_fa, tot_h, summary, triggers, sounds_row = 0, 0.0, {}, [], ""
    held_fa, held_h = 0, 0.0       # the voices no training step uses (not in recorded_speech.TRAIN_LANGS)
    for lang, n, negrec in results:
        _, fa = E.evaluate({}, negrec, params)
        n_fa, hours = sum(v[0] for v in fa.values()), sum(v[1] for v in fa.values())
        summary[lang] = dict(prompts=n, hours=hours, false_accepts=n_fa)
        fas = NC.false_accept_texts(negrec, params)
        triggers += [(lang, t, lab) for *_, t, lab in fas]
        if lang == SOUNDS:
            plays = len({(c, si, i) for c, si, i, _, _ in fas if i is not None})
            sounds_row = (f"| sound effects of all five sets (not speech) | | {n} | {hours:.2f} | {n_fa} "
                          f"(on {plays} of {2 * DRAWS * n} plays) | |")
            summary[lang]["plays_fired"] = plays
            continue
        tot_fa, tot_h = tot_fa + n_fa, tot_h + hours
        trained = lang in R.TRAIN_LANGS
        summary[lang]["trained_on"] = trained
        if not trained:
            held_fa, held_h = held_fa + n_fa, held_h + hours
        _, who, lic = R.VOICES[lang]
        L.append(f"| {who}{' — trained on as negatives' if trained else ''} | {lic} | {n} | {hours:.2f} | {n_fa} "
                 f"| {n_fa / hours:.2f} |")
    if held_h:
        L.append(f"| **speech of the voices never trained on** | | | {held_h:.2f} | {held_fa} | **{held_fa / held_h:.2f}** |")
    L += [f"| all speech | | | {tot_h:.2f} | {tot_fa} | {tot_fa / tot_h:.2f} |", sounds_row]
    if triggers:
        L.append("\nFalse accepts (voice: prompt → command): "
                 + ", ".join(f"{lang}: `{t}` → {lab}" for lang, t, lab in triggers) + ".")
    text = "\n".join(L) + "\n"
    print(text)
    if args.head is None:
        (C.REF / "recorded_speech_check.md").write_text(text)
        (C.CACHE / "recorded_check.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
