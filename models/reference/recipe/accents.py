"""Pronunciation variants: a phrase as espeak-ng phonemes, changed by the sound rules of other
English accents, for training voices to say (espeak-ng `[[...]]` phoneme input).

The training voices speak six espeak-ng English dialects (common.ESPEAK_TRAIN_LANGS); a
speaker of any other accent moves vowels and consonants the verifier never heard move. These
rules are the textbook accent features of J. C. Wells, *Accents of English* (Cambridge, 1982;
vol. 1 §3 for the lexical sets), each common to several accents, none one accent's table:

- `h_drop`: /h/ dropped before a vowel (most of England, Wales, much of the Caribbean).
- `full_vowels`: reduced vowels /@ I/ said full (syllable-timed Englishes: Caribbean, West
  African, Indian, Singapore), `@L` as a vowel + /l/.
- `monophthongs`: FACE /eI/ and GOAT /oU/ as [e:] and [o:] (Scottish, Irish, Welsh, northern
  England, Caribbean, Indian).
- `nurse`: NURSE /3:/ as a rhotic or front vowel (Scottish [Ir], [Vr]; Irish, Caribbean [Er]).
- `rhotic`: post-vocalic /r/ said after START /A@/ and NORTH/FORCE /o@/ (rhotic accents).
- `lot`: LOT /0/ unrounded or lengthened (North American [A:], Caribbean [a]; [O]).
- `strut`: STRUT /V/ as [U] (northern England) or [0].
- `trap`: TRAP /a/ open or long ([aa], [A:]).
- `t_glottal`: /t/ at a word's end as a glottal stop (London, Estuary, urban Scotland, US).
- `clusters`: a word's final /ts/ /nd/ /st/ /kt/ reduced to its first consonant (Caribbean,
  West African, African-American English).
- `th_stop`: /T D/ as [t d] (Irish, Caribbean, West African, Indian).
- `stress`: the primary stress on another syllable of a word of two or more (Indian,
  Caribbean, West African).

`variant(text, lang, rng)` applies each rule with probability P_RULE (at least one that
changes something) to `espeak-ng -q -x -v lang text` and returns the `[[...]]` input.
Only the phoneme names of espeak-ng's base `en` table are produced, said by the voice's own
dialect table; the held-out dialects' tables (en-029 `en-wi`, en-gb-x-gbcwmd `en-wm`) are never
read or used.
"""
import re
import subprocess

# espeak-ng's `en` phoneme table and the training dialects' additions (its phontab; base1 consonants)
VOWELS = ["aI@", "aI3", "aU@", "i@3", "I2#", "a#2", "oU#", "@L", "@2", "@5", "@#", "a#", "a2", "aa", "A:", "A@", "A#",
          "E#", "E2", "I#", "I2", "0#", "02", "O2", "3:", "i:", "O:", "O@", "o@", "u:", "aU", "oU", "aI", "eI", "OI",
          "e@", "i@", "U@", "IR", "VR", "o:", "e:", "e#", "aI2", "a/", "A~", "O~", "@", "3", "a", "i", "U", "E", "I", "0",
          "V", "O"]
CONSONANTS = ["z/2", "l/2", "tS", "dZ", "t#", "t2", "d#", "z#", "w#", "r/", "r-", "l/", "p", "b", "t", "d", "k",
              "g", "f", "v", "T", "D", "s", "z", "S", "Z", "h", "m", "n", "N", "l", "L", "r", "j", "w", "x", "?"]
MARKS = ["'", ",", "%", "=", ";", "_:", "_!", "_", "-", "||", "|"]
TOKENS = sorted(VOWELS + CONSONANTS + MARKS, key=len, reverse=True)
REDUCED = {"@", "@2", "@5", "@#", "a#", "a#2", "I#", "I2", "I2#", "3"}
P_RULE = 0.35


def tokens(word):
    """espeak-ng phoneme word -> its phoneme names (longest match); ValueError on one not in `en`."""
    out, i = [], 0
    while i < len(word):
        for t in TOKENS:
            if word.startswith(t, i):
                out.append(t)
                i += len(t)
                break
        else:
            raise ValueError(f"{word!r}: phoneme at {word[i:]!r} is not in espeak-ng's en table")
    return out


