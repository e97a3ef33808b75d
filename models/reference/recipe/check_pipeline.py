"""Numerical checks of the streaming contract (docs/DESIGN.md §3):
1. mel on the last 1760 samples per 80 ms frame == mel on the whole signal (aligned frames);
2. the silent embedding is stationary (zeros pre-roll == runtime's pre-filled buffers);
3. batch feature extraction (common.stream_embeddings) == literal streaming loop.
Writes .outpost/recipe-cache/pipeline_check.json."""
import json
import subprocess
import numpy as np
import common as C


def main():
    rng = np.random.default_rng(0)
    wav = C.CACHE / "check_clip.wav"
    C.CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(f"espeak-ng -v en-us -s 160 --stdout 'mark position, then status report' | "
                   f"sox -D -V1 -t wav - -r 16000 -c 1 -b 16 {wav}", shell=True, check=True)
    sp = C.read_wav(wav).astype(np.float32)
    audio = np.concatenate([np.zeros(3000), sp, rng.normal(0, 300, 5000)]).astype(np.float32)
    n = len(audio) // C.FRAME
    audio = audio[:n * C.FRAME]
    # 1. mel equivalence on a stream with Z zeros pre-roll
    Z = 32000
    x = np.concatenate([np.zeros(Z, np.float32), audio])
    whole = C.mel(x)
    raw = np.zeros(C.MEL_CTX, np.float32)
    diffs = []
    for k in range(len(x) // C.FRAME):
        raw = np.concatenate([raw, x[k * C.FRAME:(k + 1) * C.FRAME]])[-C.MEL_CTX:]
        m = C.mel(raw)
        start = (k * C.FRAME + C.FRAME - C.MEL_CTX) // 160  # whole-signal index of first new frame
        if start < 0:
            continue
        diffs.append(np.abs(m - whole[start:start + 8]).max())
    mel_diff = float(max(diffs))
    # same with a noise floor everywhere (dynamic range of every call < 80 dB)
    xn = x + rng.normal(0, 2.0, len(x)).astype(np.float32)
    whole_n = C.mel(xn)
    raw = np.zeros(C.MEL_CTX, np.float32)
    diffs_n = []
    for k in range(Z // C.FRAME, len(xn) // C.FRAME):
        raw = xn[k * C.FRAME + C.FRAME - C.MEL_CTX:(k + 1) * C.FRAME]
        start = (k * C.FRAME + C.FRAME - C.MEL_CTX) // 160
        diffs_n.append(np.abs(C.mel(raw) - whole_n[start:start + 8]).max())
    mel_diff_noise = float(max(diffs_n))
    # 2. silent embedding stationary
    e_sil = C.silence_embedding()
    emb_z = C.stream_embeddings(np.zeros(Z, np.float32))
    sil_diff = float(np.abs(emb_z - e_sil).max())
    # 3. literal streaming loop vs batch
    p = C.StreamingPipeline()
    es = np.stack([p.push(audio[k * C.FRAME:(k + 1) * C.FRAME])[0] for k in range(n)])
    eb = C.stream_embeddings(audio)
    hb = C.head_windows(eb)
    emb_diff = float(np.abs(es - eb).max())
    # versus concat(zeros(32000), audio), dropping the pre-roll frames
    ez = C.stream_embeddings(np.concatenate([np.zeros(Z, np.float32), audio]))[Z // C.FRAME:]
    z_diff = float(np.abs(ez - eb).max())
    hz = C.head_windows(C.stream_embeddings(np.concatenate([np.zeros(Z, np.float32), audio])))[Z // C.FRAME:]
    hz_diff = float(np.abs(hz - hb).max())
    res = dict(mel_stream_vs_whole_max_abs=mel_diff, mel_stream_vs_whole_with_noise_floor_max_abs=mel_diff_noise, mel_frames_compared=len(diffs) * 8,
               silent_embedding_stationarity_max_abs=sil_diff,
               stream_loop_vs_batch_embedding_max_abs=emb_diff,
               zeros32000_preroll_vs_prefilled_buffers_embedding_max_abs=z_diff,
               zeros32000_preroll_vs_prefilled_buffers_head_input_max_abs=hz_diff,
               frames=n)
    print(json.dumps(res, indent=1))
    (C.CACHE / "pipeline_check.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
