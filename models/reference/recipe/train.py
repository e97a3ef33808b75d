"""Train the command head (numpy MLP) on stream embeddings and export it to ONNX.

Window labelling (per head call at frame k, d = frames between the end of the spoken command
and the newest audio the head has seen, see common.frame_audio_end):
  d <= POS_LO - 2.5  -> none (partial command: "lights o..." is not "lights on")
  POS_LO <= d <= POS_HI -> the command
  otherwise           -> excluded from the loss (ambiguous)
"""
import json
import os
import time

import numpy as np

import common as C

SEED = 20240611
POS_LO, POS_HI = 0.25, 9.0
NEG_BEFORE = POS_LO - 2.5
HIDDEN = (384, 192)
EPOCHS = int(os.environ.get("OUTPOST_EPOCHS", "35"))
BATCH = 512
LR = 1e-3
WD = float(os.environ.get("OUTPOST_WD", "1e-4"))
DROP_IN = float(os.environ.get("OUTPOST_DROP_IN", "0.05"))
DROP_H = float(os.environ.get("OUTPOST_DROP_H", "0.1"))
IN_NOISE = float(os.environ.get("OUTPOST_IN_NOISE", "0.05"))    # Gaussian noise on the normalised input
MIXUP = float(os.environ.get("OUTPOST_MIXUP", "0"))             # mixup Beta(a, a) on input and target; 0 = off
SMOOTH = float(os.environ.get("OUTPOST_SMOOTH", "0"))           # label smoothing
EMA = float(os.environ.get("OUTPOST_EMA", "0.999"))             # exported weights: EMA of the iterates
# feature sets (features.py): "train" (AUG v2) + "trainx" (AUG v3: VTLP/EQ, noise weighted to 0-10 dB)
# + "trainn" / "traink", "traink2", "traink3" (neural speech of synth_neural.py: Piper / three rounds
# of Kokoro style mixes, the third mostly negatives, AUG v3) + "trainr" (recorded Italian and Russian
# speech as negatives, recorded_speech.py, AUG v3); with OUTPOST_FIELD_RECORDINGS set (train.sh) and no
# OUTPOST_TRAIN_SETS, also "trainf" (the training speakers' recordings of people saying the commands,
# field_recordings.py; their ids and clip counts go into train_info.json)
SETS = os.environ.get("OUTPOST_TRAIN_SETS", "train,trainx,trainn,traink,traink2,traink3,trainr").split(",")
if os.environ.get("OUTPOST_FIELD_RECORDINGS") and "OUTPOST_TRAIN_SETS" not in os.environ:
    SETS.append("trainf")
OHEM = int(os.environ.get("OUTPOST_OHEM", "0"))                # >1: half of the `none` windows of a batch are the
                                                                # hardest (highest command score) of OHEM x candidates
PARTIAL_SHARE = float(os.environ.get("OUTPOST_PARTIAL_SHARE", str(1 / 3)))   # of a batch's `none` windows: partial
                                                                # commands ("lights o..."), the rest other none windows
NONE_WEIGHT = float(os.environ.get("OUTPOST_NONE_WEIGHT", "1"))  # loss weight of a `none` window (a command's is 1);
                                                                # < 1 trades false triggers for recall (a stage-1 trigger)
OUT = os.environ.get("OUTPOST_HEAD_OUT")                        # default: models/reference/command_head.onnx
# first layer: "mlp" = dense over the flattened 16x96 window; "convKxC" = a temporal convolution
# (kernel K embeddings, C channels, weights shared across the 16-K+1 positions) then the dense layers
ARCH = os.environ.get("OUTPOST_ARCH", "mlp")
CONV = tuple(int(v) for v in ARCH[4:].split("x")) if ARCH.startswith("conv") else None


