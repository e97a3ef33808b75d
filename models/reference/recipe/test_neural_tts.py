"""Kokoro's guard against its int8 model's blow-ups (neural_tts.Kokoro): output that is not
finite or peaks above MAX_PEAK is synthesised again at the next speed, then (an unpunctuated text)
with a closing full stop, and a text nothing saves raises. A stand-in session replaces the model, so this runs in .venv without the Kokoro wheels:
  .venv/bin/python -m unittest discover -s models/reference/recipe -p 'test_neural_tts.py'
"""
import unittest

import numpy as np

import common as C
import neural_tts as N


class FakeSession:
    """Returns out[i] for the i-th call and records the speeds and token sequences asked for."""

    def __init__(self, outs):
        self.outs, self.speeds, self.tokens = list(outs), [], []

    def run(self, _, feed):
        self.speeds.append(float(feed["speed"][0]))
        self.tokens.append(feed["tokens"][0].tolist())
        return [self.outs.pop(0)]


def kokoro(outs):
    k = N.Kokoro.__new__(N.Kokoro)
    k.sess = FakeSession(outs)
    k.vocab = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyzəɹ .")}
    k.voices = {"jf_alpha": np.zeros((510, 1, 256), np.float32)}
    return k


def speech(n=24000):
    return (0.5 * np.sin(np.arange(n) * 0.05)).astype(np.float32)[None]


class KokoroGuard(unittest.TestCase):
    def test_a_blown_up_output_is_made_again_at_the_next_speed(self):
        bad_inf = speech()
        bad_inf[0, 100] = np.inf
        bad_spike = speech() * 1e20
        k = kokoro([bad_inf, bad_spike, speech()])
        y = k("stop", "jf_alpha", 1.0)
        np.testing.assert_allclose(k.sess.speeds, [1.0 * f for f in N.Kokoro.RETRY_SPEEDS[:3]], rtol=1e-6)
        self.assertEqual(len(y), C.SR)  # 24 000 samples at 24 kHz
        self.assertGreater(int(np.abs(y).max()), 20000)

    def test_speech_at_the_first_speed_is_kept(self):
        k = kokoro([speech()])
        k("stop", "jf_alpha", 1.2)
        np.testing.assert_allclose(k.sess.speeds, [1.2], rtol=1e-6)

    def test_an_unpunctuated_text_no_speed_saves_is_tried_with_a_full_stop(self):
        n = len(N.Kokoro.RETRY_SPEEDS)
        k = kokoro([np.full_like(speech(), np.nan)] * n + [speech()])
        y = k("help", "jf_alpha", 1.0)
        self.assertEqual(len(k.sess.speeds), n + 1)
        self.assertEqual(k.sess.tokens[-1][:-2], k.sess.tokens[0][:-1])     # the same phonemes,
        self.assertEqual(k.sess.tokens[-1][-2], k.vocab["."])               # then the full stop
        self.assertEqual(k.sess.speeds[-1], 1.0)
        self.assertGreater(int(np.abs(y).max()), 20000)

    def test_a_text_nothing_saves_raises(self):
        n = len(N.Kokoro.RETRY_SPEEDS)
        k = kokoro([speech() * 100] * (2 * n))
        with self.assertRaisesRegex(RuntimeError, "no speech for 'stop' in voice jf_alpha"):
            k("stop", "jf_alpha", 1.0)
        self.assertEqual(len(k.sess.speeds), 2 * n)
        k = kokoro([speech() * 100] * n)
        with self.assertRaisesRegex(RuntimeError, "no speech for 'Stop.' in voice jf_alpha"):
            k("Stop.", "jf_alpha", 1.0)                                      # punctuated: speeds only
        self.assertEqual(len(k.sess.speeds), n)


if __name__ == "__main__":
    unittest.main()
