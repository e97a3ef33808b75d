"""Real speech and real engine noise from games' Debian data packages. The shipped models are
trained on none of it; voice_lines() and engine_noise() serve the checks:

  voice_lines()   the English voice packs of Hedgewars (hedgewars-data 1.0.2-6, GFDL-1.3):
                  short acted lines (`Takecover`, `Justyouwait`, `Leavemealone`, ...) by the
                  actors of nine packs, 10 min in all, none of them a command. Held-out real
                  speech for false accepts per hour (stream_check.py).
  engine_noise()  the vehicle engines of Warzone 2100 (warzone2100-data 4.3.3-3, GPL-2+):
                  tank treads, hover, VTOL, cyborg and construction-unit movement loops and
                  transporter flight, each at unit RMS, back to back: the "engine" noise of
                  stream_check.py.

  warzone_lines(), fillets_lines()  English voice lines of Warzone 2100 (15 min, radio-processed)
                  and the dialogue of Fish Fillets NG (fillets-ng-data 1.0.1-1.1, GPL-2; 6 min):
                  "none" speech for verifier_train.py --game-speech (tried, not shipped).

The packages are fetched once into CACHE/games (common.fetch_debs, pinned by SHA-256) and the
files converted to 16 kHz mono by sox (field_recordings.to_16k_mono); the converted audio is
cached as WAVs next to them (fillets-ng-data only when fillets_lines() asks). The Hedgewars
packs left out: Robot (a vocoder effect), and the Polish, Russian, Spanish and Ukrainian ones
(not English).

  python game_audio.py      # fetch, convert, print what there is
"""
import os
import zipfile

import numpy as np

import common as C
import field_recordings as FR

DEBIAN = "https://deb.debian.org/debian/pool/main/"
# (pool directory, .deb, SHA-256, where it is unpacked); Debian trixie
FILLETS = ("f/fillets-ng-data/", "fillets-ng-data_1.0.1-1.1_all.deb",
           "25de89afd8b1adf7bcace8290248a6a22c89cd42300317e69000e162c032cf84", C.CACHE / "games" / "fillets-ng")
DEBS = [("h/hedgewars/", "hedgewars-data_1.0.2-6_all.deb",
         "722225903a72604403e6e0026e40e9a6953f47a74d94efc5f55504bc05bb4761", C.CACHE / "games" / "hedgewars"),
        ("w/warzone2100/", "warzone2100-data_4.3.3-3_all.deb",
         "53ad292569e0bf9d16de1642d13629f29ed5dfb68896787e4c65ac60edc07d3d", C.CACHE / "games" / "warzone2100")]
VOICES = DEBS[0][3] / "usr/share/games/hedgewars/Data/Sounds/voices"
VOICE_PACKS = ["British", "Classic", "Default", "HillBilly", "Mobster", "Pirate", "Russian", "Singer", "Surfer"]
WARZONE = DEBS[1][3] / "usr/share/games/warzone2100/base.wz"
WARZONE_NOT_SPEECH = ("audio/sfx/", "audio/radclick/", "audio/nexus/laugh", "audio/taunts/taunt1/haha",
                      "audio/taunts/taunt2/haha", "audio/taunts/taunt3/haha")
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


def wz_member(z, member):
    """int16 [N] 16 kHz mono audio of the .ogg `member` of Warzone 2100's archive z (sox converts a
    temporary copy). Raises KeyError for a member the archive lacks, CalledProcessError when sox
    fails."""
    tmp = CONVERTED / f"wz.tmp{os.getpid()}.ogg"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(z.read(member))
    try:
        return FR.to_16k_mono(tmp)
    finally:
        tmp.unlink()


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


def warzone_lines():
    """[(float32 audio in [-1, 1), "warzone/<dir>/<line>")] of Warzone 2100's English voice lines
    (base.wz, every .ogg outside WARZONE_NOT_SPEECH: the commander, unit, tutorial, mission and
    countdown lines of a few actors, radio-processed), in name order, at their recorded level."""
    fetch()
    out = []
    with zipfile.ZipFile(WARZONE) as z:
        for n in sorted(z.namelist()):
            if not n.endswith(".ogg") or any(n.startswith(p) for p in WARZONE_NOT_SPEECH):
                continue
            name = "warzone/" + n[len("audio/"):-len(".ogg")] if n.startswith("audio/") else "warzone/" + n[:-4]
            x = converted(name, lambda n=n: wz_member(z, n))
            out.append((x.astype(np.float32) / 32768, name))
    return out


def fillets_lines():
    """[(float32 audio in [-1, 1), "fillets/<level>/<line>")] of Fish Fillets NG's English dialogue
    (fillets-ng-data 1.0.1-1.1, GPL-2: the two fish and the level's objects, 6 min, every
    sound/*/en/*.ogg), in path order, at their recorded level. Fetched only when asked for;
    raises RuntimeError when the downloaded .deb does not match its SHA-256 pin (FILLETS)."""
    pool, deb, sha, root = FILLETS
    C.fetch_debs(DEBIAN + pool, {deb: sha}, C.CACHE / "games", root, lambda r: r.is_dir(), "game_audio.py")
    out = []
    for f in sorted((root / "usr/share/games/fillets-ng/sound").glob("*/en/*.ogg")):
        name = f"fillets/{f.parent.parent.name}/{f.stem}"
        x = converted(name, lambda f=f: FR.to_16k_mono(f))
        out.append((x.astype(np.float32) / 32768, name))
    return out


def engine_noise():
    """float64 [N]: the Warzone 2100 engine loops of ENGINES, each scaled to unit RMS, back to
    back (16 s)."""
    fetch()
    parts = []
    with zipfile.ZipFile(WARZONE) as z:
        for e in ENGINES:
            x = converted(f"warzone/{e}", lambda e=e: wz_member(z, f"audio/sfx/vehicle/{e}.ogg")).astype(np.float64)
            parts.append(x / (np.sqrt(np.mean(x ** 2)) + 1e-9))
    return np.concatenate(parts)


if __name__ == "__main__":
    lines = voice_lines()
    print(f"Hedgewars: {len(lines)} lines, {sum(len(x) for x, _ in lines) / C.SR / 60:.1f} min")
    print(f"Warzone 2100 engines: {len(engine_noise()) / C.SR:.1f} s")
