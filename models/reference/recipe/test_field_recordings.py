"""Tests of field_recordings.py (the import of recordings of people saying the commands).

Run by scripts/test:  .venv/bin/python -m unittest discover -s models/reference/recipe -p 'test_*.py'
Needs sox and the Silero VAD model of scripts/setup (.outpost/models). The speech is the
committed self-test clip (models/reference/selftest_lights_on.raw: "lights on", espeak-ng voice
of golden.py, 16 kHz s16le), re-encoded the ways recorders write files.
"""
import json
import os
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import numpy as np

_CACHE = tempfile.TemporaryDirectory(prefix="outpost-field-test-")
os.environ["OUTPOST_RECIPE_CACHE"] = _CACHE.name     # before common.py reads it

import common as C  # noqa: E402
import field_recordings as F  # noqa: E402

SPEECH = np.frombuffer((C.REF / "selftest_lights_on.raw").read_bytes(), "<i2")


def write(path, x, rate=C.SR, channels=1, bits=16):
    """Writes int16 16 kHz mono x as a WAV at another rate / channel count / sample size (sox)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["sox", "-V1", "-D", "-t", "s16", "-r", str(C.SR), "-c", "1", "-", "-r", str(rate),
                    "-c", str(channels), "-b", str(bits), str(path)], input=x.astype("<i2").tobytes(), check=True)


def padded(x, before_s, after_s, noise_lsb=20.0, seed=0):
    """x between before_s and after_s seconds of a room's noise floor (Gaussian, noise_lsb RMS)."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.zeros(int(before_s * C.SR)), x, np.zeros(int(after_s * C.SR))])
    return np.clip(np.round(y + rng.normal(0, noise_lsb, len(y))), -32768, 32767).astype(np.int16)


_SAVED = {}


def setUpModule():
    # never the user's cache: setUp deletes the manifest. Another test module may have imported
    # common.py before the environment above was set, so the paths are set here too.
    _SAVED.update(cache=C.CACHE, manifest=F.MANIFEST)
    C.CACHE = Path(_CACHE.name)
    F.MANIFEST = C.CACHE / F.MANIFEST.name
    assert C.CACHE == Path(_CACHE.name) and F.MANIFEST.parent == C.CACHE, C.CACHE


def tearDownModule():
    C.CACHE, F.MANIFEST = _SAVED["cache"], _SAVED["manifest"]