def window_labels(n, segs):
    """Labels of the n head windows of one stream. segs: [(label, start, end)] in samples.
    -1 = excluded; kind 1 = `none` window inside a command (partial command)."""
    fe = C.frame_audio_end(np.arange(n))
    y = np.full(n, C.NONE)
    kind = np.zeros(n, int)
    excl = np.zeros(n, bool)
    starts = np.array([sg[1] for sg in segs]) if len(segs) else np.zeros(0)
    for lab, s, e in segs:
        if lab == C.NONE:
            continue
        d = (fe - e) / C.FRAME
        later = starts[starts > e]
        other = np.zeros(n, bool)
        for s2 in later:
            other |= fe - s2 > C.FRAME            # the next utterance is audible in the window
        pos = (d >= POS_LO) & (d <= POS_HI)
        excl |= ((d > NEG_BEFORE) & (d < POS_LO)) | ((d > POS_HI) & (d <= POS_HI + 4)) | (pos & other)
        pos &= ~other
        y[pos] = lab
        kind[(fe > s) & (d <= NEG_BEFORE)] = 1
    y[excl & (y == C.NONE)] = -1
    return y, kind


def load(split):
    z = np.load(C.CACHE / f"features_{split}.npz")
    emb, off, segs = z["emb"].astype(np.float32), z["off"], z["segs"]
    # padded embedding array: each stream preceded by 16 silent embeddings (runtime pre-fill)
    sil = C.silence_embedding().astype(np.float32)
    by_stream = {}
    for si, lab, s, e in segs.tolist():
        by_stream.setdefault(si, []).append((lab, s, e))
    parts, idx, y, grp, kind = [], [], [], [], []
    base = 0
    for i in range(len(off) - 1):
        E = emb[off[i]:off[i + 1]]
        parts.append(np.repeat(sil[None], C.HEAD_WIN, 0))
        parts.append(E)
        n = len(E)
        yy, kk = window_labels(n, by_stream.get(i, []))
        idx.append(base + 1 + np.arange(n))          # window = padded[start : start + 16]
        y.append(yy)
        grp.append(np.full(n, i))
        kind.append(kk)
        base += C.HEAD_WIN + n
    P = np.concatenate(parts)
    idx, y, grp, kind = map(np.concatenate, (idx, y, grp, kind))
    keep = y >= 0
    return P, idx[keep], y[keep], grp[keep], kind[keep], z


def load_sets(names):
    """Concatenate the windows of several feature sets (indices shifted into one array)."""
    Ps, idxs, ys, grps, kinds, base, gbase = [], [], [], [], [], 0, 0
    for nm in names:
        if not (C.CACHE / f"features_{nm}.npz").exists():
            raise SystemExit(f"feature set {nm} missing: CACHE/features_{nm}.npz (run features.py {nm}, or leave "
                             "it out of OUTPOST_TRAIN_SETS)")
        P, idx, y, grp, kind, _ = load(nm)
        Ps.append(P)
        idxs.append(idx + base)
        ys.append(y)
        grps.append(grp + gbase)
        kinds.append(kind)
        base += len(P)
        gbase += grp.max() + 1
    return np.concatenate(Ps), np.concatenate(idxs), np.concatenate(ys), np.concatenate(grps), np.concatenate(kinds)


def gather(P, start):
    return P[start[:, None] + np.arange(C.HEAD_WIN)[None, :]].reshape(len(start), -1)


def unfold(x, k):
    """[n, 16*96] -> [n*(16-k+1), k*96]: row (i, t) holds embeddings t..t+k-1 of window i."""
    x3 = x.reshape(len(x), C.HEAD_WIN, C.EMB_DIM)
    tp = C.HEAD_WIN - k + 1
    return np.concatenate([x3[:, j:j + tp] for j in range(k)], axis=2).reshape(len(x) * tp, k * C.EMB_DIM)


