"""Shared pieces of the Outpost command-head recipe: paths, the voice split, and the
feature pipeline (mel -> embedding) exactly as the Rust runtime streams it (docs/DESIGN.md §3).
"""
import os
import re
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
REF = REPO / "models" / "reference"
MODELS = Path(os.environ.get("OUTPOST_MODELS", REPO / ".outpost" / "models"))
CACHE = Path(os.environ.get("OUTPOST_RECIPE_CACHE", REPO / ".outpost" / "recipe-cache"))

SR = 16000
FRAME = 1280          # 80 ms
MEL_CTX = 1760        # samples fed to the mel model per frame
MEL_WIN = 76          # mel frames per embedding
HEAD_WIN = 16         # embeddings per head call
EMB_DIM = 96
THREADS = int(os.environ.get("OUTPOST_ORT_THREADS", "1"))


def read_commands(path):
    """The commands of a commands.txt: one per line, `#` starts a comment, blank lines ignored.
    Raises ValueError naming the line when a command is not lower-case words of a-z and '
    separated by single spaces, is longer than 64 bytes, is `none` (the rejection label), or
    repeats an earlier one, and when the file holds none or more than 31 (a bundle holds at most
    32 labels with `none`, and a label at most 64 bytes: outpost_models::format::MAX_LABELS,
    MAX_STRING_LEN)."""
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        c = line.split("#")[0].strip()
        if not c:
            continue
        if not re.fullmatch(r"[a-z']+( [a-z']+)*", c):
            raise ValueError(f"{path}:{n}: {c!r}: expected lower-case words (a-z, ') separated by single spaces")
        if len(c) > 64:
            raise ValueError(f"{path}:{n}: {c!r} is {len(c)} bytes long (expected at most 64)")
        if c == "none":
            raise ValueError(f"{path}:{n}: 'none' is the label of everything else, not a command")
        if c in out:
            raise ValueError(f"{path}:{n}: {c!r} repeats line {out.index(c) + 1} of the commands")
        out.append(c)
    if not out:
        raise ValueError(f"{path}: no command (expected one per line)")
    if len(out) > 31:
        raise ValueError(f"{path}: {len(out)} commands (expected at most 31: a bundle holds 32 labels with 'none')")
    return out


# The command vocabulary: models/reference/commands.txt, or the file OUTPOST_COMMANDS names
# (scripts/train-commands: a release engineer's own list).
COMMANDS_FILE = Path(os.environ.get("OUTPOST_COMMANDS") or REF / "commands.txt")
COMMANDS = read_commands(COMMANDS_FILE)
LABELS = COMMANDS + ["none"]
NONE = len(COMMANDS)

# ---------------------------------------------------------------- voice split
# espeak-ng languages (accents). Held-out ones are never used for training.
ESPEAK_TRAIN_LANGS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-us-nyc"]
ESPEAK_HELDOUT_LANGS = ["en-029", "en-gb-x-gbcwmd"]
# espeak-ng voice variants (+name). "" = the language's default voice.
ESPEAK_VARIANTS = (
    "adam Alex Alicia Andrea Andy Annie antonio aunty belinda benjamin boris caleb david Demonic "
    "Denis Diogo ed edward edward2 Gene Gene2 gustave announcer Henrique Hugo iven iven2 iven3 "
    "iven4 Jacky john kaukovalta Lee linda marcelo Marco Mario max Michael michel miguel Mike Mr "
    "Nguyen pablo paul pedro quincy RicishayMax RicishayMax2 RicishayMax3 rob robert robosoft "
    "robosoft2 robosoft3 robosoft4 robosoft5 robosoft6 robosoft7 robosoft8 steph steph2 steph3 "
    "Storm Tweaky UniRobot zac anika anikaRobot AnxiousAndy fast f2 f3 f4 f5 whisperf grandpa "
    "klatt klatt2 klatt3 klatt4 klatt5 klatt6 m2 m3 m4 m5 m6 m7 norbert sandro shelby travis "
    "victor whisper m8 f1 croak m1 grandma").split()
