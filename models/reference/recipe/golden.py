"""Golden vectors for the Rust tests, the self-test clip and bundle.toml.

All .f32 files are little-endian float32, row-major, shapes in golden/golden.json."""
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

import common as C

G = C.REF / "golden"
GOLDEN_VOICE = "en-us+f3"          # from holdout_voices.txt
SELFTEST_VOICE = "en-gb-x-gbcwmd+m3"


def tts(voice, text, speed=160):
    with tempfile.TemporaryDirectory() as td:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", f"{td}/a.wav", text], check=True)
        subprocess.run(["sox", "-V1", "-D", f"{td}/a.wav", "-r", "16000", "-c", "1", "-b", "16",
                        "-e", "signed-integer", f"{td}/b.wav"], check=True)
        return C.read_wav(f"{td}/b.wav")


def trim(x, thr=64):
    nz = np.nonzero(np.abs(x) > thr)[0]
    return x[nz[0]:nz[-1] + 1]


def selftest_clip(command):
    """A bundle's self-test clip, int16 16 kHz: 0.5 s of silence, `command` said by SELFTEST_VOICE
    (a held-out espeak-ng voice), 0.8 s of silence, padded to whole 80 ms frames."""
    sp = trim(tts(SELFTEST_VOICE, command))
    st = np.concatenate([np.zeros(8000, np.int16), sp, np.zeros(12800, np.int16)])
    return np.concatenate([st, np.zeros((-len(st)) % C.FRAME, np.int16)])


