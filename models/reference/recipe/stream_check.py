"""Streams the verifier's held-out test set through the real daemon (target/release/outpostd
serving the two-stage bundle .outpost/dev-verifier.bundle) with the real client (`outpost send
--json`), and reports stage 1 alone ("trigger") and both stages: accuracy clean and in noise,
per voice and command, minimal-pair confusions, false accepts per hour of negative audio, and
the latency from the end of speech to a detection. Runs in .venv-verifier.

Test set (verifier_check.clip_sets, the one verifier_train.md was measured on): 144 command
clips (12 held-out espeak-ng voices x 12 commands) and 177 negative clips (near misses and
sentences by the 3 make-clips voices), each a 16 kHz int16 WAV with 0.3 s of silence either
side of the speech (scripts/make-clips). Streamed per clip: the clip followed by TAIL_S of
silence (so stage 1, median 0.29 s after the end of speech, has time to fire), clean or with
pink / white / babble noise at 20 / 10 / 5 dB or vehicle-engine noise at 10 / 5 dB over the
whole streamed clip, the SNR over the clip's speech (verifier_check.noisy: augment.speech_bounds,
babble of held-out voices, the Warzone 2100 engines of game_audio.py; seeded per clip and
condition). Negative streams (clean), real speech never trained on: the 177 negative clips, the
held-out recorded US English Asterisk prompts (verifier_train.recorded(("en",)), Allison Smith,
548 prompts), and the lines of nine English Hedgewars voice packs (game_audio.voice_lines, 532
short acted lines by nine actors), each concatenated with GAP_S of silence between items into
streams of at most STREAM_S.

Passes (one daemon each, stopped afterwards):
  1. accuracy: every clip as fast as answers come (`outpost send` without --realtime), JOBS
     clients at once, verification deadline 2000 ms and a 1000 ms frame deadline so that CPU
     contention on a small machine does not turn into misses; then the negative streams, JOBS
     at once in real time (--realtime), as a device hears them: outpostd verifies every
     utterance stage 1 does not fire on, so the verifier's load follows the speech, and a
     stream of back-to-back speech sent faster than real time would overflow its queue;
  2. latency: the clean command clips one at a time with --realtime (80 ms per frame) and the
     bundle's own deadlines (verification 250 ms).
Per clip the first trigger (stage 1: the `trigger` of any detection / not_a_command /
verify_failed line) and the first verified detection are compared with the clip's command.
Trigger latency = end of the trigger frame in stream time ((seq + 1) x 80 ms) minus the end of
speech in the clip (augment.speech_bounds on the clean clip: the last 10 ms frame within 35 dB
of the loudest); verifier latency = verify_total_us (trigger frame's arrival to the verdict).

  python stream_check.py [--quick] [--jobs 12] [--daemon-arg=ARG ...] [--out MD]
WAVs, copies of the binaries and the bundle, and the raw results go to CACHE/stream_check; the
report to --out (default ../stream_check.md). --quick: 3 voices, clean and 5 dB, 30 negative
clips, 1 min of each negative stream (a smoke test, ~3 min; report in CACHE/stream_check).
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import augment
import common as C
import game_audio
import verifier_check as VC
import verifier_train as VT

BIN = C.REPO / "target" / "release"
BUNDLE = C.REPO / ".outpost" / "dev-verifier.bundle"
WORK = C.CACHE / "stream_check"
RUN = WORK / "run"        # the copies of the binaries and the bundle a run uses
FRAME_MS = C.FRAME * 1000 // C.SR        # 80
TAIL_S = 0.7              # silence (noise, in a noisy condition) streamed after each clip's own 0.3 s
GAP_S = 0.5               # silence between the items of a negative stream
STREAM_S = 180.0          # longest negative stream (s); --quick: one stream of QUICK_STREAM_S
QUICK_STREAM_S = 60.0
ACC_VERIFY_DEADLINE_MS = 2000
ACC_FRAME_DEADLINE_MS = 1000
PAIRS = [("lights on", "lights off"), ("volume up", "volume down"), ("start recording", "end recording")]
CONDITIONS = VC.CONDITIONS + [(f"engine {s} dB", "engine", s) for s in (10, 5)]


# ---------------------------------------------------------------- the daemon and the client
def shown(path):
    """`path` relative to the repository when it is inside it, as the report prints it."""
    try:
        return str(path.relative_to(C.REPO))
    except ValueError:
        return str(path)


def snapshot():
    """Copies outpostd, outpost and BUNDLE into RUN, so that a rebuild during the run (the
    work tree is shared) changes nothing; returns the bundle's SHA-256 (hex)."""
    RUN.mkdir(parents=True, exist_ok=True)
    for src in (BIN / "outpostd", BIN / "outpost", BUNDLE):
        tmp = RUN / f"{src.name}.tmp{os.getpid()}"
        shutil.copy2(src, tmp)
        os.replace(tmp, RUN / src.name)
    return hashlib.sha256((RUN / BUNDLE.name).read_bytes()).hexdigest()


