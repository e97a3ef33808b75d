"""Fine-tunes the stage-2 verifier (Whisper tiny.en, whisper_onnx.py) to name one of the
commands or "none", and measures it against the zero-shot model on held-out voices, in noise,
and on held-out recorded human speech. Runs in .venv-verifier with requirements-train.txt.

What is trained: the decoder (4 layers, 9.4 M parameters; the token embedding, which is also
the output projection, and the positional embeddings stay frozen) on the frozen encoder's
states of a 3 s window ending at the trigger: a clip (0.3 s of silence either side of the
speech) ends between 0.25 s after and 0.3 s before the window's end, so its speech ends
0.05-0.6 s before it, where stage 1 fires (K = 4 smoothing frames, median 0.29 s after the end
of speech); earlier audio is whatever preceded it (silence here, noise over the whole window in
the noisy copies). With --encoder-top N the top N encoder layers (and the encoder's final layer
norm) are fine-tuned too, LoRA on their linear layers like the decoder's: the windows go through
the frozen lower layers once (build_encoder(..., last=...)) and the top layers run in JAX with the
decoder; the export then carries them in whisper_encoder.onnx. With --init-lora NPZ
--freeze-encoder the LoRA's encoder layers stay as they are, merged into the whole encoder that
encodes every window once, and its decoder part alone is tuned (a new vocabulary, as
scripts/train-commands does: an epoch then costs about a fifth of one that tunes the four encoder
layers too, for encoder states about 5.7 times as long to make once). Targets, teacher-forced
cross-entropy:
  command clip   <|startoftranscript|><|notimestamps|> " Lights on." <|endoftext|>
  anything else  <|startoftranscript|><|notimestamps|> <|nocaptions|> <|endoftext|>
  with --captions, a synthetic near miss or sentence whose text is known says its own caption
  instead (" Lights up." <|endoftext|>; accent variants, recorded speech and noise stay
  <|nocaptions|>): the shipped LoRA's last epoch;
so at run time one decoder call scores the 12 commands and "none" (13 sequences) and the
detection is accepted when a command beats "none" by at least THETA nats. The decoders this
script and verifier_export.py write score "none" as everything that is not a command,
log(1 - the commands' probability) (whisper_onnx.not_a_command), which counts a near miss's
caption against the commands.

Training data (no voice, text or recording of the tests):
  - the commands by espeak-ng training voices (common.ESPEAK_TRAIN_*; random rate and pitch);
  - with --accent-variants N, N pronunciation variants of each command and as many of near
    misses (none) by those voices, with the sound rules of other English accents (accents.py);
  - the commands and negatives by the training voices of flite, Piper, Kokoro and SVOX Pico en-US
    (verifier_voices.py train; --no-voices leaves them out);
  - near misses (texts.HARD_NEGATIVES without the verifier_check slice [::4]), random
    sentences of common words (texts.random_sentence) and numbers by the same voices, as "none";
  - recorded human speech, Asterisk Italian and Russian prompts (recorded_speech.TRAIN_LANGS,
    CC-BY-3.0), as "none"; with --game-speech N also N draws of each English line of two games
    (game_english: Warzone 2100, Fish Fillets NG), which then talk in the babble too; not in the
    shipped LoRA;
  - noise alone, as "none";
  each copy clean or with pink / white / brown noise or babble (training voices and the
  Italian/Russian prompts; --babble-share; --babble-talkers: talkers speaking without pause, as
  the tests' babble) at 0-25 dB SNR over the speech (--snr), its speech
  ending 0.05-0.6 s before the window's end (--late: later, tail_of); every copy but a command
  clip's first goes, with probability AUG_P, through augment.random_effects_v3 first (vocal-tract
  length, tempo, EQ, band-limited and radio channels, reverb).
Tests: verifier_check.py's 144 command clips (12 held-out voices) and 177 negative clips
(near misses and sentences by the 3 make-clips voices), clean and pink / white / babble at
20 / 10 / 5 dB (babble of held-out voices); and every Asterisk US English prompt (Allison
Smith, never trained on) as a 3 s window, for false accepts per hour of real speech; and the
neural-voice check's voices (verifier_voices.py check: Kokoro jf_tebukuro / jm_kumo, Pico en-GB,
RHVoice bdl / clb, engines or speakers never trained on), clean, pink 5 dB and babble 10 dB,
beside the LoRA given by --baseline-lora (default: the committed one) scored on the same windows.

  python verifier_train.py [--epochs 4] [--lr 5e-5] [--lora R | --init-lora NPZ [--freeze-encoder]] [--encoder-top N] [--no-tests]
                           [--out DIR] [--report MD]
Writes DIR/whisper_decoder_ft.onnx (same inputs/outputs as whisper_decoder.onnx) and the
report (default ../verifier_train.md).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import augment
import common as C
import decoys as D
import texts
import whisper_ct2
import whisper_onnx as WO

WIN = 3 * C.SR
NONE_TOKEN = WO.NONE_TOKEN
TRAIN_NOISES = ("pink", "white", "brown", "babble")
TRAIN_SNR_DB = (0.0, 25.0)   # a noisy copy's SNR over the speech, uniform in this range
TEST_NOISES = ("pink", "white", "babble")
TEST_SNRS = (20, 10, 5)
TEST_TAIL_S = 0.1            # test utterances end this long before the window's end
THETAS = (0.0, 1.5, 4.0)     # accept a command when it beats "none" by this many nats
AUG_P = 0.5                  # share of copies through augment.random_effects_v3
CHECK_CONDS = (("clean", None, None), ("pink 5 dB", "pink", 5), ("babble 10 dB", "babble", 10))


def seed(*parts):
    return zlib.crc32("|".join(map(str, parts)).encode())


def safe(s):
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in s)


# ---------------------------------------------------------------- clips
def synth(voice, text, path, rate=175, pitch=50):
    """espeak-ng `voice` saying `text` at `rate` words/min and `pitch` (0-99) -> 16 kHz mono
    int16 WAV at `path` with 0.3 s of silence either side (as scripts/make-clips)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", f"{t}/raw.wav", "--", text],
                       check=True)
        subprocess.run(["sox", "-D", "-V1", f"{t}/raw.wav", "-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer",
                        f"{t}/clip.wav", "pad", "0.3", "0.3"], check=True)
        os.replace(f"{t}/clip.wav", path)
    return path


def train_voices(n, rng):
    """n espeak-ng training voices (language + variant), none of them held out."""
    pool = [f"{lang}+{var}" if var else lang for lang in C.ESPEAK_TRAIN_LANGS for var in C.ESPEAK_TRAIN_VARIANTS]
    pool = [v for v in pool if not C.espeak_voice_is_heldout(v)]
    return [pool[i] for i in rng.choice(len(pool), n, replace=False)]


