"""Recorded human speech: the Asterisk PBX voice prompts, as packaged by Debian.

The recipe's training and test speech is synthetic. These prompts are speech of four people,
recorded in a studio for telephone menus, 16 kHz (the G.722 wideband packages): Allison Smith
in US English and Mexican Spanish, June Wallack in Canadian French, Carlo Flora in Italian, and
the Russian voice of Maxim Topal's IvrvoiceRU set; ~2 h 11 min in 2 831 prompts (digits,
letters, menu sentences, a few long paragraphs, and a few sound effects: SOUNDS). None of them
says a command of the vocabulary (English prompts whose transcript contains one are left out:
`commands_in`), so they are negative speech: recorded_check.py streams them through the
pipeline for false accepts per hour of real speech, the way openWakeWord measures false
accepts on recorded conversation rather than on near-miss words.

Licences (Debian's copyright files): English, Spanish and French CC-BY-SA-3.0, Italian and
Russian CC-BY-3.0. Nothing is installed system-wide: the pinned .deb files below (audio, and
the transcripts that come in the language's base package) are fetched from deb.debian.org,
checked against their SHA-256 and unpacked with `dpkg-deb -x` into CACHE/recorded; the G.722
files are decoded by FFmpeg's G.722 decoder through PyAV (`av`, pinned in
requirements-neural.txt).

  python recorded_speech.py          # fetch, decode, print the prompts per voice and their length
  python recorded_speech.py trainr   # write the training negatives of TRAIN_LANGS (features.py split "trainr")
"""
import gzip
import json
import os
import sys

import numpy as np

import common as C

DEBIAN = "https://deb.debian.org/debian/pool/main/a/asterisk-core-sounds/"
VERSION = "1.6.1-1"        # Debian bookworm
DEBS = {
    "en-g722": "38c5261820b406dcb0ecb37675720da2b0864850690690352ca52707eb623806",
    "en": "973e797d28e37fa6ca3c0a9d6fa717e77cf1268ae916bf09fd3503113cdffa50",
    "es-g722": "e4e3b4281057d3b81b779298fd6be705f57411513955c518eed1bcaabbd615b8",
    "es": "9afdab7f559f036649fb406e625899306ca1004df8ebe39c30bfbd5912d66f74",
    "fr-g722": "7add61d5e42279ecff1bbdf842a5a946ac3644fac9a0fe44384731aa7270c8e0",
    "fr": "04c82c78c570c43a7136cbc5e2488d0c470b775468dff9fbce4a131b18cf1056",
    "it-g722": "46b4cf7afc508a5fcfc051b7ea233251c0d195dd4ef83cc4b7facb4c6429b016",
    "it": "3884d9457e12f21caa018c18f0d587df5d53ebea14b673d8453a134c5941ab3b",
    "ru-g722": "673b4238a6b8269960f055d868c6a11083f7a0d00979167cb01554046b48ed9b",
    "ru": "28a61616bb0cd3345a7ea532dec4df9f071e5d0fa9f8c1a563ea9669002f39ab",
}
# language -> (speaker directory under usr/share/asterisk/sounds, speaker, licence)
VOICES = {
    "en": ("en_US_f_Allison", "Allison Smith (US English, female)", "CC-BY-SA-3.0"),
    "es": ("es_MX_f_Allison", "Allison Smith (Mexican Spanish, female)", "CC-BY-SA-3.0"),
    "fr": ("fr_CA_f_June", "June Wallack (Canadian French, female)", "CC-BY-SA-3.0"),
    "it": ("it_IT_m_Carlo", "Carlo Flora (Italian, male)", "CC-BY-3.0"),
    "ru": ("ru_RU_f_IvrvoiceRU", "IvrvoiceRU (Russian, female)", "CC-BY-3.0"),
}
ROOT = C.CACHE / "recorded" / "root"
# Prompts that are sounds, not speech (the same names in every language): a recording of
# screaming monkeys, beeps and tone sequences. (`spy-zap` is the spoken word "Zap", speech.)
SOUNDS = {"tt-monkeys", "beep", "beeperr", "ascending-2tone", "descending-2tone", "confbridge-join",
          "confbridge-leave"}
# Voices whose speech prompts are training negatives (split "trainr", training report item 23):
# the two CC-BY-3.0 sets, so the head's training data carries no share-alike licence. Allison
# Smith (en, es) and June Wallack (fr) are never trained on.
TRAIN_LANGS = ("it", "ru")


def deb_name(part):
    return f"asterisk-core-sounds-{part}_{VERSION}_all.deb"


def unpacked(root):
    """True if `root` holds every voice's prompt directory and transcript."""
    return all((root / "usr/share/asterisk/sounds" / d).is_dir() and transcript_path(root, lang).exists()
               for lang, (d, _, _) in VOICES.items())


def transcript_path(root, lang):
    return root / f"usr/share/doc/asterisk-core-sounds-{lang}/core-sounds-{lang}.txt.gz"


