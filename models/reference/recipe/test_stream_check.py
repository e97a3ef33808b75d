"""Tests of stream_check.py's pure helpers: parsing the client's events, the negative streams'
layout and the attribution of a trigger to the item playing. No daemon, ~1 s:
  .venv-verifier/bin/python -m unittest discover -s models/reference/recipe -p 'test_stream_check.py'
"""
import tempfile
import unittest
from pathlib import Path

import numpy as np

import common as C
import stream_check as S

# events as `outpost send --json` prints them with a two-stage bundle (seq: trigger frame)
EVENTS = [
    {"type": "not_a_command", "trigger": "volume down", "best": "volume down", "margin_nats": -0.5, "seq": 16},
    {"type": "detection", "command": "lights on", "trigger": "lights on", "margin_nats": 10.6, "time_ms": 1280,
     "seq": 15, "verify_total_us": 83000},
    {"type": "verify_failed", "trigger": "stop", "outcome": "DeadlineMissed", "seq": 30},
]
SUMMARY = {"type": "summary", "deadline_misses": 0, "rejections": 0, "errors": 0, "verify_failures": 0}


class Events(unittest.TestCase):
    def test_triggers_and_detections_by_frame(self):
        self.assertEqual([(s, t) for s, t, _ in S.triggers(EVENTS)],
                         [(15, "lights on"), (16, "volume down"), (30, "stop")])
        self.assertEqual([(s, c) for s, c, _ in S.detections(EVENTS)], [(15, "lights on")])
        self.assertEqual(S.first(S.triggers(EVENTS)), "lights on")
        self.assertIsNone(S.first([]))

    def test_an_utterance_end_verdict_is_not_a_trigger(self):
        ue = [{"type": "detection", "command": "go ahead", "trigger": "none", "margin_nats": 7.3, "seq": 12,
               "end_seq": 12, "verify_total_us": 90000},
              {"type": "verify_failed", "trigger": "none", "outcome": "DeadlineMissed", "seq": 40}]
        events = EVENTS + ue
        self.assertEqual([(s, t) for s, t, _ in S.triggers(events)],
                         [(15, "lights on"), (16, "volume down"), (30, "stop")])
        self.assertEqual([(s, c) for s, c, _ in S.utterance_ends(events)], [(12, "go ahead"), (40, None)])
        self.assertEqual(S.first(S.detections(events)), "go ahead")

    def test_frame_end_is_the_clients_time_ms(self):
        self.assertEqual(S.frame_end_ms(15), 1280)

    def test_trouble(self):
        self.assertEqual(S.trouble((EVENTS, SUMMARY, [])), "")
        self.assertEqual(S.trouble((EVENTS, dict(SUMMARY, verify_failures=1), [])), "verify_failures 1")
        self.assertIn("unknown frame", S.trouble(([], SUMMARY, ["verification for an unknown frame (request 2)"])))
        self.assertEqual(S.trouble(([], None, [])), "no summary")


class NegativeStreams(unittest.TestCase):
    def test_layout_cuts_and_attribution(self):
        items = [(np.full(C.SR, 0.1, np.float32), f"item{i}") for i in range(5)]      # 1 s each
        with tempfile.TemporaryDirectory() as d:
            streams = S.negative_streams(items, "t", 3.0, Path(d))
            # 1 s + 0.5 s gap per item: two items per 3 s stream
            self.assertEqual([len(i) for _, i, _ in streams], [2, 2, 1])
            p, index, seconds = streams[0]
            x = C.read_wav(p)
            self.assertEqual(len(x) % C.FRAME, 0)
            self.assertAlmostEqual(seconds, len(x) / C.SR)
            self.assertEqual(index, [(0.0, "item0"), (1500.0, "item1")])
            self.assertTrue(np.all(x[:C.SR] != 0) and np.all(x[C.SR:C.SR + C.SR // 2] == 0))
        self.assertEqual(S.item_at(index, 1499), "item0")
        self.assertEqual(S.item_at(index, 2600), "item1")

    def test_quantiles(self):
        self.assertEqual(S.quantiles([]), "-")
        self.assertEqual(S.quantiles(list(range(101))), "50 / 90 / 100")


if __name__ == "__main__":
    unittest.main()


class EngineNoise(unittest.TestCase):
    def test_engine_noise_is_looped_at_the_snr_over_the_speech(self):
        import verifier_check as VC
        saved = list(VC._ENGINE)
        try:
            # a stand-in for game_audio.engine_noise(): unit RMS, shorter than the window
            VC._ENGINE[:] = [np.random.default_rng(1).normal(0, 1, 3000)]
            x = np.zeros(8000, np.float32)
            x[2000:6000] = 0.2 * np.sin(np.arange(4000) * 0.05)
            y = VC.noisy(x, "engine", 10, 16000, [], "clip")
            nz = y.astype(np.float64) - np.pad(x, (0, 8000))
            speech = np.mean(x[2000:6000].astype(np.float64) ** 2)
            self.assertAlmostEqual(10 * np.log10(speech / np.mean(nz ** 2)), 10.0, delta=0.3)
            self.assertTrue(np.allclose(nz[:3000], nz[3000:6000], atol=1e-6), "looped")
            self.assertTrue(np.array_equal(y, VC.noisy(x, "engine", 10, 16000, [], "clip")), "seeded by clip")
            self.assertFalse(np.array_equal(y, VC.noisy(x, "engine", 10, 16000, [], "other clip")))
        finally:
            VC._ENGINE[:] = saved

    def test_the_check_streams_engine_noise_at_10_and_5_db(self):
        self.assertEqual([c for c in S.CONDITIONS if c[1] == "engine"],
                         [("engine 10 dB", "engine", 10), ("engine 5 dB", "engine", 5)])
