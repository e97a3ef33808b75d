"""Recordings of people saying the commands: training speech and held-out test speech.

The head is trained on synthetic speech, and recorded negatives of two people (training report
items 1-23). Its accuracy / false-accept curve has stopped moving with more synthetic voices,
and docs/DESIGN.md §3's targets are still out of reach; what the recipe lacks is recordings of people
saying the commands, which none of the package registries it fetches from holds. This module
takes such recordings from a directory (an operator's USB stick, a release engineer's share),
in the layout of Google's Speech Commands data set:

    DIR/<command>/<speaker>_<take>.wav   one command per file; <command> is a line of commands.txt
                                         with spaces as underscores (lights_on); the speaker id is
                                         the file name up to its first "_" (Speech Commands'
                                         `<speaker>_nohash_<n>.wav` fits)
    DIR/none/<speaker>_<take>.wav        optional: speech that is not a command (for false accepts)

Folder names may also be written with spaces (`lights on`) and in any case; speaker ids are
case-insensitive. Hidden files and what operating systems leave on a USB stick (JUNK) are
ignored. Each file is converted to 16 kHz mono 16-bit by sox (any rate, channel count and
sample format sox reads; no dither), cut to its speech with Silero VAD (first to last 32 ms
window with speech probability >= VAD_SPEECH, plus MARGIN_S before and after), peak-normalised
as every other clip of the recipe (neural_tts.peak_normalise) and written to
CACHE/tts/f_<hash>.wav with a manifest, CACHE/tts_manifest_field.json, in the format of
synth.py's. Speakers, never files, are split: a speaker is held out (split "valf", never trained
on; field_check.py measures a head on them) when the SHA-1 of its id falls below the held-out
fraction, the others are training speech (split "trainf", features.py set "trainf", trained on
when train.sh is run with OUTPOST_FIELD_RECORDINGS). See heldout_speakers for the rule with few
speakers.

The rules, each named with what was expected when a file breaks it: the file is in a folder
of the layout, named <speaker>_<take>.wav, and sox reads it; it lasts at most MAX_FILE_S; Silero
finds at least MIN_SPEECH_S of speech in it, and at most MAX_COMMAND_S in a command's file (one
command per file). When a file breaks one, the import writes nothing, unless --skip-bad is
given, which imports the rest and lists what it skipped. --train (train.sh) also requires at
least one speaker's command recordings on the training side.

  python field_recordings.py import DIR [--holdout F] [--skip-bad] [--train]   # F in [0, 1], default 0.25
  python field_recordings.py show                                              # what was imported
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import common as C
import neural_tts as NT

MANIFEST = C.CACHE / "tts_manifest_field.json"
NEGATIVE_DIR = "none"
HOLDOUT_FRACTION = 0.25
VAD_SPEECH = 0.5         # Silero VAD's own default speech threshold (silero-vad's get_speech_timestamps)
VAD_WINDOW = 512         # samples per Silero call at 16 kHz (32 ms), as the runtime calls it
MARGIN_S = 0.15          # kept before and after the speech (s): Silero's onset lags soft consonants
MIN_SPEECH_S = 0.15      # shorter speech is a click or a cut-off take, not a command
MAX_COMMAND_S = 4.0      # longest speech of one command (s); the head sees 1.28 s of embeddings
MAX_FILE_S = 30.0        # longest file (s)
JUNK = {"thumbs.db", "desktop.ini", "system volume information", "$recycle.bin"}   # ignored, any case


def slug(command):
    """The folder name of a command: commands.txt's line with spaces as underscores."""
    return command.replace(" ", "_")


def folders():
    """{folder name: label index} of the layout: one folder per command, NEGATIVE_DIR for C.NONE."""
    return {**{slug(c): i for i, c in enumerate(C.COMMANDS)}, NEGATIVE_DIR: C.NONE}


def label_of(folder):
    """The label index of a folder name (`lights_on`, `lights on`, `Lights_On`), or None."""
    return folders().get(slug(folder.strip().lower()))


def speaker_of(name):
    """The speaker id of a file name (up to its first "_", lower-cased), or None when there is none."""
    stem = Path(name).stem
    sp, sep, rest = stem.partition("_")
    return sp.lower() if sep and sp and rest else None


def speaker_hash(speaker):
    """A speaker id's place in [0, 1): the first 32 bits of its SHA-1 / 2^32."""
    return int(hashlib.sha1(speaker.encode()).hexdigest()[:8], 16) / 2 ** 32


