"""RHVoice (HTS-style statistical parametric synthesis by Olga Yakovleva) as speech no training step
uses: its US English voices bdl (male) and clb (female), built from the CMU ARCTIC recordings of
two speakers that no other set of the recipe has. neural_check.py measures the head on them.

The English voices alan, bdl, clb and slt are LGPL-2.1+ (Debian's copyright file: `data/*`);
slt is the speaker of the report's held-out flite and festival voices, and alan is most likely
awb, a flite training voice, so neither is used here; evgeniy-eng and lyubov are
CC-BY-NC-ND-4.0 and not used. Debian ships RHVoice in non-free only because its voices cannot
be rebuilt from source. Nothing is installed system-wide: the three pinned .deb files below
(core library, C API library, English language and voice data) are fetched from
deb.debian.org, checked against their SHA-256 and unpacked with `dpkg-deb -x` into
CACHE/rhvoice (common.fetch_debs); the library is driven through ctypes (RHVoice.h of
librhvoice-dev 1.8.0: an engine over a data and a config directory, a message per utterance,
int16 samples by callback at the voice's rate, 24 kHz for these voices), resampled to 16 kHz by
sox without dither (neural_tts.to_16k). It needs libsonic (Debian `libsonic0`, which espeak-ng
depends on, so scripts/setup brings it). Synthesis is deterministic: the same text and
parameters give the same samples.

Rate and pitch are RHVoice's absolute synthesis parameters, in [-1, 1] (0 = the voice's own;
rate 0.4 makes an utterance about 0.7 times as long). Voice names are case-insensitive.

  python rhvoice_tts.py OUT.wav bdl "lights on" [RATE PITCH]    # one clip (fetches RHVoice if missing)
"""
import ctypes as ct
import sys

import numpy as np

import common as C
import neural_tts as NT

DEBIAN = "https://deb.debian.org/debian/pool/non-free/r/rhvoice/"
DEBS = {  # Debian bookworm, rhvoice 1.8.0+dfsg-3
    "librhvoice-core7_1.8.0+dfsg-3_amd64.deb": "7b321d21caf899c78e579593f105fd49995f4d0c948c0523b2b4baa3291375f5",
    "librhvoice5_1.8.0+dfsg-3_amd64.deb": "7a12f124a48941ec0e94aeaa60da44a27c164a31d5a6bb884875e533a6d15128",
    "rhvoice-english_1.8.0+dfsg-3_all.deb": "7ea5227bcfc54b814086f53225ff47052b444d4554e8c4e752c9e6b29edf89a5",
}
ROOT = C.CACHE / "rhvoice" / "root"
LIB_DIR = "usr/lib/x86_64-linux-gnu"
DATA = "usr/share/RHVoice"
CONFIG = "etc/RHVoice"
VOICES = ["bdl", "clb"]

_SAMPLE_RATE_CB = ct.CFUNCTYPE(ct.c_int, ct.c_int, ct.c_void_p)
_PLAY_SPEECH_CB = ct.CFUNCTYPE(ct.c_int, ct.POINTER(ct.c_short), ct.c_uint, ct.c_void_p)


class _Callbacks(ct.Structure):       # RHVoice_callbacks; unused callbacks must be NULL
    _fields_ = [("set_sample_rate", _SAMPLE_RATE_CB), ("play_speech", _PLAY_SPEECH_CB),
                ("process_mark", ct.c_void_p), ("word_starts", ct.c_void_p), ("word_ends", ct.c_void_p),
                ("sentence_starts", ct.c_void_p), ("sentence_ends", ct.c_void_p), ("play_audio", ct.c_void_p),
                ("done", ct.c_void_p)]


class _InitParams(ct.Structure):      # RHVoice_init_params
    _fields_ = [("data_path", ct.c_char_p), ("config_path", ct.c_char_p), ("resource_paths", ct.c_void_p),
                ("callbacks", _Callbacks), ("options", ct.c_uint)]


class _SynthParams(ct.Structure):     # RHVoice_synth_params
    _fields_ = [("voice_profile", ct.c_char_p), ("absolute_rate", ct.c_double), ("absolute_pitch", ct.c_double),
                ("absolute_volume", ct.c_double), ("relative_rate", ct.c_double), ("relative_pitch", ct.c_double),
                ("relative_volume", ct.c_double), ("punctuation_mode", ct.c_int), ("punctuation_list", ct.c_char_p),
                ("capitals_mode", ct.c_int), ("flags", ct.c_int)]


def unpacked(root):
    """True if `root` holds both libraries and every voice of VOICES."""
    return (all((root / LIB_DIR / f).exists() for f in ("libRHVoice_core.so.7", "libRHVoice.so.5"))
            and all((root / DATA / "voices" / v / "voice.info").exists() for v in VOICES))


