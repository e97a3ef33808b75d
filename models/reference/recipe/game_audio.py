"""Real speech and real engine noise from two games' Debian data packages, for the checks only
(nothing here is trained on):

  voice_lines()   the English voice packs of Hedgewars (hedgewars-data 1.0.2-6, GFDL-1.3):
                  short acted lines (`Takecover`, `Justyouwait`, `Leavemealone`, ...) by the
                  actors of nine packs, 10 min in all, none of them a command. Held-out real
                  speech for false accepts per hour (stream_check.py).
  engine_noise()  the vehicle engines of Warzone 2100 (warzone2100-data 4.3.3-3, GPL-2+):
                  tank treads, hover, VTOL, cyborg and construction-unit movement loops and
                  transporter flight, each at unit RMS, back to back: the "engine" noise of
                  stream_check.py.

Both packages are fetched once into CACHE/games (common.fetch_debs, pinned by SHA-256) and the
files converted to 16 kHz mono by sox (field_recordings.to_16k_mono); the converted audio is
cached as WAVs next to them. The packs left out: Robot (a vocoder effect), and the Polish,
Russian, Spanish and Ukrainian ones (not English).

  python game_audio.py      # fetch, convert, print what there is
"""
import os
import zipfile

import numpy as np

import common as C
import field_recordings as FR

DEBIAN = "https://deb.debian.org/debian/pool/main/"
# (pool directory, .deb, SHA-256, where it is unpacked); Debian trixie
DEBS = [("h/hedgewars/", "hedgewars-data_1.0.2-6_all.deb",
         "722225903a72604403e6e0026e40e9a6953f47a74d94efc5f55504bc05bb4761", C.CACHE / "games" / "hedgewars"),
        ("w/warzone2100/", "warzone2100-data_4.3.3-3_all.deb",
         "53ad292569e0bf9d16de1642d13629f29ed5dfb68896787e4c65ac60edc07d3d", C.CACHE / "games" / "warzone2100")]
VOICES = DEBS[0][3] / "usr/share/games/hedgewars/Data/Sounds/voices"
VOICE_PACKS = ["British", "Classic", "Default", "HillBilly", "Mobster", "Pirate", "Russian", "Singer", "Surfer"]
WARZONE = DEBS[1][3] / "usr/share/games/warzone2100/base.wz"
ENGINES = ["tread", "hovmove", "vtol-move", "cyber-move", "con-move", "tflight", "thover"]
CONVERTED = C.CACHE / "games" / "wav"


def fetch():
    """Fetches and unpacks both packages under CACHE/games, once. Raises RuntimeError naming a
    file whose SHA-256 does not match its pin."""
    for pool, deb, sha, root in DEBS:
        C.fetch_debs(DEBIAN + pool, {deb: sha}, C.CACHE / "games", root, lambda r: r.is_dir(), "game_audio.py")


def converted(name, read):
    """int16 16 kHz mono audio cached as CONVERTED/name.wav; read() -> int16 when missing."""
    p = CONVERTED / f"{name}.wav"
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".tmp{os.getpid()}.wav")
        C.write_wav(tmp, read())
        os.replace(tmp, p)
    return C.read_wav(p)


def voice_lines():
    """[(float32 audio in [-1, 1), "hedgewars/<pack>/<line>")] of the nine English voice packs,
    in pack and file-name order, at their recorded level."""
    fetch()
    out = []
    for pack in VOICE_PACKS:
        for f in sorted((VOICES / pack).glob("*.ogg")):
            x = converted(f"hedgewars/{pack}/{f.stem}", lambda f=f: FR.to_16k_mono(f))
            out.append((x.astype(np.float32) / 32768, f"hedgewars/{pack}/{f.stem}"))
    return out


def engine_noise():
    """float64 [N]: the Warzone 2100 engine loops of ENGINES, each scaled to unit RMS, back to
    back (16 s)."""
    fetch()
    parts = []
    with zipfile.ZipFile(WARZONE) as z:
        for e in ENGINES:
            def read(e=e):
                tmp = CONVERTED / f"{e}.tmp{os.getpid()}.ogg"
                tmp.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(z.read(f"audio/sfx/vehicle/{e}.ogg"))
                try:
                    return FR.to_16k_mono(tmp)
                finally:
                    tmp.unlink()
            x = converted(f"warzone/{e}", read).astype(np.float64)
            parts.append(x / (np.sqrt(np.mean(x ** 2)) + 1e-9))
    return np.concatenate(parts)


if __name__ == "__main__":
    lines = voice_lines()
    print(f"Hedgewars: {len(lines)} lines, {sum(len(x) for x, _ in lines) / C.SR / 60:.1f} min")
    print(f"Warzone 2100 engines: {len(engine_noise()) / C.SR:.1f} s")