def fetch():
    """Downloads, verifies and unpacks the pinned .deb files into CACHE/recorded, once
    (common.fetch_debs). Raises RuntimeError naming the file whose SHA-256 does not match."""
    C.fetch_debs(DEBIAN, {deb_name(part): sha for part, sha in DEBS.items()}, ROOT.parent, ROOT, unpacked,
                 "recorded_speech.py")


def transcripts(lang):
    """{prompt name (path under the speaker directory, no extension): transcript} of one language,
    from the package's core-sounds-LANG.txt ("name: text" lines)."""
    out = {}
    with gzip.open(transcript_path(ROOT, lang), "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            name, sep, text = line.partition(":")
            if sep and name.strip() and " " not in name.strip():
                out[name.strip()] = text.strip()
    return out


def decode_g722(path):
    """One .g722 file (raw G.722 at 64 kbit/s, 16 kHz audio) -> int16 samples at 16 kHz, shape
    [n]. Raises RuntimeError if the decoder reports another sample rate. Raw G.722 has no header,
    so any bytes decode: the SHA-256 pins of the .debs are what vouch for the files."""
    import av
    with av.open(str(path), format="g722") as c:
        frames = [fr.to_ndarray().reshape(-1) for fr in c.decode(audio=0)]
        rate = c.streams.audio[0].rate
    if rate != C.SR:
        raise RuntimeError(f"{path}: decoded at {rate} Hz, expected {C.SR}")
    return np.concatenate(frames).astype(np.int16) if frames else np.zeros(0, np.int16)


def commands_in(text):
    """The vocabulary's commands said in an English transcript (texts.contains_command per command)."""
    import texts as TX
    return [c for c in C.COMMANDS if TX.contains_command(text, [c])]


def prompts(lang):
    """[(name, transcript, int16 clip at 16 kHz)] of one language, sorted by name, the SOUNDS and
    the silence files among them; English prompts that say a command are left out. Decoded once
    into CACHE/recorded/LANG-VERSION.npz."""
    fetch()
    cache = ROOT.parent / f"{lang}-{VERSION}.npz"      # a new pin decodes again
    if not cache.exists():
        base = ROOT / "usr/share/asterisk/sounds" / VOICES[lang][0]
        names = sorted(str(p.relative_to(base))[:-len(".g722")] for p in base.rglob("*.g722"))
        clips = [decode_g722(base / f"{n}.g722") for n in names]
        tmp = cache.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, names=np.array(names), lengths=np.array([len(x) for x in clips]),
                 audio=np.concatenate(clips))
        os.replace(tmp, cache)
    z = np.load(cache)
    tr = transcripts(lang)
    offsets = np.concatenate([[0], np.cumsum(z["lengths"])])
    out = []
    for i, n in enumerate(z["names"]):
        text = tr.get(str(n), "")
        if lang == "en" and commands_in(text):
            continue
        out.append((str(n), text, z["audio"][offsets[i]:offsets[i + 1]].copy()))
    return out


def prompt_kind(name, x):
    """"sound" for a SOUNDS prompt, None for a silence file or an empty clip, else "speech"."""
    if name.startswith("silence/") or not len(x):
        return None
    return "sound" if name in SOUNDS else "speech"


def write_training_split():
    """Writes the speech prompts of TRAIN_LANGS (no sound effects, no silence files) as
    CACHE/tts/r_LANG_NAME.wav (int16 mono, 16 kHz; peak amplitude 0.7 of int16 full scale, as the
    synthetic clips), and their jobs (split "trainr", engine "recorded", label none) to
    CACHE/tts_manifest_recorded.json for features.py. The WAVs are written every time, so they
    always hold the pinned release's audio. Returns the number of prompts."""
    import neural_tts as NT
    d = C.CACHE / "tts"
    d.mkdir(parents=True, exist_ok=True)
    jobs = []
    for lang in TRAIN_LANGS:
        for name, text, x in prompts(lang):
            if prompt_kind(name, x) != "speech":
                continue
            key = f"r_{lang}_{name.replace('/', '_')}"
            C.write_wav(d / f"{key}.wav", NT.peak_normalise(x))
            jobs.append(dict(key=key, split="trainr", engine="recorded", voice=lang, label=C.NONE, text=text))
    (C.CACHE / "tts_manifest_recorded.json").write_text(json.dumps(jobs))
    return len(jobs)


if __name__ == "__main__":
    if sys.argv[1:] == ["trainr"]:
        print(f"trainr: {write_training_split()} prompts of {', '.join(TRAIN_LANGS)}")
        sys.exit(0)
    for lang, (_, who, lic) in VOICES.items():
        ps = prompts(lang)
        print(f"{lang}: {who}, {lic}: {len(ps)} prompts, {sum(len(x) for _, _, x in ps) / C.SR / 60:.1f} min, "
              f"{sum(1 for _, t, _ in ps if t)} with a transcript")
