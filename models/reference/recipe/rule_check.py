"""Sizes the verifier's decision rule on speech it is neither trained nor tested on: θ (nats a
command must beat `none` by, verifier.json's `theta`) and the command gap (nats it must beat every
other command by, `outpostd --command-gap`).

- False accepts: the recorded Asterisk prompts in Mexican Spanish and Canadian French
  (recorded_speech.py; the verifier trains on the Italian and Russian ones, stream_check.py tests
  on the US English ones) and the English voice lines of Warzone 2100 and Fish Fillets NG
  (verifier_train.game_english: acted, radio-processed, cries and laughter; the shipped verifier
  never trained on them, stream_check.py tests on Hedgewars'), each prompt or line as one 3 s
  window ending 0.1 s after it.
- Commands: the neural-voice check's command clips (neural_check.py: two Kokoro styles, SVOX
  Pico en-GB, RHVoice bdl and clb; no training step uses these voices), each as one window ending
  0.1 s after it, clean and with pink, white and vehicle-engine noise at 10 and 5 dB
  (verifier_check.noisy, seeded per clip). The clips come from CACHE/neural, made by
  `neural_check.sh --synth-only 1/1`; the ones missing are counted and left out.

Every window is scored once by the verifier's ONNX graphs (the decoder's prior veto included),
then every (θ, gap) of the grid decides it as the end of an utterance does: the best command when
it beats `none` by θ and every other command by the gap, else none. The point printed is the one
with the most right commands among those whose false accepts and wrong commands are no more than
those of `--baseline` (default: the shipped rule, θ 1.5 and a 1-nat gap), and the false accepts at
it by source. The scores are written to CACHE/rule_check.json with the grid, for offline work.

  python rule_check.py [--verifier DIR] [--theta 2,1.5,1,0.5] [--gap 1,1.5,2] [--baseline 1.5,1]
--verifier: verifier_export.py's directory (default .outpost/verifier). Runs in .venv-verifier;
~9 min on 2 cores (1 054 prompts, 658 game lines, 5 040 command windows).
"""
import argparse
import json
from pathlib import Path

import numpy as np

import common as C
import neural_check as NC
import recorded_speech as R
import stream_replay as SR
import verifier_check as VC
import verifier_train as VT

LANGS = ("es", "fr")
TAIL = 1600                 # samples between the speech's end and the window's end (0.1 s)
CONDITIONS = [(None, None)] + [(k, s) for s in (10, 5) for k in ("pink", "white", "engine")]


def decide(s, n, theta, gap):
    """The label index a window's scores s (labels in order, `none` last, n of them) name
    under (theta, gap), or None."""
    best, margin, command_gap = SR.margins(s, n)
    return best if margin >= theta and command_gap >= gap else None


def tally(neg, pos, n, theta, gap):
    """(false accepts, right, wrong) of the scored windows under (theta, gap)."""
    fa = sum(decide(s, n, theta, gap) is not None for s in neg)
    got = [(decide(s, n, theta, gap), label) for s, label in pos]
    return fa, sum(d == lab for d, lab in got), sum(d is not None and d != lab for d, lab in got)


def main():
    floats = lambda v: [float(x) for x in v.split(",")]   # noqa: E731
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--verifier", type=Path, default=C.REPO / ".outpost" / "verifier")
    ap.add_argument("--theta", type=floats, default=[2.0, 1.5, 1.0, 0.5])
    ap.add_argument("--gap", type=floats, default=[1.0, 1.5, 2.0])
    ap.add_argument("--baseline", type=floats, default=[1.5, 1.0], help="theta,gap the point must not do worse than")
    a = ap.parse_args()
    sc = SR.Scorer(a.verifier)
    score, n = sc.score, len(sc.labels)

    neg, neg_source, sources = [], [], {}          # sources: name -> (windows, hours)

    def negative(source, x):
        neg.append(score(VT.place(x, TAIL)))
        neg_source.append(source)
        k, h = sources.get(source, (0, 0.0))
        sources[source] = (k + 1, h + len(x) / C.SR / 3600)
    for lang in LANGS:
        for name, _, x in R.prompts(lang):
            if R.prompt_kind(name, x) == "speech":
                negative(f"Asterisk {lang}", x.astype(np.float32) / 32768)
    for x, name in VT.game_english():
        negative(name.split("/")[0], x)
    pos, missing = [], 0
    for check in NC.CHECKS:
        for key, _text, label, _voice, _p in NC.job_lists(check)[0]:
            f = C.CACHE / "neural" / f"{key}.wav"
            if not f.exists():
                missing += 1
                continue
            x = VT.place(C.read_wav(f).astype(np.float32) / 32768, TAIL)
            for kind, snr in CONDITIONS:
                pos.append((score(VC.noisy(x, kind, snr, len(x), None, key) if kind else x), label))
    print("negatives: " + ", ".join(f"{k} {m} ({h * 60:.1f} min)" for k, (m, h) in sources.items())
          + f"; {len(pos) // len(CONDITIONS)} command clips ({missing} not made), {len(CONDITIONS)} conditions: "
          f"{len(pos)} windows")
    print("| θ | gap | false accepts | right | wrong |\n|---|---|---|---|---|")
    rows = {(t, g): tally(neg, pos, n, t, g) for t in a.theta for g in a.gap}
    base = tally(neg, pos, n, *a.baseline)
    for (t, g), (fa, right, wrong) in rows.items():
        print(f"| {t:g} | {g:g} | {fa} | {right} | {wrong} |")
    ok = {k: v for k, v in rows.items() if v[0] <= base[0] and v[2] <= base[2]}
    if ok:
        t, g = max(ok, key=lambda k: (ok[k][1], k[0], k[1]))
        print(f"point: θ {t:g}, gap {g:g} (baseline θ {a.baseline[0]:g}, gap {a.baseline[1]:g}: {base[0]} false accepts, "
              f"{base[1]} right, {base[2]} wrong)")
        fa = [src for s, src in zip(neg, neg_source) if decide(s, n, t, g) is not None]
        print("false accepts at the point: " + (", ".join(f"{k} {fa.count(k)}" for k in sources) if fa else "none"))
    # The scores too, for offline work on the rule (labels in order, `none` last).
    (C.CACHE / "rule_check.json").write_text(json.dumps({
        "rows": [[*k, *v] for k, v in rows.items()], "baseline": base, "labels": sc.labels,
        "negatives": [[src, s] for src, s in zip(neg_source, neg)],
        "commands": [[label, s] for s, label in pos]}))


if __name__ == "__main__":
    main()
