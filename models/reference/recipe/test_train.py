"""Tests of train.py's batch composition and loss weighting (no features, ~1 s):
  .venv/bin/python -m unittest discover -s models/reference/recipe -p 'test_train.py'
"""
import unittest

import numpy as np

import common as C
import train as T


def pools(n_cmd=40, n_partial=30, n_other=30):
    """Labels and kinds of a toy window set: n_cmd command windows over the 12 commands, then
    n_partial partial commands (none, kind 1), then n_other other none windows (kind 0)."""
    y = np.concatenate([np.arange(n_cmd) % C.NONE, np.full(n_partial + n_other, C.NONE)])
    kind = np.concatenate([np.zeros(n_cmd, int), np.ones(n_partial, int), np.zeros(n_other, int)])
    return y, kind


class Batches(unittest.TestCase):
    def setUp(self):
        if hasattr(T.sample_batch, "pools"):
            del T.sample_batch.pools

    def test_half_commands_and_the_partial_share_of_the_none_windows(self):
        y, kind = pools()
        b = T.sample_batch(np.random.default_rng(0), y, kind, 512)
        self.assertEqual(len(b), 512)
        self.assertEqual(int(np.sum(y[b] < C.NONE)), 256)
        # 1/3 of the 256 none windows, as every head before the knob (256 // 3)
        self.assertEqual(int(np.sum(kind[b] == 1)), round(256 * T.PARTIAL_SHARE))
        self.assertEqual(round(256 / 3), 256 // 3)


class Weights(unittest.TestCase):
    def test_none_windows_weigh_none_weight(self):
        w = T.window_weights([0, C.NONE, 11, C.NONE])
        self.assertEqual(w.dtype, np.float32)
        np.testing.assert_array_equal(w, np.float32([1, T.NONE_WEIGHT, 1, T.NONE_WEIGHT]))

    def test_a_weight_scales_its_windows_share_of_the_gradient(self):
        """Weight 0 on the none windows: the step equals one on the command windows alone (and
        differs from the unweighted step)."""
        rng = np.random.default_rng(1)
        x = rng.standard_normal((8, C.HEAD_WIN * C.EMB_DIM)).astype(np.float32)
        y = np.array([0, 1, 2, 3, C.NONE, C.NONE, C.NONE, C.NONE])
        tgt = np.eye(len(C.LABELS), dtype=np.float32)[y]

        def stepped(xs, ts, w):
            m = T.MLP(np.random.default_rng(2), [C.HEAD_WIN * C.EMB_DIM, 16, len(C.LABELS)])
            m.step(xs, ts, np.asarray(w, np.float32), None, 1e-3)   # rng None: no dropout
            return m.W + m.b

        zero = stepped(x, tgt, [1, 1, 1, 1, 0, 0, 0, 0])
        alone = stepped(x[:4], tgt[:4], [1, 1, 1, 1])
        for a, b in zip(zero, alone):
            np.testing.assert_allclose(a, b, atol=1e-6)
        full = stepped(x, tgt, [1] * 8)
        self.assertTrue(any(np.abs(a - b).max() > 1e-5 for a, b in zip(zero, full)))


if __name__ == "__main__":
    unittest.main()
