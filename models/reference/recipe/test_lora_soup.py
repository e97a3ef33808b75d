"""Tests of lora_soup.py on made-up LoRA arrays (no model, < 1 s):
  .venv/bin/python -m unittest discover -s models/reference/recipe -p 'test_lora_soup.py'
"""
import unittest

import numpy as np

import lora_soup as S


def lora(rng, rank, alpha):
    return ({"w/lora_a": rng.normal(size=(rank, 5)).astype(np.float32),
             "w/lora_b": rng.normal(size=(7, rank)).astype(np.float32),
             "w/bias": rng.normal(size=7).astype(np.float32)}, rank, alpha)


def update(q, rank, alpha):
    return alpha / rank * q["w/lora_b"] @ q["w/lora_a"]


class Soup(unittest.TestCase):
    def test_the_update_and_the_direct_arrays_are_the_weighted_means(self):
        rng = np.random.default_rng(0)
        a, b = lora(rng, 4, 32.0), lora(rng, 8, 16.0)
        q, rank, alpha = S.soup([a, b], [3.0, 1.0])
        self.assertEqual(rank, 12)
        np.testing.assert_allclose(update(q, rank, alpha), 0.75 * update(*a) + 0.25 * update(*b), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(q["w/bias"], 0.75 * a[0]["w/bias"] + 0.25 * b[0]["w/bias"], rtol=1e-6)

    def test_one_file_is_itself(self):
        a = lora(np.random.default_rng(1), 4, 32.0)
        q, rank, alpha = S.soup([a], [1.0])
        np.testing.assert_allclose(update(q, rank, alpha), update(*a), rtol=1e-5, atol=1e-5)

    def test_files_of_other_arrays_or_bad_weights_are_refused(self):
        rng = np.random.default_rng(2)
        a, b = lora(rng, 4, 32.0), lora(rng, 4, 32.0)
        b[0]["v/bias"] = b[0].pop("w/bias")
        with self.assertRaisesRegex(ValueError, "tune different arrays"):
            S.soup([a, b], [1.0, 1.0])
        with self.assertRaisesRegex(ValueError, "expected positive"):
            S.soup([a, a], [1.0, 0.0])
        with self.assertRaisesRegex(ValueError, "as many"):
            S.soup([a, a], [1.0])


if __name__ == "__main__":
    unittest.main()
