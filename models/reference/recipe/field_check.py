"""Streaming check of a head on the held-out speakers of field_recordings.py: recordings of
people saying the commands, whom no training step has heard (split "valf").

Same protocol as evaluate.py and neural_check.py: the utterances are concatenated into streams
with 1.2-2.2 s gaps (evaluate.record_streams), noise over the whole stream (clean = 1 LSB floor;
20/10/5 dB with evaluate.py's noise cycle), every frame through the literal StreamingPipeline,
and the decision at training_report.json's operating point. The held-out speakers' negative
recordings (DIR/none), if any, are streamed clean and at 10 dB for false accepts per hour, and
are the babble noise; without them the babble is their command recordings played backwards
(speech-shaped, no command words) and no false-accept rate is given. Needs only the venv of
scripts/setup and the imported recordings, not the recipe's cache of synthetic speech. Prints accuracy per condition, per speaker and per command, and the
files missed or misheard in clean streams (to listen to). For the shipped head at its operating
point the record is also written to CACHE/field_check.md (not to the repository: the recordings
are the user's). When the head's training record (common.train_info_path) lists a held-out
speaker among the speakers it was trained on (the recordings were imported again with another
split after training), the check says so above its numbers: they are not held out.

  python field_check.py                          # the shipped head at its operating point
  python field_check.py HEAD.onnx [T K R V H]    # another head / decision point
"""
import argparse
import json
import sys

import numpy as np

import augment as A
import check_clips as CC
import common as C
import evaluate as E
import field_recordings as F
import neural_check as N

TAGS = ("field", "field-neg")     # stream seeds of evaluate.record_streams
MAX_LISTED = 40                   # files listed as missed / misheard


def trained_speakers(head):
    """The field speakers head was trained on, from its train_info (empty when unknown)."""
    p = C.train_info_path(head)
    return set(json.loads(p.read_text()).get("field", {}).get("speakers", [])) if p.exists() else set()


def report(head, params, jobs):
    """The check's markdown for head at params (T, K, R, V, H) on the "valf" jobs of jobs, or None
    when no command recording is held out."""
    held = [j for j in jobs if j["split"] == "valf"]
    pos = [(j, C.read_wav(C.CACHE / "tts" / f"{j['key']}.wav")) for j in held if j["label"] != C.NONE]
    neg = [(j, C.read_wav(C.CACHE / "tts" / f"{j['key']}.wav")) for j in held if j["label"] == C.NONE]
    if not pos:
        return None
    # babble: the negative recordings, else the command recordings played backwards (speech-shaped and
    # unintelligible: no command words in the noise)
    bab = [x for _, x in neg[::3]] or [x[::-1].copy() for _, x in pos[::3]]
    bank = A.NoiseBank.of_speech(bab)
    recs, negrec = E.record_streams(pos, neg, head, bank, TAGS, lambda it: it[0]["label"],
                                    lambda it: (it[0]["voice"], it[0]["src"]), lambda it: it[0]["src"])
    out, fa = E.evaluate(recs, negrec, params)
    speakers = sorted({j["voice"] for j, _ in pos})
    seen = sorted(trained_speakers(head) & {j["voice"] for j in held})
    T, K, R, V, H = params
    L = ["# Field recordings: held-out speakers\n"]
    if seen:
        L.append(f"**Not held out: {', '.join(seen)} were trained on by this head** (its train_info); the recordings "
                 "were imported again with another split after training, so these numbers overstate it.\n")
        print(f"warning: {', '.join(seen)} were trained on by {head}", file=sys.stderr)
    L += [
         f"`field_check.py` for `{head.split('/')[-1]}` at T={T} K={K} R={R} V={V} H={H}: {len(pos)} command "
         f"recordings of {len(speakers)} held-out speakers ({', '.join(speakers)}), streamed as evaluate.py does; "
         f"the babble noise is {'their negative recordings' if neg else 'their command recordings played backwards'}.\n",
         "| condition | accuracy | n | misses | wrong label | median detection after speech end |",
         "|---|---|---|---|---|---|"]
    for cname, _ in E.CONDITIONS:
        rows = out[cname][0]
        lat = [r[3] for r in rows if r[1] == r[0]]
        L.append(f"| {cname} | **{100 * np.mean([r[1] == r[0] for r in rows]):.1f} %** | {len(rows)} | "
                 f"{sum(r[1] is None for r in rows)} | {sum(r[1] is not None and r[1] != r[0] for r in rows)} | "
                 + (f"{np.median(lat):.2f} s |" if lat else "- |"))
    hours = sum(h for _, h in fa.values())
    if hours:
        n_fa = sum(n for n, _ in fa.values())
        L.append(f"\nFalse accepts: {n_fa} in {hours:.3f} h of the held-out speakers' negative recordings "
                 f"(clean + 10 dB) = **{n_fa / hours:.1f} per hour**.")
        fas = N.false_accept_texts(negrec, params)
        if fas:
            L.append("Fired on: " + ", ".join(f"`{t}` → {l}" for *_, t, l in fas[:MAX_LISTED]) + ".")
    else:
        L.append("\nNo negative recordings of the held-out speakers (DIR/none): no false-accept rate.")
    # rows: (label, detected, ...) + meta (speaker, file)
    def cell(a, n):
        return f"{a:.0f} % ({n})" if n else "-"
    L += [""] + E.accuracy_table(out, "speaker", [(sp, lambda r, sp=sp: r[4] == sp) for sp in speakers], cell)
    L += [""] + E.accuracy_table(out, "command", [(cmd, lambda r, li=li: r[0] == li)
                                                  for li, cmd in enumerate(C.COMMANDS)], cell)
    wrong = [r for r in out["clean"][0] if r[1] != r[0]]
    if wrong:
        L.append(f"\nClean streams, missed or misheard ({len(wrong)}): "
                 + ", ".join(f"`{r[5]}` ({'miss' if r[1] is None else C.LABELS[r[1]]})" for r in wrong[:MAX_LISTED])
                 + (" …" if len(wrong) > MAX_LISTED else "") + ".")
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description="Streaming check of a head on the held-out field recordings.")
    CC.add_head_and_point(ap)
    args = ap.parse_args()
    head, params = CC.head_and_point(ap, args)
    jobs = F.load()
    if not jobs:
        raise SystemExit(f"nothing imported ({F.MANIFEST} does not exist): run field_recordings.py import DIR first")
    text = report(head, params, jobs)
    record = C.CACHE / "field_check.md"
    if args.head is None:
        record.unlink(missing_ok=True)        # never leave the record of an earlier import behind
    if text is None:      # not an error: every speaker was imported as training speech
        print("no held-out speaker has command recordings, nothing to check (field_recordings.py import DIR "
              "--holdout F with F > 0 and two speakers or more holds some out; F = 1 tests on every speaker)")
        return
    print(text)
    if args.head is None:
        record.write_text(text)


if __name__ == "__main__":
    main()