def phonemes(text, lang):
    """`text` as espeak-ng (`-q -x -v lang`) phonemes: [[phoneme names] per word]."""
    out = subprocess.run(["espeak-ng", "-q", "-x", "-v", lang, "--", text], capture_output=True, text=True,
                         check=True).stdout
    return [tokens(w) for w in out.split()]


def _vowel(t):
    return t in VOWELS


def h_drop(w, r):
    return [t for i, t in enumerate(w) if not (t == "h" and i + 1 < len(w) and (_vowel(w[i + 1]) or w[i + 1] in MARKS))]


def full_vowels(w, r):
    out = []
    for t in w:
        if t == "@L":
            out += [["E", "0", "V"][r.integers(3)], "l"]
        elif t in REDUCED:
            out.append(["a", "E", "0"][r.integers(3)])
        else:
            out.append(t)
    return out


def _swap(table):
    def rule(w, r):
        out = []
        for t in w:
            opts = table.get(t)
            out += opts[r.integers(len(opts))] if opts else [t]
        return out
    return rule


monophthongs = _swap({"eI": [["e:"]], "oU": [["o:"]], "oU#": [["o:"]]})
nurse = _swap({"3:": [["VR"], ["IR"], ["E", "r"]]})
_RHOTIC = {"A@": [["A:", "r"]], "o@": [["O:", "r"], ["o:", "r"]], "O@": [["O:", "r"]]}


def rhotic(w, r):
    out = []
    for i, t in enumerate(w):
        opts = _RHOTIC.get(t) if i + 1 == len(w) or w[i + 1] != "r" else None   # not where /r/ is said already
        out += opts[r.integers(len(opts))] if opts else [t]
    return out


lot = _swap({"0": [["A:"], ["a"], ["O"]], "02": [["A:"], ["O"]], "O2": [["A:"], ["a"]]})
strut = _swap({"V": [["U"], ["0"]]})
trap = _swap({"a": [["aa"], ["A:"]]})
th_stop = _swap({"T": [["t"]], "D": [["d"]]})


def t_glottal(w, r):
    return w[:-1] + ["?"] if len(w) > 2 and w[-1] in ("t", "t#", "t2") and _vowel(w[-2]) else w


def clusters(w, r):
    if len(w) > 2 and (w[-2], w[-1]) in {("t", "s"), ("n", "d"), ("s", "t"), ("k", "t")} and _vowel(w[-3]):
        return w[:-1]
    return w


def stress(w, r):
    if "'" not in w:
        return w
    cur = sum(1 for t in w[:w.index("'")] if _vowel(t))       # the vowel that carried it
    b = [t for t in w if t not in MARKS]
    vi = [i for i, t in enumerate(b) if _vowel(t)]
    if len(vi) < 2:
        return w
    k = vi[[j for j in range(len(vi)) if j != cur][r.integers(len(vi) - 1)]]
    at = k - 1 if k > 0 and not _vowel(b[k - 1]) else k     # before the vowel's onset consonant
    return b[:at] + ["'"] + b[at:]


RULES = {"h_drop": h_drop, "full_vowels": full_vowels, "monophthongs": monophthongs, "nurse": nurse,
         "rhotic": rhotic, "lot": lot, "strut": strut, "trap": trap, "t_glottal": t_glottal,
         "clusters": clusters, "th_stop": th_stop, "stress": stress}


def bare(words):
    """Words without stress marks: what two pronunciations must differ in."""
    return tuple(tuple(t for t in w if t not in MARKS) for w in words)


def variant(text, lang, rng, avoid=(), tries=20):
    """(`[[...]]` espeak-ng input, names of the rules applied) for `text` said with the rules of
    other accents over the `lang` dialect's phonemes; each rule with probability P_RULE, at least
    one that changes the phonemes, never one whose phonemes (stress aside) are in `avoid` (a set of
    bare() of phrases it must not become, e.g. the near misses). None after `tries` draws."""
    base = phonemes(text, lang)
    for _ in range(tries):
        words, used = [list(w) for w in base], []
        for name, rule in RULES.items():
            if rng.random() < P_RULE:
                new = [rule(w, rng) for w in words]
                if bare(new) != bare(words):
                    words, used = new, used + [name]
        if used and bare(words) != bare(base) and bare(words) not in avoid:
            return "[[" + " ".join("".join(w) for w in words) + "]]", used
    return None