def fetch():
    """Downloads, verifies and unpacks the pinned .deb files into CACHE/rhvoice, once
    (common.fetch_debs). Raises RuntimeError naming the file whose SHA-256 does not match."""
    C.fetch_debs(DEBIAN, DEBS, C.CACHE / "rhvoice", ROOT, unpacked, "rhvoice_tts.py")


class RHVoice:
    """One RHVoice engine over the unpacked English data. Calling it with (text, voice, rate,
    pitch) returns the utterance as int16 at 16 kHz. Raises RuntimeError when the engine does not
    load, refuses the text or voice, or an utterance fails or gives no audio. close() frees the
    engine (also on garbage collection)."""

    def __init__(self):
        fetch()
        try:
            ct.CDLL("libsonic.so.0", mode=ct.RTLD_GLOBAL)
        except OSError as e:
            raise RuntimeError(f"RHVoice needs libsonic: apt-get install -y libsonic0 ({e})") from None
        ct.CDLL(str(ROOT / LIB_DIR / "libRHVoice_core.so.7"), mode=ct.RTLD_GLOBAL)
        self.lib = lib = ct.CDLL(str(ROOT / LIB_DIR / "libRHVoice.so.5"))
        lib.RHVoice_new_tts_engine.restype = ct.c_void_p
        lib.RHVoice_new_tts_engine.argtypes = [ct.POINTER(_InitParams)]
        lib.RHVoice_new_message.restype = ct.c_void_p
        lib.RHVoice_new_message.argtypes = [ct.c_void_p, ct.c_char_p, ct.c_uint, ct.c_int,
                                            ct.POINTER(_SynthParams), ct.c_void_p]
        lib.RHVoice_speak.argtypes = [ct.c_void_p]
        lib.RHVoice_delete_message.argtypes = [ct.c_void_p]
        lib.RHVoice_delete_tts_engine.argtypes = [ct.c_void_p]
        self.rate, self.chunks, self.error = None, [], None
        # the callbacks stay referenced by self for the engine's lifetime
        self._cb_rate = _SAMPLE_RATE_CB(self._set_rate)
        self._cb_play = _PLAY_SPEECH_CB(self._play)
        self._params = _InitParams(str(ROOT / DATA).encode(), str(ROOT / CONFIG).encode(), None,
                                   _Callbacks(self._cb_rate, self._cb_play, *[None] * 7), 0)
        self.engine = lib.RHVoice_new_tts_engine(ct.byref(self._params))
        if not self.engine:
            raise RuntimeError(f"RHVoice did not load its data from {ROOT / DATA}")

    def _set_rate(self, rate, _user):
        self.rate = rate
        return 1

    def _play(self, samples, n, _user):
        try:            # an exception here would be printed by ctypes and lost: stop synthesis instead
            self.chunks.append(np.ctypeslib.as_array(samples, (n,)).copy())
            return 1
        except Exception as e:
            self.error = e
            return 0

    def close(self):
        if getattr(self, "engine", None):
            self.lib.RHVoice_delete_tts_engine(ct.c_void_p(self.engine))
            self.engine = None

    __del__ = close

    def __call__(self, text, voice, rate=0.0, pitch=0.0):
        self.chunks, self.rate, self.error = [], None, None
        sp = _SynthParams(voice.encode(), rate, pitch, 0.0, 1.0, 1.0, 1.0, 0, None, 0, 0)
        b = text.encode()
        msg = self.lib.RHVoice_new_message(self.engine, b, len(b), 0, ct.byref(sp), None)   # 0: plain text
        if not msg:
            raise RuntimeError(f"RHVoice refused the message {text!r} for voice {voice}")
        try:
            ok = self.lib.RHVoice_speak(msg)
        finally:
            self.lib.RHVoice_delete_message(msg)
        if not ok or self.error or not self.chunks or not self.rate:
            raise RuntimeError(f"RHVoice failed on {text!r} with voice {voice}"
                               + (f": {self.error!r}" if self.error else " (no audio)"))
        return NT.to_16k(np.concatenate(self.chunks), self.rate)


def maker():
    """A job -> clip function over one loaded engine (jobs: dicts with text, voice, rate and
    pitch), for synth_neural.synthesise."""
    tts = RHVoice()
    return lambda j: tts(j["text"], j["voice"], j["rate"], j["pitch"])


if __name__ == "__main__":
    out, voice, text = sys.argv[1:4]
    rate, pitch = (float(a) for a in sys.argv[4:6]) if len(sys.argv) > 5 else (0.0, 0.0)
    C.write_wav(out, RHVoice()(text, voice, rate, pitch))