def heldout_speakers(speakers, fraction):
    """The speakers held out of training: those whose speaker_hash is below fraction, so a
    speaker stays on its side when others are added. With two or more speakers and
    0 < fraction < 1, at least one is held out and at least one is not: the lowest hash is held
    out when none is below fraction (or the highest trained on when all are), and that forced
    speaker may change sides when more speakers arrive."""
    speakers = sorted(set(speakers))
    h = {s: speaker_hash(s) for s in speakers}
    out = {s for s in speakers if h[s] < fraction}
    if len(speakers) >= 2 and 0 < fraction < 1:
        if not out:
            out = {min(speakers, key=h.get)}
        if out == set(speakers):
            out.discard(max(speakers, key=h.get))
    return out


def to_16k_mono(path):
    """int16 samples of any audio file sox reads, converted to 16 kHz mono 16-bit (channels
    averaged, no dither). Raises ValueError with sox's message when sox cannot read it."""
    p = subprocess.run(["sox", "-V1", "-D", str(path), "-t", "s16", "-r", str(C.SR), "-c", "1", "-"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        msg = p.stderr.decode(errors="replace").strip().splitlines()
        raise ValueError(f"sox cannot read it ({msg[-1] if msg else 'exit ' + str(p.returncode)})")
    return np.frombuffer(p.stdout, "<i2").copy()


def vad_probs(x):
    """Silero VAD speech probability of each 512-sample (32 ms) window of int16 clip x, with its
    state and 64-sample context carried as the runtime carries them (common.StreamingPipeline)."""
    p = C.StreamingPipeline()
    return np.array([p.vad_frame(x[i:i + VAD_WINDOW].astype(np.float32))
                     for i in range(0, len(x) - VAD_WINDOW + 1, VAD_WINDOW)])


def speech_span(x):
    """(start, end) samples of the speech in x by Silero VAD (first to last window >= VAD_SPEECH),
    or None when no window reaches it."""
    act = np.nonzero(vad_probs(x) >= VAD_SPEECH)[0]
    if len(act) == 0:
        return None
    return int(act[0] * VAD_WINDOW), int((act[-1] + 1) * VAD_WINDOW)


def check_clip(path, label):
    """The clip of one file, cut to its speech and peak-normalised (int16 samples). Raises
    ValueError naming the rule the file breaks."""
    x = to_16k_mono(path)
    dur = len(x) / C.SR
    if dur < MIN_SPEECH_S:
        raise ValueError(f"{dur:.2f} s long, expected at least {MIN_SPEECH_S} s of speech")
    if dur > MAX_FILE_S:
        raise ValueError(f"{dur:.1f} s long, expected at most {MAX_FILE_S:.0f} s")
    span = speech_span(x)
    if span is None:
        raise ValueError(f"no speech found (Silero VAD never reached {VAD_SPEECH}; peak level "
                         f"{20 * np.log10(max(1, int(np.abs(x.astype(np.int32)).max())) / 32768):.0f} dBFS)")
    s, e = span
    if (e - s) / C.SR < MIN_SPEECH_S:
        raise ValueError(f"{(e - s) / C.SR:.2f} s of speech, expected at least {MIN_SPEECH_S} s")
    if label != C.NONE and (e - s) / C.SR > MAX_COMMAND_S:
        raise ValueError(f"{(e - s) / C.SR:.1f} s of speech, expected one command (at most {MAX_COMMAND_S} s)")
    m = int(MARGIN_S * C.SR)
    return NT.peak_normalise(x[max(0, s - m):min(len(x), e + m)])


def scan(root):
    """The files of the layout under root: ([(path, label, speaker)], [(path, problem)]).
    Hidden files and directories (a USB stick's .DS_Store, ._* resource forks) and JUNK are
    ignored."""
    files, bad = [], []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") or part.lower() in JUNK for part in rel.parts) or p.is_dir():
            continue
        if len(rel.parts) != 2:
            bad.append((rel, "not in a command folder: expected DIR/<command>/<speaker>_<take>.wav"))
        elif label_of(rel.parts[0]) is None:
            bad.append((rel, f"unknown folder {rel.parts[0]!r}: expected one of {', '.join(folders())}"))
        elif p.suffix.lower() != ".wav":
            bad.append((rel, "not a .wav file"))
        elif speaker_of(p.name) is None:
            bad.append((rel, "no speaker id: expected <speaker>_<take>.wav"))
        else:
            files.append((p, label_of(rel.parts[0]), speaker_of(p.name)))
    return files, bad


def import_dir(root, fraction=HOLDOUT_FRACTION, skip_bad=False, train=False, log=print):
    """Imports the recordings under root (module docstring): writes the clips and MANIFEST,
    returns the manifest's jobs. Raises SystemExit listing every bad file (and writes nothing)
    unless skip_bad; with train, also when no command recording is on the training side."""
    root = Path(root)
    if not root.is_dir():
        raise SystemExit(f"{root}: not a directory (expected DIR/<command>/<speaker>_<take>.wav)")
    if not 0 <= fraction <= 1:
        raise SystemExit(f"held-out fraction {fraction}: expected a number in [0, 1]")
    files, bad = scan(root)
    total = len(files) + len(bad)
    clips = []
    for path, label, speaker in files:
        try:
            clips.append((path, label, speaker, check_clip(path, label)))
        except ValueError as e:
            bad.append((path.relative_to(root), str(e)))
    for rel, why in bad:
        log(f"{'skipped' if skip_bad else 'error'}: {rel}: {why}")
    if bad and not skip_bad:
        raise SystemExit(f"{len(bad)} of {total} files break the layout's rules (above); nothing imported "
                         "(--skip-bad imports the rest)")
    if not any(label != C.NONE for _, label, _, _ in clips):
        raise SystemExit(f"{root}: no command recordings (expected DIR/<command>/<speaker>_<take>.wav, "
                         f"<command> one of {', '.join(folders())})")
    # the split is over the speakers with command recordings; one with negatives only follows its hash
    talkers = {sp for _, label, sp, _ in clips if label != C.NONE}
    held = heldout_speakers(talkers, fraction)
    held |= {sp for _, _, sp, _ in clips if sp not in talkers and speaker_hash(sp) < fraction}
    if train and all(sp in held for _, label, sp, _ in clips if label != C.NONE):
        raise SystemExit(f"{root}: every speaker with command recordings is held out (--holdout {fraction}), so "
                         "there is nothing to train on: give two speakers or more, or a held-out fraction below 1")
    out_dir = C.CACHE / "tts"
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for path, label, speaker, x in clips:
        rel = str(path.relative_to(root))
        key = "f_" + hashlib.sha1(rel.encode() + b"\0" + x.tobytes()).hexdigest()[:14]
        C.write_wav(out_dir / f"{key}.wav", x)
        jobs.append(dict(key=key, split="valf" if speaker in held else "trainf", label=label, engine="field",
                         voice=speaker, text=C.LABELS[label] if label != C.NONE else "(recorded negative)", src=rel,
                         samples=len(x)))
    tmp = MANIFEST.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(jobs, indent=0))
    os.replace(tmp, MANIFEST)
    log(summary(jobs))
    return jobs


def load():
    """The imported jobs ([] when nothing was imported)."""
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else []


def training_side():
    """The imported training side (split "trainf"), as train.py records it in train_info.json:
    {"speakers": sorted ids, "commands": clips, "negatives": clips}."""
    tr = [j for j in load() if j["split"] == "trainf"]
    return dict(speakers=sorted({j["voice"] for j in tr}), commands=sum(j["label"] != C.NONE for j in tr),
                negatives=sum(j["label"] == C.NONE for j in tr))


def summary(jobs):
    """Speakers and clips per split and label, as text."""
    L = []
    for split, what in (("trainf", "training"), ("valf", "held out")):
        js = [j for j in jobs if j["split"] == split]
        sp = sorted({j["voice"] for j in js})
        per = {C.LABELS[i]: sum(j["label"] == i for j in js) for i in range(len(C.LABELS))}
        L.append(f"{what} ({split}): {len(sp)} speaker{'' if len(sp) == 1 else 's'} ({', '.join(sp) or '-'}), "
                 f"{len(js)} clips, "
                 f"{sum(j['samples'] for j in js) / C.SR / 60:.1f} min; "
                 + ", ".join(f"{k} {v}" for k, v in per.items()))
    return "\n".join(L)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Import recordings of people saying the commands.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    im = sub.add_parser("import", help="convert, check and split DIR/<command>/<speaker>_<take>.wav")
    im.add_argument("dir", type=Path)
    im.add_argument("--holdout", type=float, default=HOLDOUT_FRACTION, metavar="F",
                    help=f"fraction of speakers held out of training (default {HOLDOUT_FRACTION})")
    im.add_argument("--skip-bad", action="store_true", help="import the good files when some break a rule")
    im.add_argument("--train", action="store_true", help="fail when no command recording is on the training side")
    sub.add_parser("show", help="print what was imported")
    a = ap.parse_args(argv)
    if a.cmd == "import":
        import_dir(a.dir, a.holdout, a.skip_bad, a.train)
    else:
        jobs = load()
        print(summary(jobs) if jobs else f"nothing imported ({MANIFEST} does not exist)")


if __name__ == "__main__":
    sys.exit(main())
