"""SVOX Pico TTS (the Android platform's offline engine, HMM synthesis trained on recorded
speakers) as speech no training step uses: the en-GB and en-US voices, two female speakers.
neural_check.py measures the head on the en-GB voice; training on both voices was tried and
not adopted (training_report.md, "What was tried", item 19).

Pico ships in Debian's non-free archive only because its voice data ("lingware") comes without
the sources it was built from; upstream (android.googlesource.com/platform/external/svox)
licenses library and lingware as Apache-2.0 (Debian's copyright file:
"Claims to be Apache-2.0 but the source code is not included. At least, it is
redistributable"). Nothing is installed system-wide: the two pinned .deb files below (library, voice data) are
fetched from deb.debian.org, checked against their SHA-256, and unpacked with `dpkg-deb -x`
into CACHE/pico; the library is driven through ctypes (the API of pico2wave.c: one voice
definition of a text-analysis and a signal-generation resource, text in, 16 kHz s16 PCM out).

Pitch and rate are varied with Pico's own markup, `<pitch level="P">` and `<speed level="S">`
(percent of the voice's default; Pico accepts 50-200 and 20-500).

  python pico_tts.py OUT.wav en-GB "lights on" [PITCH SPEED]    # one clip (fetches Pico if missing)
"""
import ctypes as ct
import sys

import numpy as np

import common as C

DEBIAN = "https://deb.debian.org/debian/pool/non-free/s/svox/"
DEBS = {  # Debian bookworm, svox 1.0+git20130326-13
    "libttspico0_1.0+git20130326-13_amd64.deb": "fc9e4dbc664a7756ae73e83633d9987e6b0f2fd5248f04def8beb8de6df2cd02",
    "libttspico-data_1.0+git20130326-13_all.deb": "25c9904cef2471302634c03deff3ca96b588e22ea94929dda72d940584a3b84a",
}
ROOT = C.CACHE / "pico" / "root"
LIB = ROOT / "usr/lib/x86_64-linux-gnu/libttspico.so.0"
LANG_DIR = ROOT / "usr/share/pico/lang"
# voice -> (text-analysis resource, signal-generation resource), as pico2wave pairs them
VOICES = {"en-US": ("en-US_ta.bin", "en-US_lh0_sg.bin"), "en-GB": ("en-GB_ta.bin", "en-GB_kh0_sg.bin")}
MEM_BYTES = 2_500_000        # pico2wave's PICO_MEM_SIZE
STEP_BUSY = 201              # picodefs.h PICO_STEP_BUSY: more audio to fetch
RESET_FULL = 0               # picodefs.h PICO_RESET_FULL


def unpacked(root):
    """True if `root` holds the library and every voice's two resources."""
    lang = root / LANG_DIR.relative_to(ROOT)
    return (root / LIB.relative_to(ROOT)).exists() and all((lang / f).exists() for pair in VOICES.values() for f in pair)


def fetch():
    """Downloads, verifies and unpacks the pinned .deb files into CACHE/pico, once
    (common.fetch_debs). Raises RuntimeError naming the file whose SHA-256 does not match."""
    C.fetch_debs(DEBIAN, DEBS, C.CACHE / "pico", ROOT, unpacked, "pico_tts.py")


class Pico:
    """One Pico engine per voice ("en-US" or "en-GB"). Calling it with (text, pitch %, speed %)
    returns the utterance as int16 at 16 kHz (Pico's native rate). Deterministic per call: the
    engine keeps state between utterances (its excitation differs on a second call of the same
    text), so every call starts with a full engine reset and a clip depends only on its
    arguments, not on which clips a shard made before it."""

    def __init__(self, voice):
        fetch()
        self.lib = ct.CDLL(str(LIB))
        self.mem = ct.create_string_buffer(MEM_BYTES)
        self.system, self.engine = ct.c_void_p(), ct.c_void_p()
        self._ok(self.lib.pico_initialize(self.mem, ct.c_uint32(MEM_BYTES), ct.byref(self.system)), "initialize")
        self._ok(self.lib.pico_createVoiceDefinition(self.system, b"outpost"), "createVoiceDefinition")
        for f in VOICES[voice]:
            res, name = ct.c_void_p(), ct.create_string_buffer(200)
            self._ok(self.lib.pico_loadResource(self.system, str(LANG_DIR / f).encode(), ct.byref(res)), f)
            self._ok(self.lib.pico_getResourceName(self.system, res, name), f)
            self._ok(self.lib.pico_addResourceToVoiceDefinition(self.system, b"outpost", name.value), f)
        self._ok(self.lib.pico_newEngine(self.system, b"outpost", ct.byref(self.engine)), "newEngine")

    @staticmethod
    def _ok(status, what):
        if status != 0:
            raise RuntimeError(f"pico {what}: status {status}")

    def __call__(self, text, pitch=100, speed=100):
        marked = f'<pitch level="{int(pitch)}"><speed level="{int(speed)}">{text}</speed></pitch>'
        data = marked.encode() + b"\0"       # pico_putTextUtf8 takes the terminating NUL
        self._ok(self.lib.pico_resetEngine(self.engine, ct.c_int32(RESET_FULL)), "resetEngine")
        pos, out = 0, bytearray()
        buf, got, kind, put = ct.create_string_buffer(4096), ct.c_int16(), ct.c_int16(), ct.c_int16()
        while pos < len(data):
            self._ok(self.lib.pico_putTextUtf8(self.engine, data[pos:], ct.c_int16(len(data) - pos),
                                               ct.byref(put)), "putTextUtf8")
            pos += put.value
            while True:
                status = self.lib.pico_getData(self.engine, buf, ct.c_int16(len(buf)), ct.byref(got), ct.byref(kind))
                out += buf.raw[:got.value]
                if status != STEP_BUSY:
                    break
        return np.frombuffer(bytes(out), np.int16).copy()


def maker(voices):
    """A job -> clip function over loaded engines of `voices` (jobs: dicts with text, voice,
    pitch and speed in percent), for synth_neural.synthesise."""
    engines = {v: Pico(v) for v in voices}
    return lambda j: engines[j["voice"]](j["text"], j["pitch"], j["speed"])


if __name__ == "__main__":
    out, voice, text = sys.argv[1:4]
    pitch, speed = (int(a) for a in sys.argv[4:6]) if len(sys.argv) > 5 else (100, 100)
    C.write_wav(out, Pico(voice)(text, pitch, speed))
