"""Augmentation: sox effects (speed/pitch/tempo/reverb/radio channel) and noise generators
(white/pink/brown/blue/babble/hum/tones). Stream composition, levels and SNR: features.py."""
import subprocess

import numpy as np

import common as C


def speech_bounds(x, rel_db=-35.0, hop=160):
    """(start, end) samples of the speech in a clean clip: 10 ms frames within rel_db of the
    loudest frame."""
    x = np.asarray(x, np.float64)
    n = max(1, len(x) // hop)
    e = np.sqrt(np.mean(x[:n * hop].reshape(n, hop) ** 2, axis=1) + 1e-9)
    db = 20 * np.log10(e / (e.max() + 1e-9) + 1e-12)
    act = np.nonzero(db > rel_db)[0]
    if len(act) == 0:
        return 0, len(x)
    return int(act[0] * hop), int(min(len(x), (act[-1] + 1) * hop))


def sox(x, effects):
    """Apply sox `effects` (a list of effect arguments) to int16-scale 16 kHz mono `x`; returns
    float32 int16-scale samples. No dither (`-D`): sox's default dither is seeded from the clock,
    which made augmented features differ by up to 2 LSB between runs of the same recipe."""
    if not effects:
        return x
    p = subprocess.run(["sox", "-V1", "-D", "-t", "s16", "-r", "16000", "-c", "1", "-", "-t", "s16", "-r", "16000",
                        "-c", "1", "-"] + effects, input=np.asarray(x, "<i2").tobytes(),
                       stdout=subprocess.PIPE, check=True)
    return np.frombuffer(p.stdout, "<i2").astype(np.float32)


def colored_noise(rng, n, kind):
    if kind == "white":
        return rng.normal(0, 1, n)
    w = rng.normal(0, 1, n)
    f = np.fft.rfftfreq(n, 1 / C.SR)
    f[0] = f[1] if n > 1 else 1
    spec = np.fft.rfft(w)
    if kind == "pink":
        spec /= np.sqrt(f)
    elif kind == "brown":
        spec /= f
    elif kind == "blue":
        spec *= np.sqrt(f)
    y = np.fft.irfft(spec, n)
    return y / (y.std() + 1e-9)


def tones(rng, n):
    """music-like: a sequence of random chords with harmonics and envelopes."""
    t = np.arange(n) / C.SR
    y = np.zeros(n)
    pos = 0
    while pos < n:
        ln = int(rng.uniform(0.15, 0.8) * C.SR)
        seg = slice(pos, min(n, pos + ln))
        tt = t[seg] - t[pos]
        env = np.exp(-tt * rng.uniform(0.5, 6))
        for _ in range(rng.integers(1, 4)):
            f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
            for h in range(1, 5):
                y[seg] += env * np.sin(2 * np.pi * f0 * h * tt + rng.uniform(0, 6.28)) / h ** 1.5
        pos += ln
    return y / (y.std() + 1e-9)


def hum(rng, n):
    t = np.arange(n) / C.SR
    f0 = rng.choice([50.0, 60.0, 400.0, 1000.0])
    y = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
    return y / (y.std() + 1e-9) + 0.3 * rng.normal(0, 1, n)


class NoiseBank:
    def __init__(self, babble_clips):
        self.babble = [np.asarray(b, np.float32) for b in babble_clips]

    @classmethod
    def of_speech(cls, clips):
        """The bank whose babble is these clean int16 clips (16 kHz), each cut to its speech
        (speech_bounds), as the checks build it from every third negative utterance."""
        return cls([x[slice(*speech_bounds(x))] for x in clips])

    def babble_noise(self, rng, n, talkers=(2, 5)):
        """n samples of babble, unit power: talkers[0]..talkers[1] talkers (uniform), each
        talking without pause from before the first sample to the last, clip after clip of the
        bank with 0-0.19 s between them."""
        y = np.zeros(n)
        for _ in range(rng.integers(talkers[0], talkers[1] + 1)):
            pos = -int(rng.integers(0, C.SR))
            while pos < n:
                b = self.babble[rng.integers(len(self.babble))]
                b = b / (b.std() + 1e-9)
                s, e = max(pos, 0), min(n, pos + len(b))
                if e > s:
                    y[s:e] += b[s - pos:e - pos]
                pos += len(b) + int(rng.integers(0, 3000))
        return y / (y.std() + 1e-9)

    def noise(self, rng, n, kind=None):
        kind = kind or rng.choice(["white", "pink", "brown", "blue", "babble", "babble", "tones", "hum"],
                                  p=[0.15, 0.2, 0.15, 0.05, 0.25, 0.0, 0.1, 0.1])
        if kind == "babble":
            return self.babble_noise(rng, n), kind
        if kind == "tones":
            return tones(rng, n), kind
        if kind == "hum":
            return hum(rng, n), kind
        return colored_noise(rng, n, kind), kind


def random_effects(rng):
    eff = []
    r = rng.random()
    if r < 0.25:
        eff += ["speed", f"{rng.uniform(0.88, 1.12):.3f}", "rate", "-h", "16000"]
    elif r < 0.45:
        eff += ["pitch", f"{rng.uniform(-350, 350):.0f}"]
    elif r < 0.6:
        eff += ["tempo", f"{rng.uniform(0.85, 1.2):.3f}"]
    if rng.random() < 0.25:
        eff += ["reverb", f"{rng.uniform(10, 90):.0f}", "50", f"{rng.uniform(10, 100):.0f}"]
    if rng.random() < 0.15:
        lo, hi = rng.uniform(200, 500), rng.uniform(2800, 4000)
        eff += ["sinc", f"{lo:.0f}-{hi:.0f}", "compand", "0.01,0.2", "-60,-60,-30,-12,0,-4", "-3"]
    elif rng.random() < 0.1:
        eff += ["lowpass", f"{rng.uniform(2500, 6000):.0f}"]
    elif rng.random() < 0.1:
        eff += ["highpass", f"{rng.uniform(100, 400):.0f}"]
    return eff


def random_effects_v3(rng, engine):
    """Speaker/channel diversity (AUG v3, the extra training streams of features.py):
    vocal-tract-length perturbation (sox `speed f` then `pitch` back by -1200*log2(f) cents
    +- a random pitch change: formants shift by f, the pitch stays roughly where it was; the
    flite and Piper training voices are male, so their range reaches up to female formants,
    the Kokoro training styles are female, so theirs reaches down to male ones; other engines,
    espeak-ng, the recorded Italian (male) and Russian (female) speakers and field recordings
    (field_recordings.py, speakers of either sex), get 0.85-1.18), random
    tempo, 0-3 random peaking-EQ bands, band-limited / radio channels, reverb, compand."""
    eff = ["gain", "-8"]                               # headroom for EQ/pitch; level is set later
    if rng.random() < 0.85:
        lo, hi = {"flite": (0.9, 1.25), "piper": (0.9, 1.25), "kokoro": (0.82, 1.12)}.get(engine, (0.85, 1.18))
        f = rng.uniform(lo, hi)
        cents = -1200 * np.log2(f) + rng.uniform(-300, 300)
        eff += ["speed", f"{f:.3f}", "pitch", f"{cents:.0f}", "rate", "-h", "16000"]
    if rng.random() < 0.3:
        eff += ["tempo", f"{rng.uniform(0.85, 1.2):.3f}"]
    for _ in range(int(rng.integers(0, 4))):
        fc = np.exp(rng.uniform(np.log(150), np.log(6000)))
        eff += ["equalizer", f"{fc:.0f}", f"{rng.uniform(0.5, 2.0):.2f}q", f"{rng.uniform(-10, 10):.1f}"]
    r = rng.random()
    if r < 0.15:
        lo, hi = rng.uniform(200, 500), rng.uniform(2800, 4000)
        eff += ["sinc", f"{lo:.0f}-{hi:.0f}", "compand", "0.01,0.2", "-60,-60,-30,-12,0,-4", "-3"]
    elif r < 0.3:
        eff += ["lowpass", f"{rng.uniform(2500, 7000):.0f}"]
    elif r < 0.4:
        eff += ["highpass", f"{rng.uniform(100, 500):.0f}"]
    if rng.random() < 0.3:
        eff += ["reverb", f"{rng.uniform(10, 90):.0f}", "50", f"{rng.uniform(10, 100):.0f}"]
    return eff