class FieldRecordingsTest(unittest.TestCase):
    def setUp(self):
        self.dir = Path(tempfile.mkdtemp(prefix="field-", dir=_CACHE.name))
        F.MANIFEST.unlink(missing_ok=True)
        shutil.rmtree(C.CACHE / "tts", ignore_errors=True)
        self.log = []

    def written(self):
        return sorted(p.name for p in (C.CACHE / "tts").glob("*.wav")) if (C.CACHE / "tts").exists() else []

    def run_import(self, **kw):
        return F.import_dir(self.dir, log=self.log.append, **kw)

    def test_converts_cuts_and_splits_by_speaker(self):
        write(self.dir / "lights_on" / "alice_take1.wav", padded(SPEECH, 1.5, 2.0), rate=44100, channels=2)
        write(self.dir / "Lights On" / "Alice_take2.WAV", padded(SPEECH, 0.3, 0.3, seed=3))   # spaces, case
        write(self.dir / "lights_on" / "bob_nohash_0.wav", padded(SPEECH, 0.5, 0.5, seed=1), rate=8000, bits=8)
        write(self.dir / "none" / "alice_chat.wav", padded(SPEECH[::-1].copy(), 1.0, 1.0, seed=2), rate=48000)
        (self.dir / "lights_on" / ".DS_Store").write_bytes(b"\0\1")                       # what a USB stick holds
        (self.dir / "Thumbs.db").write_bytes(b"\0")
        write(self.dir / "System Volume Information" / "x_1.wav", SPEECH)
        write(self.dir / ".Trashes" / "stop" / "eve_1.wav", SPEECH)
        jobs = self.run_import(fraction=0.5)
        self.assertEqual(sorted((j["src"], j["label"], j["voice"]) for j in jobs),
                         [("Lights On/Alice_take2.WAV", C.COMMANDS.index("lights on"), "alice"),
                          ("lights_on/alice_take1.wav", C.COMMANDS.index("lights on"), "alice"),
                          ("lights_on/bob_nohash_0.wav", C.COMMANDS.index("lights on"), "bob"),
                          ("none/alice_chat.wav", C.NONE, "alice")])
        self.assertEqual(json.loads(F.MANIFEST.read_text()), jobs)
        # speakers, not files, are split: alice's two files on one side, bob on the other
        side = {j["voice"]: j["split"] for j in jobs}
        self.assertEqual(len({j["split"] for j in jobs if j["voice"] == "alice"}), 1)
        self.assertEqual(sorted(side.values()), ["trainf", "valf"])
        s, e = F.speech_span(SPEECH)
        cut_s = (e - s) / C.SR + 2 * F.MARGIN_S           # the speech Silero finds in the clip, plus the margins
        self.assertLess(cut_s, len(SPEECH) / C.SR - 0.3)  # (the clip itself has silence to cut)
        for j in jobs:
            x = C.read_wav(C.CACHE / "tts" / f"{j['key']}.wav")      # asserts 16 kHz mono 16-bit
            self.assertEqual(j["samples"], len(x))
            # cut to the speech: the 0.3-3.5 s of padding are gone, the margins kept (+- two 32 ms windows)
            self.assertAlmostEqual(len(x) / C.SR, cut_s, delta=0.07, msg=j["src"])
            self.assertEqual(np.abs(x).max(), round(0.7 * 32767), j["src"])   # peak-normalised as every clip
        self.assertEqual(len(self.written()), 4)
        self.assertIn("training (trainf): 1 speaker (", F.summary(jobs))
        self.assertEqual(F.training_side()["speakers"], [next(sp for sp, sd in side.items() if sd == "trainf")])

    def test_every_bad_file_is_named_and_nothing_is_written(self):
        write(self.dir / "stop" / "carol_1.wav", padded(SPEECH, 0.5, 0.5))
        write(self.dir / "lights-on" / "carol_2.wav", padded(SPEECH, 0.5, 0.5))       # unknown folder
        write(self.dir / "carol_3.wav", padded(SPEECH, 0.5, 0.5))                     # not in a folder
        write(self.dir / "cancel" / "carol.wav", padded(SPEECH, 0.5, 0.5))            # no speaker id
        write(self.dir / "confirm" / "carol_4.wav", padded(np.zeros(0, np.int16), 1.0, 1.0, noise_lsb=3))
        write(self.dir / "go_ahead" / "carol_5.wav", np.tile(padded(SPEECH, 0.0, 0.05), 3))  # 3 commands in one file
        (self.dir / "go_ahead" / "carol_6.mp3").write_bytes(b"ID3")
        (self.dir / "volume_up").mkdir()
        (self.dir / "volume_up" / "carol_7.wav").write_bytes(b"RIFF\0\0\0\0WAVEjunk")   # not a readable WAV
        write(self.dir / "stop" / "carol_8.wav", SPEECH[:1200])                        # 75 ms
        write(self.dir / "none" / "carol_9.wav", padded(np.zeros(0, np.int16), 16.0, 15.0))   # 31 s
        with self.assertRaises(SystemExit) as e:
            self.run_import()
        self.assertIn("9 of 10 files", str(e.exception))
        self.assertFalse(F.MANIFEST.exists())
        self.assertEqual(self.written(), [])
        for rel, why in [("lights-on/carol_2.wav", "unknown folder 'lights-on': expected one of stop, go_ahead"),
                         ("carol_3.wav", "not in a command folder"),
                         ("cancel/carol.wav", "no speaker id"),
                         ("confirm/carol_4.wav", "no speech found"),
                         ("go_ahead/carol_5.wav", "expected one command"),
                         ("go_ahead/carol_6.mp3", "not a .wav file"),
                         ("volume_up/carol_7.wav", "sox cannot read it"),
                         ("stop/carol_8.wav", "0.07 s long, expected at least 0.15 s of speech"),
                         ("none/carol_9.wav", "31.0 s long, expected at most 30 s")]:
            line = next((l for l in self.log if l.startswith(f"error: {rel}: ")), "")
            self.assertIn(why, line, rel)
        # --skip-bad imports the one good file and lists the others as skipped
        jobs = self.run_import(skip_bad=True)
        self.assertEqual([j["src"] for j in jobs], ["stop/carol_1.wav"])
        self.assertIn("skipped: carol_3.wav: not in a command folder", "\n".join(self.log))

    def test_only_negatives_or_empty_is_an_error(self):
        with self.assertRaisesRegex(SystemExit, "no command recordings"):
            self.run_import()
        write(self.dir / "none" / "dave_1.wav", padded(SPEECH, 0.5, 0.5))
        with self.assertRaisesRegex(SystemExit, "no command recordings"):
            self.run_import()
        with self.assertRaisesRegex(SystemExit, "not a directory"):
            F.import_dir(self.dir / "missing", log=self.log.append)
        with self.assertRaisesRegex(SystemExit, r"expected a number in \[0, 1\]"):
            self.run_import(fraction=1.5)

    def test_training_needs_a_training_speaker(self):
        write(self.dir / "stop" / "dave_1.wav", padded(SPEECH, 0.5, 0.5))
        write(self.dir / "none" / "erin_1.wav", padded(SPEECH, 0.5, 0.5))     # negatives only: never forced
        jobs = self.run_import(fraction=0.25, train=True)
        self.assertEqual({j["voice"]: j["split"] for j in jobs},
                         {"dave": "trainf", "erin": "valf" if F.speaker_hash("erin") < 0.25 else "trainf"})
        with self.assertRaisesRegex(SystemExit, "nothing to train on"):
            self.run_import(fraction=1.0, train=True)
        self.assertEqual({j["split"] for j in self.run_import(fraction=1.0)}, {"valf"})   # measuring only

    def test_heldout_speakers(self):
        sp = [f"op{i:02d}" for i in range(40)]
        held = F.heldout_speakers(sp, 0.25)
        self.assertTrue(5 <= len(held) <= 15, len(held))                  # about a quarter
        self.assertEqual(held, F.heldout_speakers(list(reversed(sp)), 0.25))  # order does not matter
        # a speaker stays on its side when others join
        self.assertEqual(F.heldout_speakers(sp + ["new1", "new2"], 0.25) & set(sp), held)
        self.assertEqual(F.heldout_speakers(sp, 0.0), set())
        self.assertEqual(F.heldout_speakers(sp, 1.0), set(sp))
        for pair in (["a", "b"], ["x", "y"], ["op01", "op02"]):      # two speakers: one on each side
            self.assertEqual(len(F.heldout_speakers(pair, 0.25)), 1)
            self.assertEqual(len(F.heldout_speakers(pair, 0.9)), 1)
        self.assertEqual(F.heldout_speakers(["solo"], 0.25), set())  # one speaker: trained on (its hash: 0.29)

    def test_speaker_of(self):
        self.assertEqual(F.speaker_of("0a7c2a8d_nohash_0.wav"), "0a7c2a8d")
        self.assertEqual(F.speaker_of("Alice_take1.WAV"), "alice")
        self.assertIsNone(F.speaker_of("alice.wav"))
        self.assertIsNone(F.speaker_of("_take1.wav"))
        self.assertIsNone(F.speaker_of("alice_.wav"))


if __name__ == "__main__":
    unittest.main()