class MLP:
    """Dense layers (ReLU) + softmax; with CONV = (k, c) the first layer is a temporal convolution
    (one [k*96, c] weight applied at each of the 16-k+1 positions, outputs flattened)."""

    def __init__(self, rng, dims):
        if CONV:
            k, c = CONV
            dims = [k * C.EMB_DIM, c * (C.HEAD_WIN - k + 1)] + list(dims[1:])
        self.W = [rng.normal(0, np.sqrt(2.0 / a), (a, b)).astype(np.float32) for a, b in zip(dims[:-1], dims[1:])]
        self.b = [np.zeros(b, np.float32) for b in dims[1:]]
        if CONV:
            self.W[0] = self.W[0][:, :CONV[1]].copy()
            self.b[0] = self.b[0][:CONV[1]].copy()
        self.m = [np.zeros_like(p) for p in self.W + self.b]
        self.v = [np.zeros_like(p) for p in self.W + self.b]
        self.t = 0

    def forward(self, x, rng=None):
        acts, masks = [x], []
        h = x
        if rng is not None and DROP_IN:
            mk = (rng.random(h.shape, dtype=np.float32) > DROP_IN) * np.float32(1 / (1 - DROP_IN))
            h = h * mk
            acts[0] = h
        if CONV:
            acts[0] = unfold(h, CONV[0])
        for li, (W, b) in enumerate(zip(self.W, self.b)):
            if li == 0 and CONV:
                h = (acts[0] @ W + b).reshape(len(x), -1)
            else:
                h = h @ W + b
            if li < len(self.W) - 1:
                h = np.maximum(h, 0)
                if rng is not None and DROP_H:
                    mk = (rng.random(h.shape, dtype=np.float32) > DROP_H) * np.float32(1 / (1 - DROP_H))
                    h = h * mk
                    masks.append(mk)
                else:
                    masks.append(None)
                acts.append(h)
        return h, acts, masks

    def probs(self, x):
        z = self.forward(x)[0]
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)

    def step(self, x, tgt, w, rng, lr):
        """tgt: [n, classes] target distribution (one-hot, smoothed or mixed)."""
        z, acts, masks = self.forward(x, rng)
        z = z - z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        loss = -np.sum(w * np.sum(tgt * np.log(p + 1e-9), 1)) / w.sum()
        g = p - tgt
        g *= (w / w.sum())[:, None]
        gW, gb = [None] * len(self.W), [None] * len(self.W)
        for li in range(len(self.W) - 1, -1, -1):
            if li == 0 and CONV:
                g = g.reshape(-1, CONV[1])
            gW[li] = acts[li].T @ g + WD * self.W[li]
            gb[li] = g.sum(0)
            if li > 0:
                g = g @ self.W[li].T
                g *= (acts[li] > 0)  # relu and dropout zeros
                if masks[li - 1] is not None:
                    g *= 1.0 / (1 - DROP_H)  # dropout scale of the kept units
        self.t += 1
        for i, (p_, g_) in enumerate(zip(self.W + self.b, gW + gb)):
            self.m[i] = 0.9 * self.m[i] + 0.1 * g_
            self.v[i] = 0.999 * self.v[i] + 0.001 * g_ * g_
            mh = self.m[i] / (1 - 0.9 ** self.t)
            vh = self.v[i] / (1 - 0.999 ** self.t)
            p_ -= lr * mh / (np.sqrt(vh) + 1e-8)
        if EMA:
            if not hasattr(self, "ema"):
                self.ema = [q.copy() for q in self.W + self.b]
            d = min(EMA, (1 + self.t) / (10 + self.t))
            for q, e in zip(self.W + self.b, self.ema):
                e *= d
                e += (1 - d) * q
        return loss

    def use_ema(self):
        if EMA and hasattr(self, "ema"):
            k = len(self.W)
            self.W, self.b = [e.copy() for e in self.ema[:k]], [e.copy() for e in self.ema[k:]]


def sample_batch(rng, y, kind, n):
    """half command windows (uniform over commands), half none (PARTIAL_SHARE of them partial
    commands)."""
    if not hasattr(sample_batch, "pools"):
        sample_batch.pools = ([np.nonzero(y == c)[0] for c in range(C.NONE)],
                              np.nonzero((y == C.NONE) & (kind == 1))[0],
                              np.nonzero((y == C.NONE) & (kind == 0))[0])
    pos, partial, neg = sample_batch.pools
    npos = n // 2
    cls = rng.integers(0, C.NONE, npos)
    out = [pos[c][rng.integers(len(pos[c]))] for c in cls]
    npart = int(round((n - npos) * PARTIAL_SHARE))
    out += list(partial[rng.integers(len(partial), size=npart)])
    out += list(neg[rng.integers(len(neg), size=n - npos - npart)])
    return np.array(out)


def window_weights(labels):
    """Loss weight per window ([n] float32) for labels [n]: NONE_WEIGHT for a `none` window, 1 for a
    command's."""
    return np.where(np.asarray(labels) == C.NONE, NONE_WEIGHT, 1.0).astype(np.float32)


