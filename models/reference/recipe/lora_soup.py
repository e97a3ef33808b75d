"""Averages LoRA files of verifier_train.py into one (a "model soup": Wortsman et al., "Model
soups: averaging weights of multiple fine-tuned models improves accuracy without increasing
inference time", ICML 2022). The shipped verifier's caption epoch starts from the mean of the
LoRAs before and after its accent epoch: the accent epoch's clean gains with the babble the
epoch had cost back (docs/recognition.md, "The soup and the early fallback").

Exact, not approximate: for every tuned weight the soup's update is the weighted mean of the
files' updates, sum_i w_i (alpha_i / r_i) B_i A_i, kept as one LoRA of rank sum_i r_i (A
stacked, B side by side, scale 1); the directly tuned arrays (layer norms, biases) are the
weighted means of the files'. Inference cost is unchanged: verifier_export.py merges the
update into the weights.

  python lora_soup.py OUT.npz A.npz B.npz [...] [--weights 0.5,0.5]
Weights default to equal; they must be positive and are normalised to sum to 1. Raises
ValueError when the files do not tune the same arrays.
"""
import argparse

import numpy as np

import common as C


def soup(loras, weights):
    """loras: [(arrays, rank r_i, alpha_i)], arrays by name: `W/lora_a` [r_i, in], `W/lora_b`
    [out, r_i], and directly tuned arrays (any shape, the same in every file); weights: one
    positive number per file (normalised here). Returns (arrays, R = sum r_i, alpha = R): `W/lora_a`
    [R, in], `W/lora_b` [out, R] carrying each file's scale alpha_i / r_i. Raises ValueError on a
    count mismatch, a weight that is not positive, or files that tune different arrays."""
    if len(loras) != len(weights) or not loras:
        raise ValueError(f"{len(loras)} LoRA files and {len(weights)} weights: expected as many, at least one")
    if any(not np.isfinite(w) or w <= 0 for w in weights):
        raise ValueError(f"weights {weights}: expected positive numbers")
    w = np.asarray(weights, np.float64) / np.sum(weights)
    keys = set(loras[0][0])
    for q, _, _ in loras[1:]:
        if set(q) != keys:
            raise ValueError(f"the LoRA files tune different arrays, e.g. {sorted(keys ^ set(q))[0]}")
    out = {}
    for k in sorted(keys):
        if k.endswith("/lora_a"):
            out[k] = np.concatenate([q[k] for q, _, _ in loras], 0)
        elif k.endswith("/lora_b"):
            out[k] = np.concatenate([q[k] * (wi * alpha / rank) for wi, (q, rank, alpha) in zip(w, loras)], 1)
        else:
            out[k] = sum(wi * q[k] for wi, (q, _, _) in zip(w, loras))
    rank = sum(r for _, r, _ in loras)
    return out, rank, float(rank)          # alpha = rank: scale 1, the B blocks carry the scales


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("loras", nargs="+")
    ap.add_argument("--weights", default=None, help="comma-separated, one per file (default: equal)")
    a = ap.parse_args()
    weights = [1.0] * len(a.loras) if a.weights is None else [float(x) for x in a.weights.split(",")]
    q, rank, alpha = soup([C.read_lora(p) for p in a.loras], weights)
    C.write_lora(a.out, q, rank, alpha)
    print(f"{a.out}: {len(a.loras)} LoRA files, rank {rank}")


if __name__ == "__main__":
    main()
