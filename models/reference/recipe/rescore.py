"""Re-score the recorded held-out evaluation streams with another head.

evaluate.py stores, next to eval/recorded.pkl, the per-frame embeddings of every evaluation
stream (eval/embeddings.pkl). Embeddings and VAD do not depend on the head, so a head's
per-frame scores are exactly its outputs on the same 16-embedding windows (silence pre-fill
as in a fresh stream): same streams, noise, SNRs, scoring and grid search as evaluate.py +
report.py, in seconds instead of ~20 min. Used to compare candidate heads.

  python rescore.py HEAD.onnx [OUT.pkl]   # prints the summary at report.py's operating point
"""
import pickle
import sys

import numpy as np

import common as C
import evaluate as E
import report as R


def head_scores(sess, emb):
    sil = C.silence_embedding().astype(np.float32)
    P = np.concatenate([np.repeat(sil[None], C.HEAD_WIN, 0), emb.astype(np.float32)])
    n = len(emb)
    out = np.zeros((n, len(C.LABELS)), np.float32)
    for a in range(0, n, 2048):
        k = np.arange(a, min(n, a + 2048))
        w = P[k[:, None] + 1 + np.arange(C.HEAD_WIN)[None, :]]
        out[k] = sess.run(None, {"embeddings": w})[0]
    return out


def rescore(head):
    with open(C.CACHE / "eval" / "recorded.pkl", "rb") as f:
        recs, negrec = pickle.load(f)
    with open(C.CACHE / "eval" / "embeddings.pkl", "rb") as f:
        embs = pickle.load(f)
    s = C.session(str(head))
    recs = {c: ([head_scores(s, e) for e in embs[c]],) + tuple(v[1:]) for c, v in recs.items()}
    negrec = {c: ([head_scores(s, e) for e in embs["neg_" + c]],) + tuple(v[1:]) for c, v in negrec.items()}
    return recs, negrec


def summary(recs, negrec):
    (key_a, params, sm_a), rows = R.choose(R.subset(recs, 0), negrec)
    out, fa = E.evaluate(recs, negrec, params)
    sm = E.summarize(out, fa)
    det = R.details(out)
    line = (f"T,K,R,V,H={params} fa_ok={key_a[0]} | " + " ".join(f"{c} {sm[c]['accuracy'] * 100:.1f}" for c, _ in E.CONDITIONS)
            + f" | FA/h {sm['fa_per_hour']:.1f}")
    sets = {k: [round(det[c]["per_set"][k]["accuracy"] * 100, 1) for c, _ in E.CONDITIONS] for k in det["clean"]["per_set"]}
    curve = []
    for T in R.GRID["T"]:
        o, f = E.evaluate(recs, negrec, (T,) + params[1:])
        x = E.summarize(o, f)
        curve.append((T, *[round(x[c]["accuracy"] * 100, 1) for c, _ in E.CONDITIONS], round(x["fa_per_hour"], 1)))
    return line, sets, curve


if __name__ == "__main__":
    recs, negrec = rescore(sys.argv[1])
    if len(sys.argv) > 2:
        with open(sys.argv[2], "wb") as f:
            pickle.dump((recs, negrec), f)
    line, sets, curve = summary(recs, negrec)
    print(line)
    for k, v in sets.items():
        print(f"  {k}: {v}")
    for c in curve:
        print("  T", c)