def export_onnx(model, mu, sd, path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    if CONV:
        k, c = CONV
        sdk, muk = np.tile(sd[:C.EMB_DIM], k), np.tile(mu[:C.EMB_DIM], k)
        W0 = model.W[0] / sdk[:, None]                      # [k*96, c], row j*96+f
        b0 = model.b[0] - (muk / sdk) @ model.W[0]
        wconv = W0.reshape(k, C.EMB_DIM, c).transpose(2, 1, 0)   # Conv weight [c, 96, k]
        inits = [numpy_helper.from_array(wconv.astype(np.float32), "Wc"),
                 numpy_helper.from_array(b0.astype(np.float32), "bc"),
                 numpy_helper.from_array(np.array([-1, c * (C.HEAD_WIN - k + 1)], np.int64), "flat_shape")]
        nodes = [helper.make_node("Transpose", ["embeddings"], ["xt"], perm=[0, 2, 1]),       # [n, 96, 16]
                 helper.make_node("Conv", ["xt", "Wc", "bc"], ["conv"], kernel_shape=[k]),     # [n, c, 16-k+1]
                 helper.make_node("Relu", ["conv"], ["convr"]),
                 helper.make_node("Transpose", ["convr"], ["convt"], perm=[0, 2, 1]),         # [n, 16-k+1, c]
                 helper.make_node("Reshape", ["convt", "flat_shape"], ["x0"])]
        Ws, bs, first = model.W[1:], model.b[1:], 1
    else:
        W0 = model.W[0] / sd[:, None]
        b0 = model.b[0] - (mu / sd) @ model.W[0]
        Ws, bs, first = [W0] + model.W[1:], [b0] + model.b[1:], 0
        inits = [numpy_helper.from_array(np.array([-1, C.HEAD_WIN * C.EMB_DIM], np.int64), "flat_shape")]
        nodes = [helper.make_node("Reshape", ["embeddings", "flat_shape"], ["x0"])]
    cur = "x0"
    for i, (W, b) in enumerate(zip(Ws, bs), start=first):
        inits += [numpy_helper.from_array(W.astype(np.float32), f"W{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [cur, f"W{i}", f"b{i}"], [f"g{i}"]))
        cur = f"g{i}"
        if i < first + len(Ws) - 1:
            nodes.append(helper.make_node("Relu", [cur], [f"r{i}"]))
            cur = f"r{i}"
    nodes.append(helper.make_node("Softmax", [cur], ["scores"], axis=-1))
    g = helper.make_graph(nodes, "outpost_command_head",
                          [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", C.HEAD_WIN, C.EMB_DIM])],
                          [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", len(C.LABELS)])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="outpost-recipe")
    m.ir_version = 8
    m.doc_string = "Outpost command head. labels: " + ", ".join(C.LABELS)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def numpy_forward(model, mu, sd, x):
    return model.probs((x.reshape(len(x), -1) - mu) / sd)


def main():
    rng = np.random.default_rng(SEED)
    P, idx, y, grp, kind = load_sets(SETS)
    if (C.CACHE / "features_val.npz").exists() and "segs" in np.load(C.CACHE / "features_val.npz").files:
        Pv, idxv, yv, grpv, kindv, _ = load("val")
    else:  # no pre-cut validation set: monitor on a held-back slice of training streams
        Pv, idxv, yv = P, idx[-20000:], y[-20000:]
    print("train windows", len(y), np.bincount(y, minlength=len(C.LABELS)).tolist())
    print("val windows", len(yv), np.bincount(yv, minlength=len(C.LABELS)).tolist())
    sub = rng.choice(len(idx), min(50000, len(idx)), replace=False)
    Xs = gather(P, idx[sub])
    # per-embedding-dimension normalisation (shared across the 16 time steps), folded into Gemm 0
    Xs3 = Xs.reshape(len(Xs), C.HEAD_WIN, C.EMB_DIM)
    mu = np.tile(Xs3.mean(axis=(0, 1)), C.HEAD_WIN)
    sd = np.tile(Xs3.std(axis=(0, 1)) + 1e-3, C.HEAD_WIN)
    Pn = (P - mu[:C.EMB_DIM]) / sd[:C.EMB_DIM]
    Pvn = (Pv - mu[:C.EMB_DIM]) / sd[:C.EMB_DIM]
    model = MLP(rng, [C.HEAD_WIN * C.EMB_DIM, *HIDDEN, len(C.LABELS)])
    steps = EPOCHS * 400
    Xv = gather(Pvn, idxv)
    t0 = time.time()
    for st in range(steps):
        lr = LR * 0.5 * (1 + np.cos(np.pi * st / steps))
        b = sample_batch(rng, y, kind, BATCH)
        if OHEM > 1 and st > steps // 10:
            nn = BATCH - BATCH // 2
            cand = sample_batch(rng, y, kind, 2 * nn * OHEM)[nn * OHEM:]     # none windows only
            pc = model.probs(gather(Pn, idx[cand]))
            hard = cand[np.argsort(pc[:, C.NONE])[:nn // 2]]
            b = np.concatenate([b[:BATCH - nn // 2], hard])
        x = gather(Pn, idx[b])
        tgt = np.full((len(b), len(C.LABELS)), SMOOTH / len(C.LABELS), np.float32)
        tgt[np.arange(len(b)), y[b]] += 1 - SMOOTH
        if MIXUP:
            lam = rng.beta(MIXUP, MIXUP, len(b)).astype(np.float32)
            lam = np.maximum(lam, 1 - lam)[:, None]
            perm = rng.permutation(len(b))
            x = lam * x + (1 - lam) * x[perm]
            tgt = lam * tgt + (1 - lam) * tgt[perm]
        x += np.float32(IN_NOISE) * rng.standard_normal(x.shape, dtype=np.float32)
        loss = model.step(x, tgt, window_weights(y[b]), rng, lr)
        if (st + 1) % 800 == 0 or st + 1 == steps:
            pv = model.probs(Xv)
            pred = pv.argmax(1)
            acc_pos = np.mean(pred[yv < C.NONE] == yv[yv < C.NONE])
            fa = np.mean(pv[yv == C.NONE, :C.NONE].max(1) > 0.5)
            print(f"epoch {(st + 1) // 400} loss {loss:.3f} val pos-acc {acc_pos:.4f} "
                  f"none>0.5 {fa:.5f} ({time.time() - t0:.0f}s)", flush=True)
    model.use_ema()
    out = OUT or (C.REF / "command_head.onnx")
    export_onnx(model, mu, sd, out)
    # check ORT vs numpy
    s = C.session(str(out))
    xx = Pv[idxv[:256, None] + np.arange(C.HEAD_WIN)[None, :]].astype(np.float32)
    ort_p = s.run(None, {"embeddings": xx})[0]
    np_p = numpy_forward(model, mu, sd, xx)
    diff = float(np.abs(ort_p - np_p).max())
    print("onnx vs numpy max abs diff", diff)
    pv = model.probs(Xv)
    pred = pv.argmax(1)
    cm = np.zeros((len(C.LABELS), len(C.LABELS)), int)
    np.add.at(cm, (yv, pred), 1)
    info = dict(seed=SEED, arch=ARCH, hidden=HIDDEN, epochs=EPOCHS, batch=BATCH, lr=LR, weight_decay=WD,
                dropout_in=DROP_IN, dropout_hidden=DROP_H, input_noise=IN_NOISE, mixup=MIXUP,
                label_smoothing=SMOOTH, ema=EMA, ohem=OHEM, partial_share=PARTIAL_SHARE, none_weight=NONE_WEIGHT, feature_sets=SETS, label_band=[POS_LO, POS_HI], none_before=NEG_BEFORE,
                train_windows=int(len(y)), train_window_counts=np.bincount(y, minlength=len(C.LABELS)).tolist(),
                val_windows=int(len(yv)), val_window_confusion=cm.tolist(), onnx_vs_numpy_max_abs=diff,
                params=int(sum(w.size for w in model.W) + sum(b.size for b in model.b)))
    if "trainf" in SETS:
        import field_recordings as F
        info["field"] = F.training_side()
    C.train_info_path(OUT).write_text(json.dumps(info, indent=1))
    np.savez(C.CACHE / f"head_numpy{C.head_tag(OUT)}.npz", mu=mu, sd=sd, *model.W, *model.b)


if __name__ == "__main__":
    main()