ESPEAK_HELDOUT_VARIANTS = ["f3", "m3", "klatt3", "Annie", "Mr", "iven2", "steph2", "Andy",
                           "edward2", "robosoft3", "grandma", "Lee"]
ESPEAK_TRAIN_VARIANTS = [""] + [v for v in ESPEAK_VARIANTS if v not in ESPEAK_HELDOUT_VARIANTS]
# flite voices: slt is held out (its speaker is also festival's HTS voice, held out too).
FLITE_TRAIN_VOICES = ["kal16", "awb", "rms", "kal"]
FLITE_HELDOUT_VOICES = ["slt"]
# festival: the whole engine is held out (validation only).
FESTIVAL_HELDOUT_VOICES = ["kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"]


def holdout_demo_voices():
    out = []
    for line in (REF / "holdout_voices.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            out.append(line)
    return out


def espeak_voice_is_heldout(voice):
    lang, _, var = voice.partition("+")
    return (lang in ESPEAK_HELDOUT_LANGS or var in ESPEAK_HELDOUT_VARIANTS
            or voice in holdout_demo_voices())


# ---------------------------------------------------------------- ORT sessions
_sessions = {}


def session(name):
    import onnxruntime as ort
    if name not in _sessions:
        so = ort.SessionOptions()
        so.intra_op_num_threads = THREADS
        so.inter_op_num_threads = 1
        path = name if os.path.sep in str(name) else MODELS / f"{name}.onnx"
        _sessions[name] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return _sessions[name]


def mel(x_int16_scale):
    """melspectrogram.onnx on a 1-D signal (int16-scale floats) -> [F, 32] transformed (x/10+2)."""
    x = np.asarray(x_int16_scale, dtype=np.float32)[None, :]
    out = session("melspectrogram").run(None, {"input": x})[0]
    return out[0, 0] / 10.0 + 2.0


def embed(mel_windows):
    """embedding_model.onnx on [B, 76, 32] -> [B, 96]."""
    mw = np.asarray(mel_windows, dtype=np.float32)
    outs = []
    for i in range(0, len(mw), 256):
        outs.append(session("embedding_model").run(None, {"input_1": mw[i:i + 256, :, :, None]})[0][:, 0, 0, :])
    return np.concatenate(outs) if outs else np.zeros((0, EMB_DIM), np.float32)


_silence = {}


def silence_mel_frame():
    if "mel" not in _silence:
        _silence["mel"] = mel(np.zeros(MEL_CTX, np.float32))[0]
    return _silence["mel"]


def silence_embedding():
    if "emb" not in _silence:
        _silence["emb"] = embed(np.repeat(silence_mel_frame()[None, None, :], MEL_WIN, axis=1))[0]
    return _silence["emb"]


def stream_mels(audio):
    """Transformed mel frames the runtime appends, per complete 80 ms frame: [n, 8, 32].
    The mel model clips log-mel at (max over its whole input - 80 dB) (a ReduceMax over all
    axes, batch included), so it is NOT frame-local: it must be called once per frame on
    exactly the last 1760 samples, like the runtime (whole-signal or batched calls differ)."""
    a = np.asarray(audio, dtype=np.float32)
    n = len(a) // FRAME
    x = np.concatenate([np.zeros(MEL_CTX - FRAME, np.float32), a[:n * FRAME]])
    s = session("melspectrogram")
    out = np.empty((n, 8, 32), np.float32)
    for k in range(n):
        out[k] = s.run(None, {"input": x[None, k * FRAME:k * FRAME + MEL_CTX]})[0][0, 0]
    return out / 10.0 + 2.0


def stream_embeddings(audio):
    """Embeddings the runtime produces for a stream starting with `audio` (int16 values),
    one per complete 80 ms frame: per-frame mel calls (as the runtime), embedding batched
    (equal to the streaming loop; see check_pipeline.py). Returns [n_frames, 96]."""
    m = stream_mels(audio).reshape(-1, 32)
    n = len(m) // 8
    if n == 0:
        return np.zeros((0, EMB_DIM), np.float32)
    m = np.concatenate([np.repeat(silence_mel_frame()[None, :], MEL_WIN, axis=0), m])
    last = MEL_WIN + 8 * np.arange(n) + 7
    idx = last[:, None] - (MEL_WIN - 1) + np.arange(MEL_WIN)[None, :]
    return embed(m[idx])


def head_windows(emb):
    """[n, 96] stream embeddings -> [n, 16, 96] head inputs (runtime pre-fills 16 silent embeddings)."""
    pad = np.repeat(silence_embedding()[None, :], HEAD_WIN, axis=0)
    e = np.concatenate([pad, emb]).astype(np.float32)
    idx = np.arange(len(emb))[:, None] + 1 + np.arange(HEAD_WIN)[None, :]
    return e[idx]


def frame_audio_end(k):
    """Audio sample (exclusive) up to which the embedding of frame k has seen the stream
    (its newest mel frame starts at 1280k + 640 and spans 512 samples)."""
    return FRAME * k + 640 + 512


class StreamingPipeline:
    """Literal frame-by-frame emulation of the Rust runtime (docs/DESIGN.md §3)."""

    def __init__(self, head_path=None):
        self.raw = np.zeros(MEL_CTX, np.float32)
        self.mels = np.repeat(silence_mel_frame()[None, :], MEL_WIN, axis=0)
        self.embs = np.repeat(silence_embedding()[None, :], HEAD_WIN, axis=0)
        self.head = session(str(head_path)) if head_path else None
        self.vad_state = np.zeros((2, 1, 128), np.float32)
        self.vad_ctx = np.zeros(64, np.float32)
        self.vad_pending = np.zeros(0, np.float32)

    def vad_frame(self, frame_f):
        """Silero on 512-sample windows (with 64-sample context); returns max prob of the
        windows completed in this frame (0 if none)."""
        buf = np.concatenate([self.vad_pending, frame_f / 32768.0]).astype(np.float32)
        probs = []
        s = session("silero_vad")
        while len(buf) >= 512:
            w = buf[:512]
            inp = np.concatenate([self.vad_ctx, w])[None, :].astype(np.float32)
            out, self.vad_state = s.run(None, {"input": inp, "state": self.vad_state,
                                               "sr": np.array(SR, dtype=np.int64)})
            probs.append(float(out[0, 0]))
            self.vad_ctx = w[-64:]
            buf = buf[512:]
        self.vad_pending = buf
        return max(probs) if probs else 0.0

    def push(self, frame_int16):
        f = np.asarray(frame_int16, dtype=np.float32)
        assert len(f) == FRAME
        self.raw = np.concatenate([self.raw, f])[-MEL_CTX:]
        new = mel(self.raw)                      # [8, 32]
        self.mels = np.concatenate([self.mels, new])[-MEL_WIN:]
        e = embed(self.mels[None])[0]
        self.embs = np.concatenate([self.embs, e[None]])[-HEAD_WIN:]
        vad = self.vad_frame(f)
        scores = None
        if self.head is not None:
            scores = self.head.run(None, {"embeddings": self.embs[None].astype(np.float32)})[0][0]
        return e, scores, vad


# ---------------------------------------------------------------- decision logic
class Decision:
    """Mirror of the runtime decision logic (see the brief / outpost_runtime::decision)."""

    def __init__(self, T, K, R_ms, V, H_ms, frame_ms=80, label_thresholds=None):
        self.T, self.K, self.R, self.V, self.H = T, K, R_ms, V, H_ms
        self.frame_ms = frame_ms
        self.lt = label_thresholds or {}
        self.hist = []
        self.vad_hist = []
        self.t = 0
        self.t_last = None
        self.armed = True

    def thr(self, c):
        return self.lt.get(c, self.T)

    def push(self, scores, vad_prob):
        self.hist.append(np.asarray(scores[:NONE], np.float64))
        self.hist = self.hist[-self.K:]
        s = np.mean(self.hist, axis=0)
        # frames within the last H ms including t
        nh = max(1, self.H // self.frame_ms + 1)
        self.vad_hist.append(vad_prob)
        self.vad_hist = self.vad_hist[-nh:]
        vad_recent = max(self.vad_hist) >= self.V
        c = int(np.argmax(s))
        t_ms = self.t * self.frame_ms
        det = None
        if not self.armed and all(s[i] < self.thr(i) for i in range(NONE)):
            self.armed = True
        if (s[c] >= self.thr(c) and vad_recent and self.armed
                and (self.t_last is None or t_ms - self.t_last >= self.R)):
            det = (c, float(s[c]))
            self.armed = False
            self.t_last = t_ms
        self.t += 1
        return det


def head_tag(head=None):
    """The suffix of train.py's files for a head it wrote: "" for the shipped head (head None or
    REF/command_head.onnx), else "_<file name without .onnx>"."""
    if head is None or Path(head).resolve() == (REF / "command_head.onnx").resolve():
        return ""
    return "_" + Path(head).name.replace(".onnx", "")


def train_info_path(head=None):
    """train.py's record of a head it wrote: CACHE/train_info<head_tag>.json."""
    return CACHE / f"train_info{head_tag(head)}.json"


def read_wav(path):
    import wave
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == SR and w.getnchannels() == 1 and w.getsampwidth() == 2, path
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()


def write_wav(path, x):
    import wave
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(np.asarray(x, dtype="<i2").tobytes())



def write_lora(path, Q, rank, alpha):
    """A verifier LoRA file (verifier_train.py, lora_soup.py): the arrays Q by name (`W/lora_a`
    [rank, in], `W/lora_b` [out, rank], directly tuned arrays) as a compressed .npz of float16,
    plus `rank` and `alpha` (the update is alpha / rank * B @ A)."""
    np.savez_compressed(path, **{k: np.asarray(v, np.float16) for k, v in Q.items()},
                        rank=np.int32(rank), alpha=np.float32(alpha))


def read_lora(path):
    """(Q, rank, alpha) of a write_lora file, Q as float32 arrays by name. Raises KeyError when
    the file has no `rank` or `alpha` (not a LoRA file)."""
    z = np.load(path)
    return ({k: z[k].astype(np.float32) for k in z.files if k not in ("rank", "alpha")},
            int(z["rank"]), float(z["alpha"]))

def fetch_debs(base_url, debs, d, root, complete, pinned_in):
    """Fetches pinned Debian packages and unpacks them, once, without installing anything.

    debs: {file name: SHA-256} under base_url (a deb.debian.org pool directory). Each .deb is
    downloaded into directory d (kept there and re-checked on every call), verified, and the
    set is unpacked with `dpkg-deb -x` into a temporary directory that is then renamed to
    `root`, so parallel processes and interrupted runs never see half a tree. Does nothing when
    complete(root) is already true. Raises RuntimeError naming the file whose SHA-256 does not
    match its pin (pinned_in: the module that holds the pins, for the message)."""
    import hashlib
    import shutil
    import subprocess
    import urllib.request
    if complete(root):
        return
    d.mkdir(parents=True, exist_ok=True)
    tmp_root = d / f"{root.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp_root, ignore_errors=True)
    for name, sha in debs.items():
        path = d / name
        if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            data = urllib.request.urlopen(base_url + name, timeout=300).read()
            got = hashlib.sha256(data).hexdigest()
            if got != sha:
                raise RuntimeError(f"{base_url + name}: SHA-256 {got}, expected {sha} (pinned in {pinned_in})")
            part = d / f"{name}.tmp{os.getpid()}"
            part.write_bytes(data)
            os.replace(part, path)
        subprocess.run(["dpkg-deb", "-x", str(path), str(tmp_root)], check=True)
    if complete(root):          # another process finished first
        shutil.rmtree(tmp_root)
        return
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp_root, root)