class Daemon:
    """outpostd (RUN's copy) serving RUN's copy of BUNDLE on a Unix socket in a temporary
    directory, until `stop`. verify_deadline_ms / max_deadline_ms None: the bundle's and the
    daemon's defaults; args: more outpostd arguments (--daemon-arg)."""

    def __init__(self, verify_deadline_ms=None, max_deadline_ms=None, args=()):
        self.dir = tempfile.TemporaryDirectory(prefix="stream_check.")
        self.sock = f"{self.dir.name}/s.sock"
        extra = []
        if verify_deadline_ms is not None:
            extra += ["--verify-deadline-ms", str(verify_deadline_ms)]
        if max_deadline_ms is not None:
            extra += ["--max-deadline-ms", str(max_deadline_ms)]
        extra += list(args)
        cmd = [str(RUN / "outpostd"), "--dev", "--no-rt", "--bundle", str(RUN / BUNDLE.name), "--socket", self.sock] + extra
        # as the report shows it: the original paths, a placeholder socket
        self.shown = " ".join([str(BIN.relative_to(C.REPO) / "outpostd"), "--dev", "--no-rt", "--bundle",
                               shown(BUNDLE), "--socket", "SOCK"] + extra)
        self.ready = Path(self.dir.name) / "ready"
        self.log = Path(self.dir.name) / "log"
        with open(self.ready, "w") as out, open(self.log, "w") as err:
            self.p = subprocess.Popen(cmd, stdout=out, stderr=err)
        t0 = time.time()
        while not any(l.startswith("READY") for l in self.ready.read_text().splitlines()):
            if self.p.poll() is not None or time.time() - t0 > 90:
                tail = self.log.read_text()[-2000:]
                self.stop()
                sys.exit(f"stream_check: outpostd did not become ready ({' '.join(cmd)}):\n{tail}")
            time.sleep(0.2)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.dir.cleanup()


