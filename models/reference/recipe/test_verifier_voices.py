"""Tests of the verifier's training voices (verifier_voices.py): what each engine's job list
holds, without synthesising anything.

  .venv/bin/python -m unittest discover -s models/reference/recipe -p 'test_verifier_voices.py'
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common as C  # noqa: E402
import texts as T  # noqa: E402
import verifier_voices as VV  # noqa: E402


class JobLists(unittest.TestCase):
    def test_every_engine_says_every_command_and_its_negatives(self):
        for e in VV.ENGINES:
            jobs = VV.train_jobs(e)
            for ci in range(len(C.COMMANDS)):
                self.assertEqual(sum(j["label"] == ci for j in jobs), VV.N_COMMAND[e], (e, ci))
            self.assertEqual(sum(j["label"] == C.NONE for j in jobs), VV.N_NEGATIVE[e], e)

    def test_no_negative_holds_a_command_or_a_near_miss_the_verifier_is_tested_on(self):
        test = set(T.HARD_NEGATIVES[::4])
        for e in VV.ENGINES:
            for j in VV.train_jobs(e):
                if j["label"] == C.NONE:
                    self.assertFalse(T.contains_command(j["text"], C.COMMANDS), j["text"])
                    self.assertNotIn(j["text"], test)

    def test_no_check_voice_is_a_training_voice(self):
        import neural_check as NC
        import synth_neural as SN
        held_out = {v for check in NC.CHECKS for v in check["voices"]}
        for e in VV.ENGINES:
            for j in VV.train_jobs(e):
                used = {part.split("*")[0] for part in j["voice"].split("+")}
                self.assertFalse(used & held_out, (e, j["voice"]))
                if e == "kokoro":
                    self.assertTrue(used <= set(SN.KOKORO_TRAIN_VOICES), j["voice"])
        self.assertTrue(all(j["voice"] in C.FLITE_TRAIN_VOICES for j in VV.train_jobs("flite")))

    def test_job_lists_and_keys_are_the_same_run_after_run(self):
        for e in VV.ENGINES:
            a, b = VV.train_jobs(e), VV.train_jobs(e)
            self.assertEqual(a, b)
            self.assertEqual(len({j["key"] for j in a}), len(a), e)

    def test_an_unknown_engine_is_named(self):
        import random
        with self.assertRaisesRegex(ValueError, "unknown engine 'festival'"):
            VV.params("festival", random.Random(0))


if __name__ == "__main__":
    unittest.main()
