"""Tests of stream_replay.py's rule and window, on made-up scores (no ONNX graphs, ~1 s):
  .venv/bin/python -m unittest discover -s models/reference/recipe -p 'test_stream_replay.py'
"""
import unittest

import numpy as np

import common as C
import stream_replay as R

LABELS = ["lights on", "lights off", "stop", "none"]


def scores(on, off, stop=-20.0, none=0.0):
    return [on, off, stop, none]


class Verdict(unittest.TestCase):
    def test_final_needs_theta_over_none_and_the_gap_over_the_next_command(self):
        e = {"final": scores(10.0, 9.5)}
        self.assertEqual(R.verdict(e, LABELS, 2.0, 0.0), "lights on")
        self.assertIsNone(R.verdict(e, LABELS, 2.0, 1.0), "0.5 nats over lights off")
        self.assertIsNone(R.verdict({"final": scores(1.5, -9.0)}, LABELS, 2.0, 0.0), "below theta")
        self.assertEqual(R.verdict({"final": scores(1.5, -9.0)}, LABELS, 1.0, 1.0), "lights on")

    def test_an_early_verdict_needs_theta_plus_two_and_a_gap_of_four(self):
        # early: lights off 5 over none but 3 over lights on -> not early; the final decides
        e = {"early": scores(2.0, 5.0), "final": scores(12.0, 3.0)}
        self.assertEqual(R.verdict(e, LABELS, 2.0, 1.0), "lights on")
        e = {"early": scores(-6.0, 5.0), "final": scores(12.0, 3.0)}
        self.assertEqual(R.verdict(e, LABELS, 2.0, 1.0), "lights off", "early: 5 >= 2 + 2, gap 11")
        e = {"early": scores(-6.0, 3.5), "final": scores(-1.0, -2.0)}
        self.assertIsNone(R.verdict(e, LABELS, 2.0, 0.0, fallback=None), "early 3.5 < theta + 2, final below theta")

    def test_the_early_fallback_names_the_early_command_when_the_final_names_none(self):
        # early: lights off 3.5 over none (below theta + 2), 9.5 over lights on; final: none
        e = {"early": scores(-6.0, 3.5), "final": scores(-1.0, -2.0)}
        self.assertEqual(R.verdict(e, LABELS, 2.0, 1.0), "lights off")
        self.assertIsNone(R.verdict(e, LABELS, 2.0, 1.0, fallback=10.0), "9.5 nats over lights on < 10")
        self.assertIsNone(R.verdict(e, LABELS, 4.0, 1.0), "3.5 < theta")
        # a command at the end of the utterance is the verdict, whatever the early window heard
        e = {"early": scores(-6.0, 3.5), "final": scores(6.0, -2.0)}
        self.assertEqual(R.verdict(e, LABELS, 2.0, 1.0), "lights on")
        # no early window (the trigger frame ended the utterance): nothing to fall back on
        self.assertIsNone(R.verdict({"final": scores(-1.0, -2.0)}, LABELS, 2.0, 1.0))

    def test_decoys_after_the_labels_compete_with_none_only_when_asked(self):
        # "stops" heard: stop 6 nats over none, but the decoy " Stops." scores above stop
        e = {"final": scores(-20.0, -20.0, stop=-1.0, none=-7.0) + [-0.5, -30.0]}
        self.assertEqual(R.verdict(e, LABELS, 2.0, 1.0, decoys=False), "stop")
        self.assertIsNone(R.verdict(e, LABELS, 2.0, 1.0))
        # a decoy below none changes nothing; one 2.5 nats below the command keeps it at theta 2
        e = {"final": scores(-20.0, -20.0, stop=-1.0, none=-7.0) + [-9.0]}
        self.assertEqual(R.verdict(e, LABELS, 2.0, 1.0), "stop")
        e = {"final": scores(-20.0, -20.0, stop=-1.0, none=-7.0) + [-3.5]}
        self.assertEqual(R.verdict(e, LABELS, 2.0, 1.0), "stop")
        self.assertIsNone(R.verdict(e, LABELS, 3.0, 1.0))

    def test_replay_counts_the_first_verdict_per_clip_and_every_false_accept(self):
        sc = {"clips": [
            {"cond": "clean", "label": "lights on", "events": [{"final": scores(-5.0, -6.0)}, {"final": scores(9.0, 1.0)}]},
            {"cond": "clean", "label": "lights on", "events": [{"final": scores(8.0, 8.5)}]},
            {"cond": "clean", "label": "lights off", "events": []},
        ], "negs": [{"set": "speech", "events": [{"final": scores(-20.0, -20.0, stop=4.0)}, {"final": scores(1.0, 0.5)}]}]}
        acc, fa = R.replay(sc, LABELS, 2.0, 0.0)
        self.assertEqual((acc["clean"]["n"], acc["clean"]["right"], acc["clean"]["wrong"]), (3, 1, 1))
        self.assertEqual(fa["speech"], 1)
        acc, fa = R.replay(sc, LABELS, 2.0, 1.0)
        self.assertEqual((acc["clean"]["right"], acc["clean"]["wrong"]), (1, 0), "the pair within 1 nat: a miss")
        self.assertEqual(fa["speech"], 1)


class Window(unittest.TestCase):
    def test_the_window_ends_with_the_frame_and_is_zero_before_the_stream(self):
        a = np.arange(5 * C.FRAME, dtype=np.float32)
        w = R.window(a, 1, 3 * C.FRAME)
        self.assertEqual(len(w), 3 * C.FRAME)
        self.assertTrue((w[:C.FRAME] == 0).all())
        self.assertTrue((w[C.FRAME:] == a[:2 * C.FRAME]).all())
        w = R.window(a, 4, 3 * C.FRAME)
        self.assertTrue((w == a[2 * C.FRAME:]).all())


if __name__ == "__main__":
    unittest.main()