def stream_detections(head, clip, dec):
    """([(frame, label, score)], [VAD probability per frame]) of the literal streaming pipeline
    (common.StreamingPipeline with `head`) and C.Decision `dec` over the int16 `clip`."""
    p = C.StreamingPipeline(head)
    out, vads = [], []
    for k in range(len(clip) // C.FRAME):
        _, sc, v = p.push(clip[k * C.FRAME:(k + 1) * C.FRAME])
        vads.append(v)
        r = dec.push(sc, v)
        if r:
            out.append((k, C.LABELS[r[0]], r[1]))
    return out, vads


def save(name, arr, desc, shape_note, model, tol):
    arr = np.ascontiguousarray(arr, dtype="<f4")
    (G / name).write_bytes(arr.tobytes())
    return dict(file=name, shape=list(arr.shape), dtype="f32le", model=model, input=desc,
                note=shape_note, tolerance_abs=tol)


def decision_params():
    rep = json.loads((C.REF / "training_report.json").read_text())
    return rep["decision"]


def make_decision(dec):
    """C.Decision at the report's operating point, per-label thresholds included (as bundle.toml)."""
    lt = {C.LABELS.index(l): t for l, t in dec.get("label_thresholds", [])}
    return C.Decision(dec["threshold"], dec["smoothing_frames"], dec["refractory_ms"], dec["vad_threshold"],
                      dec["vad_hangover_ms"], label_thresholds=lt)


def main():
    G.mkdir(parents=True, exist_ok=True)
    assert GOLDEN_VOICE in C.holdout_demo_voices() and SELFTEST_VOICE in C.holdout_demo_voices()
    # ---- golden clip: 1.6 s = 20 frames, speech starts at 0.2 s
    sp = trim(tts(GOLDEN_VOICE, "lights on"))
    clip = np.zeros(20 * C.FRAME, np.int16)
    clip[3200:3200 + len(sp)] = sp[:len(clip) - 3200]
    C.write_wav(G / "lights_on.wav", clip)
    x = clip.astype(np.float32)
    entries = {}
    mel_s = C.session("melspectrogram")
    # mel: the first 1760 samples of the clip (plain model call), raw model output
    m0 = mel_s.run(None, {"input": x[None, :1760]})[0]
    entries["mel_first_1760"] = save("mel_first_1760.f32", m0, "lights_on.wav samples [0, 1760) as f32 int16-scale values, shape [1,1760]",
                                     "raw melspectrogram.onnx output [1,1,8,32] (before x/10+2)", "melspectrogram.onnx", 1e-3)
    # mel: runtime window of frame k=12 of the stream = samples [12*1280-480, 13*1280)
    k = 12
    m12 = mel_s.run(None, {"input": x[None, k * C.FRAME - 480:(k + 1) * C.FRAME]})[0]
    entries["mel_frame12"] = save("mel_frame12.f32", m12, f"lights_on.wav samples [{k * C.FRAME - 480}, {(k + 1) * C.FRAME}) "
                                  "(the runtime's last-1760-samples window after stream frame 12, 0-based)",
                                  "raw melspectrogram.onnx output [1,1,8,32] (before x/10+2)", "melspectrogram.onnx", 1e-3)
    # streaming pipeline over the whole clip
    p = C.StreamingPipeline(C.REF / "command_head.onnx")
    embs, scores, vads = [], [], []
    for k in range(len(clip) // C.FRAME):
        e, sc, v = p.push(clip[k * C.FRAME:(k + 1) * C.FRAME])
        embs.append(e)
        scores.append(sc)
        vads.append(v)
    melbuf = p.mels.copy()
    entries["embedding_input_last"] = save("embedding_input_last.f32", melbuf[None, :, :, None],
                                           "the runtime's mel buffer after the last frame (frame 19): 76 transformed (x/10+2) mel frames, oldest first",
                                           "input_1 [1,76,32,1]", "embedding_model.onnx", 1e-3)
    eo = C.session("embedding_model").run(None, {"input_1": melbuf[None, :, :, None].astype(np.float32)})[0]
    entries["embedding_output_last"] = save("embedding_output_last.f32", eo, "embedding_input_last.f32",
                                            "conv2d_19 [1,1,1,96]", "embedding_model.onnx", 1e-3)
    entries["silence_mel_frame"] = save("silence_mel_frame.f32", C.silence_mel_frame(),
                                        "mel of 1760 zero samples, transformed (x/10+2) (all 8 frames equal; one stored)",
                                        "[32]: the runtime's mel pre-fill frame", "melspectrogram.onnx", 1e-4)
    entries["silence_embedding"] = save("silence_embedding.f32", C.silence_embedding(),
                                        "embedding of 76 silence_mel_frame rows", "[96]: the runtime's embedding pre-fill",
                                        "embedding_model.onnx", 1e-3)
    entries["stream_embeddings"] = save("stream_embeddings.f32", np.stack(embs),
                                        "lights_on.wav streamed from a fresh stream (silent pre-fill), one embedding per 80 ms frame",
                                        "[20,96]", "melspectrogram.onnx + embedding_model.onnx", 2e-3)
    hin = p.embs[None].astype(np.float32)
    entries["head_input_last"] = save("head_input_last.f32", hin, "the runtime's embedding buffer after frame 19 (16 embeddings, oldest first)",
                                      "embeddings [1,16,96]", "command_head.onnx", 1e-4)
    entries["head_scores_last"] = save("head_scores_last.f32", C.session(str(C.REF / "command_head.onnx")).run(None, {"embeddings": hin})[0],
                                       "head_input_last.f32", "scores [1,13] in labels order", "command_head.onnx", 1e-4)
    entries["stream_scores"] = save("stream_scores.f32", np.stack(scores), "head scores per frame of the lights_on.wav stream",
                                    "[20,13]", "full pipeline", 5e-3)
    entries["stream_vad"] = save("stream_vad.f32", np.array(vads), "per-frame VAD prob (max over the 512-sample windows completed in the frame)",
                                 "[20]", "silero_vad.onnx", 1e-4)
    # silero: windows of 512 with 64-sample context and state carried
    s = C.session("silero_vad")
    state = np.zeros((2, 1, 128), np.float32)
    ctx = np.zeros(64, np.float32)
    xs = x / 32768.0
    probs = []
    NW = len(clip) // 512
    for i in range(NW):
        w = xs[i * 512:(i + 1) * 512].astype(np.float32)
        inp = np.concatenate([ctx, w])[None].astype(np.float32)
        out, state = s.run(None, {"input": inp, "state": state, "sr": np.array(16000, np.int64)})
        probs.append(out[0, 0])
        ctx = w[-64:]
    entries["vad_probs"] = save("vad_probs.f32", np.array(probs),
                                f"lights_on.wav / 32768, {NW} consecutive 512-sample windows; input = concat(last 64 samples of the previous window (zeros at first), 512 new) [1,576], state [2,1,128] zeros at start then stateN fed back, sr=16000 int64",
                                f"output[0,0] per window: [{NW}]", "silero_vad.onnx", 1e-4)
    entries["vad_state_final"] = save("vad_state_final.f32", state, "stateN after the last window", "[2,1,128]", "silero_vad.onnx", 1e-3)
    dec = decision_params()
    det = make_decision(dec)
    golden_dets = [(k, C.LABELS[r[0]], r[1]) for k, (sc, v) in enumerate(zip(scores, vads)) if (r := det.push(sc, v))]
    # ---- self-test clip
    st = selftest_clip("lights on")
    (C.REF / "selftest_lights_on.raw").write_bytes(st.astype("<i2").tobytes())
    st_dets, _ = stream_detections(C.REF / "command_head.onnx", st, make_decision(dec))
    print("golden clip detections", golden_dets, "selftest detections", st_dets)
    assert [d[1] for d in st_dets] == ["lights on"], st_dets
    meta = dict(
        clip=dict(file="lights_on.wav", voice=GOLDEN_VOICE, text="lights on", samples=len(clip), sample_rate=16000,
                  note="espeak-ng held-out voice; speech starts at sample 3200; 20 frames of 1280"),
        labels=C.LABELS,
        mel_transform="runtime applies x/10+2 to the raw melspectrogram.onnx output before the embedding",
        stream_start="fresh stream: raw buffer 1760 zeros, mel buffer 76 x silence_mel_frame, embedding buffer 16 x silence_embedding",
        decision=dec, stream_detections=[dict(frame=k, label=l, score=s_) for k, l, s_ in golden_dets],
        selftest=dict(file="selftest_lights_on.raw", voice=SELFTEST_VOICE, samples=int(len(st)),
                      detections=[dict(frame=k, label=l, score=s_) for k, l, s_ in st_dets]),
        tensors=entries)
    (G / "golden.json").write_text(json.dumps(meta, indent=1, default=float))
    write_bundle(dec)
    write_bundle(dec, C.REF / "bundle-two-stage.toml", head="trigger_head.onnx")


def write_bundle(dec, path=None, name="outpost-reference-dev", version=1, selftest=("selftest_lights_on.raw", "lights on"),
                 generator="models/reference/recipe/golden.py", development=True, head="command_head.onnx"):
    """Writes the bundle spec (default models/reference/bundle.toml) for C.LABELS: decision `dec` (a
    training_report.json "decision"), the head file `head` (shipped in the bundle as
    command_head.onnx) and the self-test clip selftest = (file, expected label), both beside the
    spec; development: the bundle is for development keys only (refused in production).
    head="trigger_head.onnx" is the spec of the two-stage bundle (`outpost-provision build
    --verifier` sets its stage-1 threshold and smoothing from verifier.json)."""
    lt = dec.get("label_thresholds", [])
    lts = ", ".join(f'["{l}", {t}]' for l, t in lt)
    labels = ", ".join(f'"{l}"' for l in C.LABELS)
    what = "the development reference bundle" if name == "outpost-reference-dev" else f"bundle {name}"
    two_stage = ("" if head == "command_head.onnx" else
                 f"\n# Stage 1 of the two-stage bundle (with `--verifier`): the head is {head}, trained for recall.")
    txt = f'''# Bundle spec for {what} (read by `outpost-provision build`).
# Fields mirror models/src/manifest.rs (Manifest); `files` is derived from [[payload]]
# (length and SHA-256 are computed at build time). Generated by {generator}.{two_stage}
name = "{name}"
version = {version}
compatible = "any"
runtime_min = "0.1.0"
runtime_max = "0.99.0"
development = {str(development).lower()}

[pipeline]
sample_rate_hz = 16000
frame_samples = 1280
head_window = 16
labels = [{labels}]

[pipeline.vad]
file = "silero_vad.onnx"
inputs = ["input", "state", "sr"]
outputs = ["output", "stateN"]

[pipeline.mel]
file = "melspectrogram.onnx"
inputs = ["input"]
outputs = ["output"]

[pipeline.embedding]
file = "embedding_model.onnx"
inputs = ["input_1"]
outputs = ["conv2d_19"]

[pipeline.head]
file = "command_head.onnx"
inputs = ["embeddings"]
outputs = ["scores"]

[pipeline.decision]
threshold = {dec["threshold"]}
label_thresholds = [{lts}]
smoothing_frames = {dec["smoothing_frames"]}
refractory_ms = {dec["refractory_ms"]}
vad_threshold = {dec["vad_threshold"]}
vad_hangover_ms = {dec["vad_hangover_ms"]}

[pipeline.budgets_us]
vad_us = 1000
mel_us = 2000
embedding_us = 6000
head_us = 1000

[[self_tests]]
audio_file = "{selftest[0]}"
expect_label = "{selftest[1]}"
max_frame_us = 20000

[[payload]]
name = "silero_vad.onnx"
path = "${{OUTPOST_MODELS}}/silero_vad.onnx"

[[payload]]
name = "melspectrogram.onnx"
path = "${{OUTPOST_MODELS}}/melspectrogram.onnx"

[[payload]]
name = "embedding_model.onnx"
path = "${{OUTPOST_MODELS}}/embedding_model.onnx"

[[payload]]
name = "command_head.onnx"
path = "{head}"

[[payload]]
name = "{selftest[0]}"
path = "{selftest[0]}"
'''
    Path(path or C.REF / "bundle.toml").write_text(txt)


if __name__ == "__main__":
    main()