def training_clips(n_voices, n_neg, rng, n_accents=0):
    """[(float32 audio in [-1, 1), label index (C.NONE for none), source, text)] of synthetic speech;
    n_accents pronunciation variants of each command and as many of near misses (accent_jobs)."""
    root = C.CACHE / "verifier" / "train"
    voices = train_voices(n_voices, rng)
    test_negs = set(texts.HARD_NEGATIVES[::4])
    near = [t for t in texts.HARD_NEGATIVES if t not in test_negs and not texts.contains_command(t, C.COMMANDS)]
    jobs = []
    for vi, v in enumerate(voices):
        for ci, c in enumerate(C.COMMANDS):
            r, p = int(rng.integers(130, 210)), int(rng.integers(25, 75))
            jobs.append((v, c, root / safe(v) / f"{safe(c)}_{r}_{p}.wav", r, p, ci))
    for i in range(n_neg):
        v = voices[i % len(voices)]
        if i % 2 == 0:
            t = near[(i // 2) % len(near)]
        else:
            pr = _py_rng(seed("neg", i))
            t = pr.choice(texts.NUMBERS) if pr.random() < 0.15 else texts.random_sentence(pr)
            if texts.contains_command(t, C.COMMANDS):
                continue
        r, p = int(rng.integers(130, 210)), int(rng.integers(25, 75))
        jobs.append((v, t, root / "neg" / safe(v) / f"{seed(t)}_{r}_{p}.wav", r, p, C.NONE))
    jobs += accent_jobs(voices, near, n_accents, root)
    with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as ex:
        list(ex.map(lambda j: synth(j[0], j[1], j[2], j[3], j[4]), jobs))
    return [(C.read_wav(path).astype(np.float32) / 32768, label, f"espeak {v}" + (" accent" if t.startswith("[[") else ""),
             None if t.startswith("[[") else t) for v, t, path, _, _, label in jobs]


def accent_jobs(voices, near, n, root):
    """synth() jobs (voice, "[[phonemes]]", path, rate, pitch, label) of accents.variant
    pronunciations: n per command and as many of the near misses `near` (label none), each by one of
    `voices` (espeak-ng training voices, over its own dialect's phonemes). A command's variant is
    never the pronunciation of a near miss or decoy (texts.HARD_NEGATIVES, all of them, and
    decoys.py), a near miss's never that of a command, in the voice's dialect. Its own generator
    (seed "accents"): with n = 0 nothing else draws differently."""
    import accents as A
    if n <= 0:
        return []
    r = np.random.default_rng(seed("accents"))
    langs = sorted({v.split("+")[0] for v in voices})
    others = list(texts.HARD_NEGATIVES) + [d for _, d in D.decoys(C.COMMANDS)]
    avoid_cmd = {lg: {A.bare(A.phonemes(t, lg)) for t in others} for lg in langs}
    avoid_neg = {lg: {A.bare(A.phonemes(c, lg)) for c in C.COMMANDS} for lg in langs}
    jobs = []
    for k in range(n * len(C.COMMANDS) * 2):
        v = voices[int(r.integers(len(voices)))]
        lg = v.split("+")[0]
        ci = (k // 2) % len(C.COMMANDS) if k % 2 == 0 else C.NONE
        got = None
        for _ in range(1 if ci != C.NONE else len(near)):   # a near miss no rule changes: another one
            text = C.COMMANDS[ci] if ci != C.NONE else near[int(r.integers(len(near)))]
            got = A.variant(text, lg, r, avoid_cmd[lg] if ci != C.NONE else avoid_neg[lg])
            if got is not None:
                break
        if got is None:
            continue
        ph, _ = got
        rate, pitch = int(r.integers(130, 210)), int(r.integers(25, 75))
        jobs.append((v, ph, root / "accent" / safe(v) / f"{seed(ph)}_{rate}_{pitch}.wav", rate, pitch, ci))
    return jobs


def other_voices():
    """[(float32 audio, label index, source, text)] of verifier_voices.py's training clips (flite,
    Piper, Kokoro, Pico en-US). Raises FileNotFoundError naming the command that makes them."""
    man = C.CACHE / "verifier" / "voices_train.json"
    if not man.exists():
        raise FileNotFoundError(f"{man} is missing: make the clips with `.venv/bin/python verifier_voices.py train` "
                                "(needs requirements-neural.txt and flite), or train with --no-voices")
    rows = json.loads(man.read_text())
    return [(C.read_wav(r["path"]).astype(np.float32) / 32768, int(r["label"]), f"{r['engine']} {r['voice']}", r["text"])
            for r in rows]


def check_clips():
    """[(path, label index, set, voice)] of the neural-voice check sets (verifier_voices.py check),
    or [] when they were not made."""
    man = C.CACHE / "verifier" / "voices_check.json"
    if not man.exists():
        return []
    return [(r["path"], int(r["label"]), r["set"], r["voice"]) for r in json.loads(man.read_text())]


def augmented(x, r, engine):
    """x (float32 in [-1, 1)) through augment.random_effects_v3 (speaker and channel variety),
    back at its own peak level."""
    y = augment.sox(np.round(x * 32767).astype(np.int16), augment.random_effects_v3(r, engine))
    y = np.asarray(y, np.float32)
    peak = float(np.abs(y).max())
    return (y * (float(np.abs(x).max()) / peak)).astype(np.float32) if peak > 0 else x


def _py_rng(s):
    import random
    return random.Random(s)


def recorded(langs, max_s=None):
    """[(float32 audio, name)] of the speech prompts of Asterisk `langs` (recorded_speech.py)."""
    import recorded_speech as R
    out = []
    for lang in langs:
        for name, _, x in R.prompts(lang):
            if R.prompt_kind(name, x) == "speech":
                out.append((x.astype(np.float32) / 32768, f"{lang}/{name}"))
    return out


# Game voice lines that say a command inside a sentence ("To cancel production, right-click the
# icon."): left out of the "none" windows. Found by transcribing every line with Whisper tiny.en
# (CTranslate2, greedy) and searching the text for the commands' words.
GAME_LINES_SAYING_A_COMMAND = ("warzone/tutorial/tut59",)


def game_english():
    """[(float32 audio, name)]: real English speech of two games, as "none" (--game-speech):
    Warzone 2100's voice lines (game_audio.warzone_lines, 15 min of a few actors, radio-processed)
    and Fish Fillets NG's dialogue (game_audio.fillets_lines, 6 min, much of it cries and
    laughter), but those in GAME_LINES_SAYING_A_COMMAND. Hedgewars' lines stay held out."""
    import game_audio as G
    return [(x, n) for x, n in G.warzone_lines() + G.fillets_lines() if n not in GAME_LINES_SAYING_A_COMMAND]


# ---------------------------------------------------------------- windows and noise
def recorded_windows(rec, copies, a, bab_sources):
    """Yields the "none" windows of recorded speech, float32 [WIN] (3 s at 16 kHz) each: copies[i]
    windows of rec[i] = (float32 audio in [-1, 1), name), each its own draw (seeded by i and the
    copy) of effects (AUG_P), placement (a.late), and clean (30 %) or noise (a.babble_share, a.snr,
    a.babble_talkers) over bab_sources. A line's first window is the same whatever the copies, so
    one more source leaves the others' windows as they were."""
    for i, ((x0, _), n) in enumerate(zip(rec, copies)):
        for c in range(n):
            r = np.random.default_rng(seed("rec", i) if c == 0 else seed("rec", i, c))
            x = augmented(x0, r, "recorded") if r.random() < AUG_P else x0
            w = place(x, tail_of(r, a.late))
            kind = None if r.random() < 0.3 else noise_kind(r, a.babble_share)
            yield mix(w, speech_power(x), kind, float(r.uniform(*a.snr)), r, bab_sources, a.babble_talkers)


def place(x, tail):
    """x at the end of a WIN-sample window, ending `tail` samples before it (x's start is cut
    when longer; a negative tail cuts that many samples off x's end); zeros before."""
    if tail < 0:
        x, tail = x[:tail], 0
    w = np.zeros(WIN, np.float32)
    end = WIN - tail
    seg = x[-end:] if len(x) > end else x
    w[end - len(seg):end] = seg
    return w


def tail_of(r, late=None):
    """Samples between a training clip's end and its window's end (place's tail): uniform in
    -0.25..0.3 s, so the speech ends 0.05-0.6 s before the window's end, where stage 1 fires in
    quiet. late = (share, max_s): that share of the windows instead ends 0.3..max_s s after the
    clip, as when stage 1 fires late in babble (the command early in the window, more noise after
    it)."""
    if late is not None and r.random() < late[0]:
        return int(r.integers(int(0.3 * C.SR), int(late[1] * C.SR)))
    return int(r.integers(-int(0.25 * C.SR), int(0.3 * C.SR)))


def speech_power(x):
    a, b = augment.speech_bounds(x * 32768)
    return float(np.mean(np.asarray(x[a:b], np.float64) ** 2)) + 1e-12


def babble(rng, sources, n=WIN, talkers=4):
    """Babble of `talkers` clips of `sources`, each at a random place in the n-sample window
    (a clip shorter than the window leaves the rest of it to the other talkers), unit power."""
    nz = np.zeros(n)
    for j in rng.choice(len(sources), talkers, replace=False):
        b = sources[j]
        o = int(rng.integers(0, len(b) - n)) if len(b) > n else 0
        seg = b[o:o + n]
        st = int(rng.integers(0, n - len(seg) + 1))
        nz[st:st + len(seg)] += seg
    return nz / (nz.std() + 1e-9)


def float_pair(text):
    """argparse type of "A,B" (two numbers): (A, B); anything else is refused, saying so."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected two numbers as A,B (e.g. 0.3,1.5)") from None
    return lo, hi


def noise_kind(r, babble_share=None):
    """The noise of one noisy training copy: one of TRAIN_NOISES, uniformly (babble_share None),
    or babble with probability babble_share and else one of the other three uniformly."""
    if babble_share is None:
        return TRAIN_NOISES[int(r.integers(len(TRAIN_NOISES)))]
    others = [k for k in TRAIN_NOISES if k != "babble"]
    return "babble" if r.random() < babble_share else others[int(r.integers(len(others)))]


def mix(w, p_speech, kind, snr, rng, bab_sources, talkers=None):
    """Window w with `kind` noise over the whole window at `snr` dB over speech power p_speech;
    babble by babble() or, with talkers = (LO, HI), of LO..HI talkers without pause as the tests
    make it (augment.NoiseBank.babble_noise; bab_sources then a NoiseBank): denser than babble(),
    which leaves gaps; at 5 dB SNR each of two talkers is only 8 dB below the command."""
    if kind is None:
        return w
    if kind == "babble":
        nz = babble(rng, bab_sources) if talkers is None else bab_sources.babble_noise(rng, WIN, talkers)
    else:
        nz = augment.colored_noise(rng, WIN, kind)
    nz = nz / (np.sqrt(np.mean(nz ** 2)) + 1e-12)
    y = w + nz * np.sqrt(p_speech / 10 ** (snr / 10))
    return np.clip(y, -1, 32767 / 32768).astype(np.float32)


# ---------------------------------------------------------------- frozen encoder (ONNX)
class Encoder:
    def __init__(self, paths, threads):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.mel = ort.InferenceSession(str(paths["mel"]), so, providers=["CPUExecutionProvider"])
        self.enc = ort.InferenceSession(str(paths["encoder"]), so, providers=["CPUExecutionProvider"])

    def __call__(self, w):
        mel = self.mel.run(None, {"audio": w[None]})[0]
        return self.enc.run(None, {"log_mel": mel})[0][0]


class Top:
    """The top encoder layers (build_encoder(m, n, first=...)): encoder_hidden -> encoder_states."""

    def __init__(self, path, threads):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def __call__(self, h):
        return self.s.run(None, {"encoder_hidden": h[None].astype(np.float32)})[0][0]


def encode_all(enc, windows, what):
    t0 = time.time()
    out = np.empty((len(windows), 150, 384), np.float16)
    for i, w in enumerate(windows):
        out[i] = enc(w)
        if (i + 1) % 1000 == 0:
            print(f"  {what}: {i + 1}/{len(windows)} encoded ({time.time() - t0:.0f} s)", flush=True)
    return out


# ---------------------------------------------------------------- sequences
def sequences(m):
    """Token ids of the 13 candidates: ' Cap.' per command (verifier_check rule B) and none."""
    tok = m.tokenizer()
    seqs = [tok.encode(D.caption(c), add_special_tokens=False).ids for c in C.COMMANDS]
    return seqs + [[m.token_id(NONE_TOKEN)]]


class Targets:
    """The sequences training teaches: the 13 candidates (sequences(m)), then with captions=True
    the caption (decoys.caption: ' Lights up.') of each negative whose text is known, in the
    order met."""

    def __init__(self, seqs, tok, captions):
        self.seqs, self.tok, self.captions, self.index = list(seqs), tok, captions, {}

    def label(self, lab, text):
        """The index in self.seqs a clip of label `lab` (a command's index or C.NONE) and text
        `text` (None when unknown: accent variants) is trained to say: `lab`, or with captions
        a negative's own caption."""
        if not self.captions or lab != C.NONE or not text:
            return lab
        if text not in self.index:
            self.index[text] = len(self.seqs)
            self.seqs.append(self.tok.encode(D.caption(text), add_special_tokens=False).ids)
        return self.index[text]


def batch_of(m, seqs, L):
    """tokens/targets/mask [len(seqs), L] for prompt + seq + <|endoftext|> (verifier_check.decoder_batch,
    padded to a fixed L so the training step compiles once)."""
    pr, eot = m.prompt(), m.eot()
    tokens = np.full((len(seqs), L), eot, np.int32)
    targets = np.full((len(seqs), L), eot, np.int32)
    mask = np.zeros((len(seqs), L), np.float32)
    for i, s in enumerate(seqs):
        f = pr + s + [eot]
        tokens[i, :len(f) - 1] = f[:-1]
        targets[i, :len(f) - 1] = f[1:]
        mask[i, len(pr) - 1:len(f) - 1] = 1
    return tokens, targets, mask


# ---------------------------------------------------------------- the decoder in JAX
LAYER_KEYS = ["self_attention/layer_norm/gamma", "self_attention/layer_norm/beta", "self_attention/linear_0/weight",
              "self_attention/linear_0/bias", "self_attention/linear_1/weight", "self_attention/linear_1/bias",
              "attention/layer_norm/gamma", "attention/layer_norm/beta", "attention/linear_0/weight",
              "attention/linear_0/bias", "attention/linear_1/weight", "attention/linear_1/bias",
              "attention/linear_2/weight", "attention/linear_2/bias", "ffn/layer_norm/gamma", "ffn/layer_norm/beta",
              "ffn/linear_0/weight", "ffn/linear_0/bias", "ffn/linear_1/weight", "ffn/linear_1/bias"]


ENC_LAYER_KEYS = [k for k in LAYER_KEYS if k.startswith(("self_attention/", "ffn/"))]


def trainable(m, enc_top=0):
    """The fine-tuned weights: the decoder's (LAYER_KEYS of every layer, its final layer norm)
    and, with enc_top, the top enc_top encoder layers' and the encoder's final layer norm."""
    keys = [f"encoder/layer_{i}/{k}" for i in range(m.n_enc - enc_top, m.n_enc) for k in ENC_LAYER_KEYS]
    keys += ["encoder/layer_norm/gamma", "encoder/layer_norm/beta"] if enc_top else []
    keys += [f"decoder/layer_{i}/{k}" for i in range(m.n_dec) for k in LAYER_KEYS]
    keys += ["decoder/layer_norm/gamma", "decoder/layer_norm/beta"]
    return {k: np.asarray(m.weights[k], np.float32) for k in keys}


def enc_top_of(m, Q):
    """How many top encoder layers the LoRA parameters Q (lora_init's) fine-tune."""
    return sum(1 for i in range(m.n_enc) if f"encoder/layer_{i}/ffn/linear_0/weight/lora_a" in Q)


def lora_init(m, rank, rng, enc_top=0):
    """LoRA parameters (Hu et al. 2021, arXiv:2106.09685) for every linear weight of the decoder
    (and of the top enc_top encoder layers): {W/lora_a [rank, in] (normal, std 1/sqrt(in)), W/lora_b [out, rank] (zeros)}, plus the biases
    and layer norms, which are trained in full (they are small)."""
    Q = {}
    for k, v in trainable(m, enc_top).items():
        if k.endswith("/weight"):
            out_, in_ = v.shape
            Q[k + "/lora_a"] = rng.normal(0, 1 / np.sqrt(in_), (rank, in_)).astype(np.float32)
            Q[k + "/lora_b"] = np.zeros((out_, rank), np.float32)
        else:
            Q[k] = v
    return Q


def grow_lora(m, Q, rank, enc_top):
    """LoRA parameters Q (lora_init's) extended down to the top enc_top encoder layers: the layers
    Q tunes keep their parameters, the ones below start as lora_init's (B = 0: the model is
    unchanged until trained). enc_top must not be below enc_top_of(m, Q)."""
    if enc_top < enc_top_of(m, Q):
        raise ValueError(f"the LoRA tunes the top {enc_top_of(m, Q)} encoder layers; cannot shrink it to {enc_top}")
    fresh = lora_init(m, rank, np.random.default_rng(1), enc_top)
    return {**{k: v for k, v in fresh.items() if k not in Q}, **Q}


def lora_merge(m, Q, scale):
    """Full parameters (trainable's) from LoRA parameters Q: W + scale * B @ A (numpy or JAX arrays)."""
    P = {}
    for k, v in trainable(m, enc_top_of(m, Q)).items():
        P[k] = v + scale * (Q[k + "/lora_b"] @ Q[k + "/lora_a"]) if k.endswith("/weight") else Q[k]
    return P


def freeze_encoder(m, Q, scale):
    """LoRA parameters Q (lora_init's, tuning encoder layers or not) split for a decoder-only
    fine-tune on top of them: (Q's decoder parameters, Q's encoder parameters, the encoder weights
    with those merged, for tuned_model and whisper_onnx.build_encoder). The decoder parameters
    trained on that encoder's states, joined with the encoder parameters unchanged, are one LoRA
    file again (verifier_train.py --freeze-encoder)."""
    enc = {k: v for k, v in Q.items() if k.startswith("encoder/")}
    dec = {k: v for k, v in Q.items() if k not in enc}
    merged = {k: v for k, v in lora_merge(m, Q, scale).items() if k.startswith("encoder/")}
    return dec, enc, merged


def make_decoder(m, merge=None):
    """(loss(params, enc, tokens, targets, mask, weight), logprob(params, enc, tokens, targets, mask))
    in JAX, the same computation as whisper_onnx.build_decoder. With `merge`, params are what
    merge(params) turns into the decoder's (LoRA)."""
    import jax
    import jax.numpy as jnp
    d, H, n_dec = m.d_model, m.n_heads_dec, m.n_dec
    emb = jnp.asarray(m.weights["decoder/embeddings/weight"], jnp.float32)
    pos = jnp.asarray(m.weights["decoder/position_encodings/encodings"], jnp.float32)

    def ln(x, g, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / jnp.sqrt(var + WO.LN_EPS) * g + b

    def lin(x, w, b):
        return x @ w.T + b

    def attend(q, k, v, bias=None, heads=H):
        B, L, _ = q.shape
        S = k.shape[1]
        hd = d // heads
        q = q.reshape(B, L, heads, hd).transpose(0, 2, 1, 3)
        k = k.reshape(B, S, heads, hd).transpose(0, 2, 3, 1)
        v = v.reshape(B, S, heads, hd).transpose(0, 2, 1, 3)
        s = (q @ k) / np.sqrt(hd)
        if bias is not None:
            s = s + bias
        return (jax.nn.softmax(s, -1) @ v).transpose(0, 2, 1, 3).reshape(B, L, d)

    def encoder_top(P, x):
        """The top encoder layers P holds (trainable's enc_top) and the final layer norm, on the
        states before them [B, T, d] (build_encoder(m, n, last=...)'s encoder_hidden)."""
        He = m.n_heads_enc
        for i in range(m.n_enc):
            p = f"encoder/layer_{i}/"
            if p + "ffn/linear_0/weight" not in P:
                continue
            h = ln(x, P[p + "self_attention/layer_norm/gamma"], P[p + "self_attention/layer_norm/beta"])
            q, k, v = jnp.split(lin(h, P[p + "self_attention/linear_0/weight"], P[p + "self_attention/linear_0/bias"]),
                                3, -1)
            x = x + lin(attend(q, k, v, heads=He), P[p + "self_attention/linear_1/weight"],
                        P[p + "self_attention/linear_1/bias"])
            h = ln(x, P[p + "ffn/layer_norm/gamma"], P[p + "ffn/layer_norm/beta"])
            h = jax.nn.gelu(lin(h, P[p + "ffn/linear_0/weight"], P[p + "ffn/linear_0/bias"]), approximate=False)
            x = x + lin(h, P[p + "ffn/linear_1/weight"], P[p + "ffn/linear_1/bias"])
        return ln(x, P["encoder/layer_norm/gamma"], P["encoder/layer_norm/beta"])

    def hidden(P, enc, tokens):
        if "encoder/layer_norm/gamma" in P:
            enc = encoder_top(P, enc)
        L = tokens.shape[1]
        x = emb[tokens] + pos[:L]
        idx = jnp.arange(L)
        bias = jnp.where(idx[None, :] > idx[:, None], -1e9, 0.0)
        for i in range(n_dec):
            p = f"decoder/layer_{i}/"
            h = ln(x, P[p + "self_attention/layer_norm/gamma"], P[p + "self_attention/layer_norm/beta"])
            q, k, v = jnp.split(lin(h, P[p + "self_attention/linear_0/weight"], P[p + "self_attention/linear_0/bias"]),
                                3, -1)
            x = x + lin(attend(q, k, v, bias), P[p + "self_attention/linear_1/weight"], P[p + "self_attention/linear_1/bias"])
            h = ln(x, P[p + "attention/layer_norm/gamma"], P[p + "attention/layer_norm/beta"])
            q = lin(h, P[p + "attention/linear_0/weight"], P[p + "attention/linear_0/bias"])
            k, v = jnp.split(lin(enc, P[p + "attention/linear_1/weight"], P[p + "attention/linear_1/bias"]), 2, -1)
            x = x + lin(attend(q, k, v), P[p + "attention/linear_2/weight"], P[p + "attention/linear_2/bias"])
            h = ln(x, P[p + "ffn/layer_norm/gamma"], P[p + "ffn/layer_norm/beta"])
            h = jax.nn.gelu(lin(h, P[p + "ffn/linear_0/weight"], P[p + "ffn/linear_0/bias"]), approximate=False)
            x = x + lin(h, P[p + "ffn/linear_1/weight"], P[p + "ffn/linear_1/bias"])
        return ln(x, P["decoder/layer_norm/gamma"], P["decoder/layer_norm/beta"])

    def logprob(P, enc, tokens, targets, mask):
        """Per-sequence sum of mask * log p(target): [B]."""
        if merge is not None:
            P = merge(P)
        logp = jax.nn.log_softmax(hidden(P, enc, tokens) @ emb.T, -1)
        lp = jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
        return (lp * mask).sum(-1)

    def loss(P, enc, tokens, targets, mask, weight):
        return -(logprob(P, enc, tokens, targets, mask) * weight).sum() / weight.sum()

    return jax.jit(jax.value_and_grad(loss)), jax.jit(logprob)


def tuned_model(m, P):
    """A copy of model `m` (whisper_ct2.WhisperCT2) whose weights are updated with `P`, for
    whisper_onnx.build_decoder."""
    import copy
    t = copy.copy(m)
    t.weights = dict(m.weights)
    t.weights.update({k: np.asarray(v, np.float32) for k, v in P.items()})
    return t


def save_lora(path, Q, rank, alpha):
    """LoRA parameters (names as in lora_init) as a LoRA file (common.write_lora)."""
    C.write_lora(path, Q, rank, alpha)


def read_lora(m, path):
    """(Q, rank, alpha) of the LoRA file at `path` (save_lora's), Q as float32. Raises ValueError
    when it is not a LoRA of `m`'s decoder."""
    Q, rank, alpha = C.read_lora(path)
    missing = set(lora_init(m, rank, np.random.default_rng(0), enc_top_of(m, Q))) - set(Q)
    if missing:
        raise ValueError(f"{path}: not a LoRA file of this model: {len(missing)} arrays missing, e.g. {sorted(missing)[0]}")
    return Q, rank, alpha


def load_lora(m, path):
    """The decoder parameters of `m` with the LoRA file at `path` applied (float32), for
    tuned_model."""
    Q, rank, alpha = read_lora(m, path)
    return lora_merge(m, Q, alpha / rank)


def adam(params, grads, state, lr, b1=0.9, b2=0.999, eps=1e-8):
    m_, v_, t = state
    t += 1
    out, nm, nv = {}, {}, {}
    for k in params:
        g = np.asarray(grads[k])
        nm[k] = b1 * m_[k] + (1 - b1) * g
        nv[k] = b2 * v_[k] + (1 - b2) * g * g
        out[k] = params[k] - lr * (nm[k] / (1 - b1 ** t)) / (np.sqrt(nv[k] / (1 - b2 ** t)) + eps)
    return out, (nm, nv, t)


def train(m, P, enc_states, labels, weights, seqs, epochs, lr, batch, rng, merge=None):
    """Adam on the weighted teacher-forced loss; returns (params, seconds)."""
    step, _ = make_decoder(m, merge)
    L = max(len(s) for s in seqs) + len(m.prompt())
    cand = batch_of(m, seqs, L)
    state = ({k: np.zeros_like(v) for k, v in P.items()}, {k: np.zeros_like(v) for k, v in P.items()}, 0)
    n = len(labels)
    steps = epochs * (n // batch)
    k = 0
    t0 = time.time()
    for ep in range(epochs):
        order = rng.permutation(n)
        tot, cnt = 0.0, 0
        for b in range(n // batch):
            idx = order[b * batch:(b + 1) * batch]
            lab = labels[idx]
            lr_k = lr * min(1.0, (k + 1) / 50) * 0.5 * (1 + np.cos(np.pi * k / steps))
            val, g = step(P, enc_states[idx].astype(np.float32), cand[0][lab], cand[1][lab], cand[2][lab], weights[idx])
            P, state = adam(P, g, state, lr_k)
            tot += float(val)
            cnt += 1
            k += 1
        print(f"  epoch {ep + 1}/{epochs}: loss {tot / cnt:.4f} ({time.time() - t0:.0f} s)", flush=True)
    return P, time.time() - t0


# ---------------------------------------------------------------- evaluation (ONNX Runtime)
class Scorer:
    """The 13 candidates of one window through an ONNX decoder."""

    def __init__(self, path, m, seqs, threads):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        L = max(len(s) for s in seqs) + len(m.prompt())
        t, g, k = batch_of(m, seqs, L)
        self.feed = {"tokens": t.astype(np.int64), "targets": g.astype(np.int64), "mask": k}

    def __call__(self, enc):
        return self.s.run(["score"], {"encoder_states": enc[None].astype(np.float32), **self.feed})[0]


def decide(scores, theta):
    """(command index or C.NONE): the best command when it beats none by >= theta, else none."""
    best = int(np.argmax(scores[:-1]))
    return best if scores[best] - scores[-1] >= theta else C.NONE


def check_voices(a, checks, m, seqs, encs, ft, bab, out, say):
    """The neural-voice check clips `checks` (check_clips) through the new decoder `ft` and the baseline
    LoRA, at the bundle's θ (verifier_export.py's default): a markdown table per set via `say`. encs(w):
    the window's encoder states for the baseline and for `ft`."""
    import onnx
    theta = 1.5
    base = None
    bname = Path(a.baseline_lora).name if a.baseline_lora else "-"
    if a.baseline_lora and enc_top_of(m, read_lora(m, a.baseline_lora)[0]):
        # its decoder was trained on its own encoder layers' states, which encs(w) does not give
        bname = f"- ({bname} tunes encoder layers, which this comparison does not apply; its own report has its numbers)"
    elif a.baseline_lora:
        path = out / "whisper_decoder_baseline.onnx"
        onnx.save(WO.build_decoder(tuned_model(m, load_lora(m, a.baseline_lora)), rest_as_none=True), path)
        base = Scorer(path, m, seqs, a.threads)
    tail = int(TEST_TAIL_S * C.SR)
    rows = {}
    t0 = time.time()
    for path, label, name, voice in checks:
        x = C.read_wav(path).astype(np.float32) / 32768
        for cond, kind, snr in CHECK_CONDS:
            r = np.random.default_rng(seed("check", path, cond))
            eb, ef = encs(mix(place(x, tail), speech_power(x), kind, snr, r, bab))
            rows.setdefault((name, cond), []).append((label, voice, ft(ef), base(eb) if base else None))
    say()
    say(f"Neural-voice check sets (verifier_voices.py check; voices never trained on), each clip as one 3 s window "
        f"ending {TEST_TAIL_S} s after it, θ={theta:g}: accepted right / wrong command of the command clips, false "
        f"accepts of the negative clips; baseline: {bname} "
        f"({time.time() - t0:.0f} s):")
    say()
    say("| set | condition | commands | negatives | baseline: acc / wrong / FA | new: acc / wrong / FA |")
    say("|---|---|---|---|---|---|")

    def cell(rs, k):
        if rs[0][k] is None:
            return "-"
        pos = [r for r in rs if r[0] != C.NONE]
        neg = [r for r in rs if r[0] == C.NONE]
        acc = np.mean([decide(r[k], theta) == r[0] for r in pos])
        wrong = np.mean([decide(r[k], theta) not in (r[0], C.NONE) for r in pos])
        fa = sum(decide(r[k], theta) != C.NONE for r in neg)
        return f"{100 * acc:.1f} % / {100 * wrong:.1f} % / {fa}"
    for (name, cond), rs in rows.items():
        npos = sum(r[0] != C.NONE for r in rs)
        say(f"| {name} | {cond} | {npos} | {len(rs) - npos} | {cell(rs, 3)} | {cell(rs, 2)} |")
    voices = sorted({(n, r[1]) for (n, c), rs in rows.items() for r in rs})
    say()
    say("Per voice, command clips accepted right (clean / pink 5 dB / babble 10 dB)"
        + (", baseline → new:" if base else ":"))
    say()
    for n, v in voices:
        cells = []
        for cond, _, _ in CHECK_CONDS:
            rs = [r for r in rows[(n, cond)] if r[1] == v and r[0] != C.NONE]
            f = [np.mean([decide(r[k], theta) == r[0] for r in rs]) for k in ((3, 2) if base else (2,))]
            cells.append(" → ".join(f"{100 * x:.0f}" for x in f) + " %")
        say(f"- {n} {v}: " + " / ".join(cells))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--voices", type=int, default=60, help="espeak-ng training voices")
    ap.add_argument("--negatives", type=int, default=900, help="synthetic negative clips")
    ap.add_argument("--accent-variants", type=int, default=0, metavar="N",
                    help="N pronunciation variants of each command by the espeak-ng training voices, with the "
                    "sound rules of other accents (accents.py), and as many of the near misses as none")
    ap.add_argument("--game-speech", type=int, default=0, metavar="N",
                    help="also the English voice lines of two games as none, N copies each, and as babble "
                    "talkers (game_english)")
    ap.add_argument("--captions", action="store_true",
                    help="train a synthetic negative whose text is known to say its own caption (' Lights up.') "
                         "instead of <|nocaptions|>, so its probability leaves the 13 scored sequences")
    ap.add_argument("--copies", type=int, default=4, help="augmented copies of each command clip")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lora", type=int, default=0, help="LoRA rank (0: fine-tune the decoder in full)")
    ap.add_argument("--lora-alpha", type=float, default=32.0, help="LoRA scale = alpha / rank")
    ap.add_argument("--save-lora", default=None, help="write the trained LoRA parameters (fp16 .npz) here")
    ap.add_argument("--init-lora", default=None, help="start from this LoRA file (its rank and alpha) instead of "
                    "lora_init: a new vocabulary learns from the shipped LoRA (scripts/train-commands)")
    ap.add_argument("--no-tests", action="store_true", help="train and write the decoder and LoRA only (the report "
                    "holds the training lines; stream_check.py measures the bundle)")
    ap.add_argument("--no-voices", action="store_true", help="espeak-ng only (no verifier_voices.py clips)")
    ap.add_argument("--freeze-encoder", action="store_true", help="with --init-lora: keep its encoder layers as they "
                    "are (merged into the encoder, so every window's states are computed once) and fine-tune the "
                    "decoder alone; the saved LoRA carries both (scripts/train-commands' step 4)")
    ap.add_argument("--encoder-top", type=int, default=0, help="also fine-tune this many top encoder layers (LoRA "
                    "on their linear layers, like the decoder's; 0 to the encoder's 4; with --lora or --init-lora)")
    ap.add_argument("--babble-share", type=float, default=None, help="share of the noisy training copies with "
                    "babble (default: a quarter, each of TRAIN_NOISES alike)")
    ap.add_argument("--babble-talkers", type=float_pair, default=None, metavar="LO,HI",
                    help="babble of LO..HI talkers speaking without pause (augment.NoiseBank, as the tests "
                    "make it) instead of 4 clips at random places (babble)")
    ap.add_argument("--snr", type=float_pair, default=TRAIN_SNR_DB,
                    metavar="LO,HI", help=f"SNR range (dB over the speech) of the noisy training copies "
                    f"(default {TRAIN_SNR_DB[0]:g},{TRAIN_SNR_DB[1]:g})")
    ap.add_argument("--late", type=float_pair, default=None,
                    metavar="SHARE,MAX_S", help="that share of the training windows end 0.3..MAX_S s after their "
                    "clip instead of -0.25..0.3 s (tail_of)")
    ap.add_argument("--baseline-lora", default=str(C.REF / "verifier_lora.npz"),
                    help="LoRA scored beside the new one on the neural-voice check sets ('' for none)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OUTPOST_ORT_THREADS", "2")))
    ap.add_argument("--out", default=None, help="directory of the ONNX files (default CACHE/verifier)")
    ap.add_argument("--report", default=str(Path(__file__).resolve().parent.parent / "verifier_train.md"))
    a = ap.parse_args()
    if a.snr[0] >= a.snr[1]:
        ap.error(f"--snr {a.snr[0]:g},{a.snr[1]:g}: expected LO < HI (dB)")
    if a.late is not None and not (0 < a.late[0] <= 1 and a.late[1] > 0.3):
        ap.error(f"--late {a.late[0]:g},{a.late[1]:g}: expected a share in (0, 1] and MAX_S above 0.3 s")
    if a.babble_talkers is not None:
        lo, hi = a.babble_talkers
        if lo != int(lo) or hi != int(hi) or not 1 <= lo <= hi:
            ap.error(f"--babble-talkers {lo:g},{hi:g}: expected whole numbers 1 <= LO <= HI")
        a.babble_talkers = (int(lo), int(hi))
    if a.game_speech < 0:
        ap.error(f"--game-speech {a.game_speech}: expected a number of copies, 0 or more")
    if a.babble_share is not None and not 0 <= a.babble_share <= 1:
        ap.error(f"--babble-share {a.babble_share:g}: expected a share in [0, 1]")
    import verifier_check as VC

    out = Path(a.out) if a.out else C.CACHE / "verifier"
    m = whisper_ct2.WhisperCT2()
    paths = {k: out / f"whisper_{k}.onnx" for k in ("mel", "encoder", "decoder")}
    if not all(p.exists() for p in paths.values()):
        WO.export(out, 3.0, m)
    import onnx
    if a.freeze_encoder and (not a.init_lora or a.encoder_top):
        raise SystemExit("--freeze-encoder keeps the encoder layers of the --init-lora LoRA and tunes the decoder "
                         "alone: it needs --init-lora and no --encoder-top")
    Q_init, rank_init, alpha_init = read_lora(m, a.init_lora) if a.init_lora else (None, 0, 0.0)
    frozen = {}     # --freeze-encoder: the initial LoRA's encoder parameters, kept as they are
    if a.freeze_encoder:
        Q_init, frozen, merged = freeze_encoder(m, Q_init, alpha_init / rank_init)
    elif a.init_lora:
        # a LoRA that tunes encoder layers goes on tuning them (the windows stop below them)
        a.encoder_top = max(a.encoder_top, enc_top_of(m, Q_init))
    if not 0 <= a.encoder_top <= m.n_enc:
        raise SystemExit(f"--encoder-top {a.encoder_top}: Whisper tiny.en has {m.n_enc} encoder layers (expected 0-{m.n_enc})")
    n_mel = WIN // WO.HOP
    first_top = m.n_enc - a.encoder_top
    if a.encoder_top:
        # training windows through the frozen lower layers once; the top ones are trained
        lower = out / f"whisper_encoder_lower{first_top}.onnx"
        onnx.save(WO.build_encoder(m, n_mel, last=first_top), lower)
        enc = Encoder({"mel": paths["mel"], "encoder": lower}, a.threads)
    elif frozen:
        # the whole encoder with the frozen LoRA merged (as verifier_export.py exports it)
        onnx.save(WO.build_encoder(tuned_model(m, merged), n_mel), out / "whisper_encoder_frozen.onnx")
        enc = Encoder({"mel": paths["mel"], "encoder": out / "whisper_encoder_frozen.onnx"}, a.threads)
    else:
        enc = Encoder(paths, a.threads)
    seqs = sequences(m)
    rng = np.random.default_rng(0)
    lines = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    # training set
    t0 = time.time()
    synth_clips = training_clips(a.voices, a.negatives, rng, a.accent_variants)
    n_espeak = len(synth_clips)
    if not a.no_voices:
        synth_clips += other_voices()
    rec = recorded(("it", "ru"))
    n_rec = len(rec)
    if a.game_speech:
        rec += game_english()
    bab_sources = [x for x, lab, *_ in synth_clips if lab == C.NONE and len(x) > C.SR] + [x for x, _ in rec]
    if a.babble_talkers is not None:
        bab_sources = augment.NoiseBank.of_speech(bab_sources)
    windows, labels, weights = [], [], []
    targets = Targets(seqs, m.tokenizer(), a.captions)
    n_pos = sum(1 for _, lab, *_ in synth_clips if lab != C.NONE)
    for i, (x0, lab, src, text) in enumerate(synth_clips):
        p0 = speech_power(x0)
        for c in range(a.copies if lab != C.NONE else 1):
            r = np.random.default_rng(seed("train", i, c))
            x, p = x0, p0
            if (c > 0 or lab == C.NONE) and r.random() < AUG_P:
                x = augmented(x0, r, src.split()[0])
                p = speech_power(x)
            w = place(x, tail_of(r, a.late))
            kind = None if (c == 0 and lab != C.NONE) or r.random() < 0.15 else noise_kind(r, a.babble_share)
            windows.append(mix(w, p, kind, float(r.uniform(*a.snr)), r, bab_sources, a.babble_talkers))
            labels.append(targets.label(lab, text))
    for w in recorded_windows(rec, [1] * n_rec + [a.game_speech] * (len(rec) - n_rec), a, bab_sources):
        windows.append(w)
        labels.append(C.NONE)
    for i in range(300):
        r = np.random.default_rng(seed("noise", i))
        kind = TRAIN_NOISES[i % len(TRAIN_NOISES)]
        windows.append(mix(np.zeros(WIN, np.float32), 10 ** (r.uniform(-5, -2)), kind, 0.0, r, bab_sources, a.babble_talkers))
        labels.append(C.NONE)
    labels = np.array(labels)
    is_none = labels >= C.NONE          # <|nocaptions|>, or a negative's own caption (--captions)
    n_none = int(is_none.sum())
    # each class half the weight: commands and "none" count the same in the loss
    weights = np.where(is_none, 0.5 / n_none, 0.5 / (len(labels) - n_none)).astype(np.float32)
    engines = sorted({src.split()[0] for _, _, src, _ in synth_clips})
    acc_pos = sum(1 for _, lab, src, _ in synth_clips if lab != C.NONE and src.endswith(" accent"))
    acc_neg = sum(1 for _, lab, src, _ in synth_clips if lab == C.NONE and src.endswith(" accent"))
    say(f"training windows: {len(labels)} ({len(labels) - n_none} command windows from {n_pos} clips x {a.copies} copies "
        f"({sum(1 for _, lab, *_ in synth_clips[:n_espeak] if lab != C.NONE)} "
        f"of {a.voices} espeak-ng training voices"
        f"{f' ({acc_pos} of them accent variants, accents.py)' if a.accent_variants else ''}"
        f", the rest of {', '.join(e for e in engines if e != 'espeak') or 'no other engine'}); "
        f"{n_none} none: {len(synth_clips) - n_pos} synthetic near misses and sentences"
        f"{f' ({acc_neg} accent variants of near misses)' if a.accent_variants else ''}, {n_rec} Asterisk it/ru prompts, "
        f"{f'{len(rec) - n_rec} English game lines x {a.game_speech}, ' if a.game_speech else ''}"
        f"300 noise-only; {int(100 * AUG_P)} % of the copies (not a command clip's first) through "
        f"augment.random_effects_v3); noisy copies at {a.snr[0]:g}-{a.snr[1]:g} dB SNR, "
        f"{'a quarter' if a.babble_share is None else f'{100 * a.babble_share:.0f} %'} of them babble"
        f"{'' if a.babble_talkers is None else ' of {}-{} talkers without pause'.format(*a.babble_talkers)}; "
        f"{'' if a.late is None else f'{100 * a.late[0]:.0f} % of the windows ending 0.3-{a.late[1]:g} s after their clip; '}"
        f"made in {time.time() - t0:.0f} s")
    t0 = time.time()
    enc_states = encode_all(enc, windows, "training windows")
    del windows
    t_enc = time.time() - t0
    say(f"encoder states: {t_enc:.0f} s ({1000 * t_enc / len(labels):.1f} ms per window, {a.threads} ORT threads)")

    if a.init_lora:
        Q, a.lora, a.lora_alpha = Q_init, rank_init, alpha_init
        say(f"LoRA started from {a.init_lora} (rank {a.lora}, alpha {a.lora_alpha:g})")
        if frozen:
            say(f"  its {enc_top_of(m, frozen)} encoder layer(s) frozen (merged into the encoder): the decoder alone "
                "is tuned")
        had = enc_top_of(m, Q)
        if a.encoder_top and had != a.encoder_top:
            Q = grow_lora(m, Q, a.lora, a.encoder_top)
            say(f"  + a new LoRA on encoder layer(s) {m.n_enc - a.encoder_top}-{m.n_enc - had - 1}")
    if a.lora:
        scale = a.lora_alpha / a.lora
        if not a.init_lora:
            Q = lora_init(m, a.lora, np.random.default_rng(1), a.encoder_top)
        Q, t_train = train(m, Q, enc_states, labels, weights, targets.seqs, a.epochs, a.lr, a.batch, rng,
                           merge=lambda q: lora_merge(m, q, scale))
        n_params = sum(v.size for v in Q.values())
        Q = {**{k: np.asarray(v) for k, v in Q.items()}, **frozen}
        P = lora_merge(m, Q, scale)
        what = (f"LoRA rank {a.lora} (scale {scale:g}) on every decoder linear layer"
                + (f" and those of the top {a.encoder_top} encoder layer(s)" if a.encoder_top else "")
                + ", biases and layer norms in full"
                + (f" (the top {enc_top_of(m, frozen)} encoder layers' LoRA frozen)" if frozen else ""))
        if a.save_lora:
            save_lora(a.save_lora, Q, a.lora, a.lora_alpha)
            say(f"written: {a.save_lora}")
    else:
        if a.encoder_top:
            raise SystemExit("--encoder-top needs --lora or --init-lora")
        P, t_train = train(m, trainable(m), enc_states, labels, weights, targets.seqs, a.epochs, a.lr, a.batch, rng)
        what = "the decoder in full (embeddings frozen)"
        n_params = sum(v.size for v in P.values())
    say(f"fine-tune: {what}; {n_params / 1e6:.2f} M parameters trained, {a.epochs} epochs, batch {a.batch}, "
        f"Adam lr {a.lr} (50-step warm-up, cosine): {t_train:.0f} s on this CPU")
    del enc_states

    ft_path = out / "whisper_decoder_ft.onnx"
    onnx.save(WO.build_decoder(tuned_model(m, P), rest_as_none=True), ft_path)
    say(f"written: {ft_path}")
    if a.encoder_top:
        tops = {}
        for what, mm in (("base", m), ("ft", tuned_model(m, P))):
            tops[what] = out / f"whisper_encoder_top{first_top}_{what}.onnx"
            onnx.save(WO.build_encoder(mm, n_mel, first=first_top), tops[what])
        top_base, top_ft = Top(tops["base"], a.threads), Top(tops["ft"], a.threads)
        say(f"written: {tops['ft']}")

    enc_base = Encoder(paths, a.threads) if frozen else None

    def encs(w):
        """Encoder states of window w for the baseline (Whisper's own encoder) and the fine-tuned decoder."""
        h = enc(w)
        if frozen:
            return enc_base(w), h
        return (top_base(h), top_ft(h)) if a.encoder_top else (h, h)
    if a.no_tests:
        write_report(a.report, lines)
        return

    # tests
    cmds, negs, bab = VC.clip_sets()
    base = Scorer(paths["decoder"], m, seqs, a.threads)
    ft = Scorer(ft_path, m, seqs, a.threads)
    conds = [("clean", None, None)] + [(f"{k} {s} dB", k, s) for k in TEST_NOISES for s in TEST_SNRS]
    tail = int(TEST_TAIL_S * C.SR)
    results = {}
    t0 = time.time()
    for name, kind, snr in conds:
        rows = []
        for j, (path, label, voice) in enumerate(cmds + negs):
            x = C.read_wav(path).astype(np.float32) / 32768
            r = np.random.default_rng(seed("test", path, name))
            w = mix(place(x, tail), speech_power(x), kind, snr, r, bab)
            eb, ef = encs(w)
            rows.append((C.LABELS.index(label), base(eb), ft(ef), voice))
        results[name] = rows
        print(f"  {name}: scored ({time.time() - t0:.0f} s)", flush=True)
    say(f"test windows scored in {time.time() - t0:.0f} s")
    say()
    say(f"Held-out voices: {len(cmds)} command clips (12 voices), {len(negs)} negative clips (3 voices); the "
        f"utterance ends {TEST_TAIL_S} s before the end of the 3 s window. closed-set: best of the 12 commands, no "
        f"rejection; acc: right command and accepted; wrong: wrong command accepted; FA: negative clips accepted.")
    say()
    hdr = "| condition | zero-shot closed-set | fine-tuned closed-set | " + " | ".join(
        f"fine-tuned θ={t:g}: acc / wrong / FA" for t in THETAS) + " |"
    say(hdr)
    say("|" + "---|" * (3 + len(THETAS)))
    for name, rows in results.items():
        pos = [r for r in rows if r[0] != C.NONE]
        neg = [r for r in rows if r[0] == C.NONE]
        zs = np.mean([int(np.argmax(r[1][:-1])) == r[0] for r in pos])
        fc = np.mean([int(np.argmax(r[2][:-1])) == r[0] for r in pos])
        cells = []
        for t in THETAS:
            acc = np.mean([decide(r[2], t) == r[0] for r in pos])
            wrong = np.mean([decide(r[2], t) not in (r[0], C.NONE) for r in pos])
            fa = sum(decide(r[2], t) != C.NONE for r in neg)
            cells.append(f"{100 * acc:.1f} % / {100 * wrong:.1f} % / {fa}")
        say(f"| {name} | {100 * zs:.1f} % | {100 * fc:.1f} % | " + " | ".join(cells) + " |")
    # held-out recorded speech: Allison Smith, US English
    en = recorded(("en",))
    hours = sum(len(x) for x, _ in en) / C.SR / 3600
    fas = {t: [] for t in THETAS}
    for x, name in en:
        s = ft(encs(place(x, tail))[1])
        for t in THETAS:
            d = decide(s, t)
            if d != C.NONE:
                fas[t].append(f"{name} -> {C.COMMANDS[d]}")
    say()
    say(f"Held-out recorded speech, Asterisk US English (Allison Smith, never trained on): {len(en)} prompts, "
        f"{hours:.2f} h, each as one 3 s window ending {TEST_TAIL_S} s after the prompt (every prompt verified, "
        f"as if the trigger had fired on each):")
    for t in THETAS:
        say(f"- θ={t:g}: {len(fas[t])} false accepts ({len(fas[t]) / hours:.1f} per hour of speech)"
            + (f": {'; '.join(fas[t][:8])}" if fas[t] else ""))
    checks = check_clips()
    if checks:
        check_voices(a, checks, m, seqs, encs, ft, bab, out, say)
    write_report(a.report, lines)


def write_report(path, lines):
    Path(path).write_text(
        "# Whisper tiny.en verifier, fine-tuned: held-out accuracy and false accepts (issue 18)\n\n"
        f"Produced on {time.strftime('%Y-%m-%d')} by `{' '.join(['python'] + sys.argv)}` "
        "(models/reference/recipe/verifier_train.py; its docstring says what is trained on and tested).\n\n"
        + "\n".join(lines) + "\n")
    print(f"report: {path}")


if __name__ == "__main__":
    main()