def send(sock, wav, realtime=False, deadline_ms=None):
    """`outpost send WAV --json --tail-ms 0` -> (events, summary, other output lines). events: the
    JSON lines before the summary (dicts), in the order printed."""
    cmd = [str(RUN / "outpost"), "send", str(wav), "--socket", sock, "--json", "--tail-ms", "0"]
    if realtime:
        cmd.append("--realtime")
    if deadline_ms is not None:
        cmd += ["--deadline-ms", str(deadline_ms)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    events, summary, other = [], None, []
    for line in p.stdout.splitlines():
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            other.append(line)
            continue
        if d.get("type") == "summary":
            summary = d
        else:
            events.append(d)
    if p.returncode != 0 or summary is None:
        other.append(f"exit {p.returncode}: {p.stderr.strip()[-500:]}")
    return events, summary, other


def trouble(result):
    """What went wrong in one `send` result that could change its detections ("" if nothing):
    a failed client, output other than JSON, frame deadline misses or rejections, or failed
    verifications."""
    events, summary, other = result
    if summary is None or other:
        return "; ".join(other) or "no summary"
    bad = [f"{k} {summary[k]}" for k in ("deadline_misses", "rejections", "errors", "verify_failures") if summary[k]]
    return ", ".join(bad)


def triggers(events):
    """Stage-1 triggers of a two-stage run, by frame: [(seq, trigger label, event)]. An
    utterance-end verification (no trigger: its `trigger` is `none`) is not one."""
    return sorted(((e["seq"], e["trigger"], e) for e in events if e.get("trigger") not in (None, "none")),
                  key=lambda t: t[0])


def utterance_ends(events):
    """Answered utterance-end verifications (outpostd verifies an utterance stage 1 did not
    fire on where it ends, and answers a command, a deadline miss, a refusal or a failure):
    [(seq, command or None, event)] by frame."""
    return sorted(((e["seq"], e.get("command"), e) for e in events if e.get("trigger") == "none"),
                  key=lambda t: t[0])


def detections(events):
    """Verified detections: [(seq, command, event)] by frame."""
    return sorted(((e["seq"], e["command"], e) for e in events if e.get("type") == "detection"),
                  key=lambda t: t[0])


def first(items):
    """Label of the first (seq, label, event) item, or None."""
    return items[0][1] if items else None


def frame_end_ms(seq):
    """Stream time (ms) at the end of frame `seq`: the client's time_ms of a detection."""
    return (seq + 1) * FRAME_MS


# ---------------------------------------------------------------- test material
def clip_wav(path, name, kind, snr, bab):
    """The streamed WAV of one clip in one condition: the clip, then TAIL_S more, rounded up to
    whole 80 ms frames, noise over all of it (verifier_check.noisy, seeded by clip and
    condition). Written once into WORK/clips/<condition>/."""
    out = WORK / "clips" / VC.safe(name) / VC.safe(clip_name(path))
    if not out.exists():
        x = C.read_wav(path).astype(np.float32) / 32768
        n = -(-(len(x) + int(TAIL_S * C.SR)) // C.FRAME) * C.FRAME
        y = VC.noisy(x, kind, snr, n, bab, path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}.wav")
        C.write_wav(tmp, np.round(y * 32768))
        os.replace(tmp, out)
    return out


def clip_name(path):
    """A clip's name for file names and the report: its last two path parts (voice directory, or
    neg/<voice> for a negative clip, and file name)."""
    p = Path(path)
    return ("neg/" if p.parent.parent.name == "neg" else "") + f"{p.parent.name}/{p.name}"


def speech_end_ms(path):
    """End of speech in a clean clip (ms from its start): augment.speech_bounds."""
    return augment.speech_bounds(C.read_wav(path).astype(np.float64))[1] * 1000 / C.SR


def negative_streams(items, name, max_s, d):
    """items [(float audio in [-1, 1), item name)] -> [(WAV path, [(start ms, item name)],
    seconds)]: the items back to back with GAP_S of silence after each, cut into streams of at
    most max_s (at item boundaries; an item longer than max_s is a stream of its own), padded
    to whole 80 ms frames, written once into directory d as NAME_<max_s>s_<i>.wav."""
    gap = np.zeros(int(GAP_S * C.SR), np.float32)
    streams, cur, index = [], [], []
    n = 0
    for x, what in items:
        if cur and n + len(x) + len(gap) > max_s * C.SR:
            streams.append((cur, index))
            cur, index, n = [], [], 0
        index.append((n * 1000 / C.SR, what))
        cur += [x, gap]
        n += len(x) + len(gap)
    if cur:
        streams.append((cur, index))
    out = []
    for i, (parts, index) in enumerate(streams):
        a = np.concatenate(parts)
        a = np.concatenate([a, np.zeros(-len(a) % C.FRAME, np.float32)])
        p = d / f"{name}_{max_s:g}s_{i:02d}.wav"
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            C.write_wav(p, np.round(np.clip(a, -1, 32767 / 32768) * 32768))
        out.append((p, index, len(a) / C.SR))
    return out


def item_at(index, t_ms):
    """Name of the stream item playing (or last played) at stream time t_ms."""
    names = [w for s, w in index if s <= t_ms]
    return names[-1] if names else index[0][1]


# ---------------------------------------------------------------- statistics
def pct(a):
    return f"{100 * np.mean(a):.1f} %" if len(a) else "-"


def quantiles(v):
    """'p50 / p90 / max' of values in ms."""
    if not len(v):
        return "-"
    return " / ".join(f"{q:.0f}" for q in (np.percentile(v, 50), np.percentile(v, 90), np.max(v)))


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: 3 voices, clean + 5 dB, 1 min negative streams")
    ap.add_argument("--jobs", type=int, default=12, help="clients streaming at once in the accuracy pass")
    ap.add_argument("--daemon-arg", action="append", default=[], metavar="ARG",
                    help="one more outpostd argument for both passes, e.g. --daemon-arg=--no-utterance-verify "
                    "(repeatable; shown in the report's daemon command lines)")
    ap.add_argument("--bundle", default=None, help="two-stage bundle to serve (default .outpost/dev-verifier.bundle), "
                    "e.g. one built at another stage-1 operating point")
    ap.add_argument("--out", default=None, help="report (default ../stream_check.md; --quick: "
                    "CACHE/stream_check/stream_check_quick.md)")
    a = ap.parse_args()
    global BUNDLE
    if a.bundle:
        BUNDLE = Path(a.bundle).resolve()
    a.out = a.out or (WORK / "stream_check_quick.md" if a.quick else Path(__file__).resolve().parent.parent
                      / "stream_check.md")
    missing = [p for p in (BIN / "outpostd", BIN / "outpost", BUNDLE) if not p.exists()]
    if missing:
        sys.exit(f"stream_check: missing {', '.join(map(str, missing))}: run scripts/setup "
                 "(it builds the release binaries and the two-stage bundle)")
    t_start = time.time()

    def log(s):
        print(f"[{time.time() - t_start:6.0f} s] {s}", file=sys.stderr, flush=True)

    cmds, negs, bab = VC.clip_sets()
    voices = sorted({v for _, _, v in cmds})
    conds = CONDITIONS
    stream_s = STREAM_S
    if a.quick:
        voices = voices[::4]
        conds = [c for c in conds if c[2] in (None, 5)]
        negs = negs[::6]
        stream_s = QUICK_STREAM_S
    cmds = [c for c in cmds if c[2] in voices]
    end_ms = {p: speech_end_ms(p) for p, _, _ in cmds}
    jobs = [(cond, clip) for cond in conds for clip in cmds + negs]
    log(f"{len(cmds)} command clips ({len(voices)} voices), {len(negs)} negative clips, {len(conds)} conditions: "
        f"{len(jobs)} streams to write and send")
    with ThreadPoolExecutor(os.cpu_count() or 1) as ex:
        wavs = list(ex.map(lambda j: clip_wav(j[1][0], j[0][0], j[0][1], j[0][2], bab), jobs))
    neg_items = [(C.read_wav(p).astype(np.float32) / 32768, f"{v}/{Path(p).name}") for p, _, v in negs]
    rec_items = [(x, n) for x, n in VT.recorded(("en",))]
    nstreams = {"synthetic negatives": negative_streams(neg_items, "synthetic", stream_s, WORK / "negstreams"),
                "Asterisk US English": negative_streams(rec_items, "asterisk_en", stream_s, WORK / "negstreams"),
                "Hedgewars voice packs": negative_streams(game_audio.voice_lines(), "hedgewars", stream_s,
                                                          WORK / "negstreams")}
    if a.quick:
        nstreams = {k: v[:1] for k, v in nstreams.items()}
    log("WAVs ready")

    # pass 1: accuracy (fast, generous deadlines)
    sha = snapshot()
    d = Daemon(ACC_VERIFY_DEADLINE_MS, ACC_FRAME_DEADLINE_MS, a.daemon_arg)
    acc_cmd = d.shown
    res = {}
    try:
        def run(i):
            return send(d.sock, wavs[i], deadline_ms=ACC_FRAME_DEADLINE_MS)
        with ThreadPoolExecutor(a.jobs) as ex:
            for k, r in enumerate(ex.map(run, range(len(jobs)))):
                res[k] = r
                if (k + 1) % len(cmds + negs) == 0:
                    log(f"accuracy pass: {jobs[k][0][0]} done ({k + 1}/{len(jobs)})")
        # a stream that met trouble under the load of JOBS clients is sent again alone
        retried = {k: trouble(r) for k, r in res.items() if trouble(r)}
        for k in retried:
            res[k] = run(k)
        log(f"accuracy pass: {len(retried)} streams with trouble sent again one at a time")
        flat = [(kind, p) for kind, streams in nstreams.items() for p, _, _ in streams]
        with ThreadPoolExecutor(a.jobs) as ex:
            got = list(ex.map(lambda kp: send(d.sock, kp[1], realtime=True, deadline_ms=ACC_FRAME_DEADLINE_MS),
                              flat))
        neg_res = {kind: [r for (k, _), r in zip(flat, got) if k == kind] for kind in nstreams}
        log(f"negative streams done: {len(flat)} in real time, {a.jobs} at once")
    finally:
        d.stop()

    # pass 2: latency (real time, the bundle's deadlines)
    d = Daemon(args=a.daemon_arg)
    rt_cmd = d.shown
    rt = []
    try:
        clean = [k for k, (cond, clip) in enumerate(jobs) if cond[1] is None and clip in cmds]
        for n, k in enumerate(clean):
            rt.append((k, send(d.sock, wavs[k], realtime=True)))
            if (n + 1) % 24 == 0:
                log(f"latency pass: {n + 1}/{len(clean)}")
    finally:
        d.stop()
    elapsed = time.time() - t_start
    log("done; writing the report")

    raw = {"jobs": [[c[0], list(cl)] for c, cl in jobs], "accuracy": [res[k] for k in range(len(jobs))],
           "negative_streams": {k: [[str(p), i, s] for p, i, s in v] for k, v in nstreams.items()},
           "negative_results": neg_res, "realtime": rt, "retried": retried, "bundle_sha256": sha}
    (WORK / ("raw_quick.json" if a.quick else "raw.json")).write_text(json.dumps(raw))
    report(a, jobs, res, retried, cmds, negs, voices, conds, end_ms, nstreams, neg_res, rt, elapsed, acc_cmd, rt_cmd,
           sha)


def report(a, jobs, res, retried, cmds, negs, voices, conds, end_ms, nstreams, neg_res, rt, elapsed, acc_cmd, rt_cmd,
           sha):
    """Writes the markdown report to a.out."""
    L = []
    say = L.append
    # per condition, per clip: (label, voice, first trigger, first detection)
    by = {c[0]: [] for c in conds}
    anomalies = []
    for k, ((cname, _, _), (path, label, voice)) in enumerate(jobs):
        ev = res[k][0]
        by[cname].append((label, voice, first(triggers(ev)), first(detections(ev)), triggers(ev),
                          first(utterance_ends(ev))))

    def rates(rows):
        """(trigger acc, trigger wrong, both acc, both wrong) over command rows."""
        r = [x for x in rows if x[0] != "none"]
        return ([x[2] == x[0] for x in r], [x[2] not in (None, x[0]) for x in r],
                [x[3] == x[0] for x in r], [x[3] not in (None, x[0]) for x in r])

    quick = " (--quick: a smoke test on a subset, not the full test set)" if a.quick else ""
    say("# Stage 1 + stage 2 through outpostd: the verifier's held-out test set, streamed")
    say("")
    say(f"Produced on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `.venv-verifier/bin/python "
        f"{' '.join(['stream_check.py'] + sys.argv[1:])}` (models/reference/recipe/stream_check.py; its docstring "
        f"says how the streams are made){quick}; run time {elapsed / 60:.1f} min on this machine "
        f"({os.cpu_count()} cores).")
    say("")
    head = subprocess.run(["git", "-C", str(C.REPO), "describe", "--always", "--dirty"], capture_output=True,
                          text=True).stdout.strip()
    say(f"- bundle `{shown(BUNDLE)}` (stage 1 head + fine-tuned Whisper tiny.en verifier), SHA-256 "
        f"{sha[:16]}…; binaries of the work tree at `{head}`, copied before the run; client "
        f"`{BIN.relative_to(C.REPO) / 'outpost'} send WAV --json --tail-ms 0`")
    say(f"- accuracy pass: `{acc_cmd}`, {a.jobs} clients at once, each `--deadline-ms {ACC_FRAME_DEADLINE_MS}`, "
        "frames as fast as answers come")
    say(f"- latency pass: `{rt_cmd}` (the bundle's deadlines), one client at a time, `--realtime`")
    say(f"- {len(cmds)} command clips ({len(voices)} held-out voices x {len(C.COMMANDS)} commands) and {len(negs)} negative clips "
        f"(near misses and sentences, 3 voices), each streamed alone: the clip (0.3 s silence either side of the "
        f"speech) + {TAIL_S} s, noise over all of it at the SNR over the speech")
    say("- trigger: stage 1 alone (the first trigger of the clip, whatever stage 2 says; one that fires in the quiet "
        "frames just after an utterance-end verification has detected a command is not answered, so not seen); "
        "both: the first verified detection. acc: it is the clip's command; wrong: it is another command; the rest "
        "is a miss")
    say("")
    say("## 1. Accuracy per condition (command clips)")
    say("")
    say("| condition | trigger: acc | trigger: wrong | both: acc | both: wrong | negative clips triggering | "
        "negative clips detected |")
    say("|---|---|---|---|---|---|---|")
    for cname, _, _ in conds:
        ta, tw, ba, bw = rates(by[cname])
        neg = [x for x in by[cname] if x[0] == "none"]
        say(f"| {cname} | {pct(ta)} | {pct(tw)} | {pct(ba)} | {pct(bw)} | {sum(x[4] != [] for x in neg)}/{len(neg)} "
            f"| {sum(x[3] is not None for x in neg)}/{len(neg)} |")
    say("")
    rescued = {c: sum(x[2] is None and x[3] is not None and x[3] == x[5] for x in by[c] if x[0] != "none")
               for c, _, _ in conds}
    say("Right or wrong, a clip stage 1 never fired on can be detected by the verification at the end of its "
        "utterance (outpostd's utterance-end verification): " + ", ".join(f"{c} {n}" for c, n in rescued.items())
        + " command clips.")
    say("")
    five = [c[0] for c in conds if c[2] == 5]

    def table(key, keys, title):
        say(f"## 2{title}")
        say("")
        say(f"| | clean: trigger | clean: both | 5 dB ({', '.join(c.split()[0] for c in five)}): trigger | 5 dB: both |")
        say("|---|---|---|---|---|")
        for kv in keys:
            cl = rates([x for x in by["clean"] if key(x) == kv])
            fv = rates([x for cn in five for x in by[cn] if key(x) == kv])
            say(f"| {kv} | {pct(cl[0])} | {pct(cl[2])} | {pct(fv[0])} | {pct(fv[2])} |")
        say("")

    table(lambda x: x[1], voices, "a. Per voice (accuracy)")
    table(lambda x: x[0], C.COMMANDS, "b. Per command (accuracy)")
    say("## 2c. Minimal pairs: what the clips of one command were taken for")
    say("")
    say(f"Counts of clips (clean; 5 dB over the {len(five)} noises) by the first trigger / first verified detection.")
    say("")
    say("| said | condition | stage | " + " | ".join(["itself", "its pair", "other command", "nothing"]) + " |")
    say("|---|---|---|---|---|---|---|")
    for p, q in PAIRS:
        for said, pair in ((p, q), (q, p)):
            for cn, names in (("clean", ["clean"]), ("5 dB", five)):
                rows = [x for n in names for x in by[n] if x[0] == said]
                for stage, i in (("trigger", 2), ("both", 3)):
                    got = [x[i] for x in rows]
                    say(f"| {said} | {cn} | {stage} | {got.count(said)} | {got.count(pair)} | "
                        f"{sum(g not in (None, said, pair) for g in got)} | {got.count(None)} |")
    say("")

    say("## 3. False accepts on negative streams (clean)")
    say("")
    say(f"Items back to back with {GAP_S} s of silence after each, in streams of at most {nstreams_len(nstreams)} "
        f"min, sent in real time, {a.jobs} at once (accuracy pass's daemon). Hours: all streamed audio, gaps included.")
    say("")
    say("| stream set | items | audio | triggers | per hour | verified detections | per hour | verification failures |")
    say("|---|---|---|---|---|---|---|---|")
    fa_lists = {}
    for kind, streams in nstreams.items():
        hours = sum(s for _, _, s in streams) / 3600
        nt, nd, nf, lst = 0, 0, 0, []
        for (p, index, _), (ev, summ, other) in zip(streams, neg_res[kind]):
            t = trouble((ev, summ, other))
            anomalies += [f"{kind} {p.name}: {t}"] if t else []
            tr, ue = triggers(ev), utterance_ends(ev)
            nt += len(tr)
            nf += sum(e.get("type") == "verify_failed" for _, _, e in tr + ue)
            for s, lab, e in tr + [(s, e.get("command"), e) for s, _, e in ue]:
                if e.get("type") == "detection":
                    nd += 1
                    lst.append(f"{item_at(index, frame_end_ms(s))} -> {lab}")
        fa_lists[kind] = lst
        say(f"| {kind} | {sum(len(i) for _, i, _ in streams)} | {hours * 60:.1f} min | {nt} | {nt / hours:.0f} | "
            f"{nd} | {nd / hours:.1f} | {nf} |")
    say("")
    for kind, lst in fa_lists.items():
        if lst:
            say(f"- verified false accepts, {kind} (item playing at the trigger -> command): " + "; ".join(lst))
    say("")

    say("## 4. Latency from the end of speech (real time, bundle deadlines)")
    say("")
    lat = {"trigger": [], "wait": [], "verifier": [], "total": []}
    vmiss, nver, fmiss, srv, diffs, changed, has_end = 0, 0, 0, [], [], [], False
    for k, (ev, summ, other) in rt:
        path, label, _ = jobs[k][1]
        anomalies += [f"realtime {clip_name(path)}: {o}" for o in other]
        if summ is None:
            continue
        tr, de = triggers(ev), detections(ev)
        nver += len(tr)
        vmiss += sum(e.get("type") == "verify_failed" and "Deadline" in e.get("outcome", "")
                     for _, _, e in tr + utterance_ends(ev))
        fmiss += summ["deadline_misses"]
        srv.append(summ["latency_us"]["server_total"]["p50"] / 1000)
        if tr and tr[0][1] == label:
            lat["trigger"].append(frame_end_ms(tr[0][0]) - end_ms[path])
        if de and de[0][1] == label:
            e = de[0][2]
            has_end |= "end_seq" in e
            wait = (e.get("end_seq", e["seq"]) - e["seq"]) * FRAME_MS
            lat["wait"].append(wait)
            lat["verifier"].append(e["verify_total_us"] / 1000)
            lat["total"].append(frame_end_ms(e["seq"]) - end_ms[path] + wait + e["verify_total_us"] / 1000)
        fast = res[k][0]
        if (first(de), first(triggers(ev))) != (first(detections(fast)), first(triggers(fast))):
            changed.append(f"{clip_name(path)}: fast {first(triggers(fast))} / {first(detections(fast))}, "
                           f"real time {first(triggers(ev))} / {first(de)}")
        elif de and detections(fast):
            diffs.append(abs(de[0][2]["margin_nats"] - detections(fast)[0][2]["margin_nats"]))
    say(f"{len(rt)} clean command clips, one at a time. Trigger: end of the trigger frame minus the end of speech "
        "(augment.speech_bounds on the clean clip: the end of the last 10 ms frame within 35 dB of the loudest), "
        "over the clips whose first trigger is right. For the verified detections that are right: wait, from the "
        "trigger frame to the frame the daemon took as the end of the utterance (`end_seq`), whose arrival starts "
        "the verification's clock (0 when the trigger frame ended the utterance or its early verification "
        "answered); verifier: `verify_total_us`; total: trigger + wait + verifier, per detection. "
        f"The frame's own answer adds {np.median(srv) if srv else float('nan'):.1f} ms (median of the per-clip p50 "
        "server_total).")
    if not has_end:
        say("")
        say("The client printed no `end_seq`: the wait is taken as 0 (exact if the daemon verifies at the trigger "
            "frame; if it waits for the end of the utterance, the total is short by up to the bundle's "
            "`max_wait_ms`).")
    say("")
    say("| part | n | p50 / p90 / max (ms) |")
    say("|---|---|---|")
    names = {"trigger": "trigger (stage 1)", "wait": "wait for the end of the utterance",
             "verifier": "verifier (stage 2)", "total": "total, end of speech to verified detection"}
    for key, what in names.items():
        say(f"| {what} | {len(lat[key])} | {quantiles(lat[key])} |")
    say("")
    say(f"- verification deadline misses: {vmiss} of {nver} verifications; frame deadline misses: {fmiss}")
    say(f"- the same WAVs real time vs fast (accuracy pass): {len(changed)} of {len(rt)} clips changed their first "
        f"trigger or detection" + (f" ({'; '.join(changed)})" if changed else "")
        + f"; the margin of the first detection differs by at most {max(diffs) if diffs else 0:.3g} nats elsewhere")
    say("")
    say("## Run health")
    say("")
    say(f"- accuracy pass: {len(retried)} of {len(jobs)} clip streams met trouble with {a.jobs} clients at once and "
        "were sent again alone" + (": " + "; ".join(f"{jobs[k][0][0]} {clip_name(jobs[k][1][0])}: {t}"
                                                   for k, t in list(retried.items())[:12]) if retried else ""))
    still = [f"{jobs[k][0][0]} {clip_name(jobs[k][1][0])}: {trouble(r)}" for k, r in res.items() if trouble(r)]
    say(f"- clip streams with trouble in the end: {len(still)}" + (": " + "; ".join(still[:12]) if still else ""))
    say(f"- everything else (negative streams, latency pass), client output other than JSON or a failed client: "
        f"{len(anomalies)}" + (": " + "; ".join(anomalies[:12]) if anomalies else ""))
    Path(a.out).write_text("\n".join(L) + "\n")
    print(f"report: {a.out}", file=sys.stderr)


def nstreams_len(nstreams):
    """Longest negative stream, in minutes (for the report)."""
    return round(max(s for v in nstreams.values() for _, _, s in v) / 60, 1)


if __name__ == "__main__":
    main()
