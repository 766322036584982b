"""DualEncoder: a Hugging Face encoder + tokenizer turned into query / passage embedders.

Tokenization (with prefixes and per-side max lengths) is separate from the forward pass so a
training dataloader can tokenize in its workers; ``forward_tokens`` is the differentiable path and
``encode_*`` the inference path. Both use the same pooling and normalisation code.
"""
from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.hardware import autocast, resolve_autocast
from distill.models import ModelDefaults, local_path, resolve

Side = Literal["query", "passage"]

# Written next to an exported sentence-transformers folder: the options a sentence-transformers
# folder cannot hold (it has one max_seq_length), so an export loads back exactly as trained.
SIDECAR = "listwise_distill_student.json"
_OPTION_FIELDS = ("pooling", "normalize", "query_prefix", "passage_prefix", "query_max_length",
                  "passage_max_length")
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def pool(hidden: Tensor, attention_mask: Tensor, mode: str) -> Tensor:
    """Pool token states [N, T, D] to [N, D]; padding may be on either side."""
    mask = attention_mask.to(hidden.device)
    rows = torch.arange(hidden.size(0), device=hidden.device)
    if mode == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    positions = torch.arange(mask.size(1), device=hidden.device).expand_as(mask)
    if mode == "cls":
        # first real token: index 0 with right padding, the first unpadded slot with left padding
        first = torch.where(mask.bool(), positions, mask.size(1)).min(1).values.clamp(max=mask.size(1) - 1)
        return hidden[rows, first]
    if mode == "last":
        last = (positions * mask.bool()).max(1).values
        return hidden[rows, last]
    raise ValueError(f"pooling must be cls, mean or last, got {mode!r}")


def _accepted_inputs(model: nn.Module) -> frozenset[str]:
    params = inspect.signature(model.forward).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        # **kwargs forwards anything; keep the usual names only (BatchEncoding may carry extras)
        return frozenset(name for name in _MODEL_INPUTS if name != "position_ids") | frozenset(params)
    return frozenset(params)


class DualEncoder(nn.Module):
    """Query / passage embedder over any ``AutoModel``. Weights are shared unless ``shared=False``."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        options: ModelDefaults = ModelDefaults(),
        *,
        shared: bool = True,
        gradient_checkpointing: bool = False,
        bf16: bool | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        # a separate passage tower starts as an exact copy (asymmetric fine-tuning); a shared one is
        # not registered twice, so state_dict / checkpoints hold the weights once
        self.passage_model = None if shared else copy.deepcopy(model)
        self.tokenizer = tokenizer
        self.options = options
        self.bf16 = bf16
        if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None):
            tokenizer.pad_token = tokenizer.eos_token  # decoder-only models ship without a pad token
        for tower in self._towers():
            if getattr(getattr(tower, "config", None), "use_cache", False):
                tower.config.use_cache = False  # a KV cache is useless for embedding and costs memory
        self._inputs = _accepted_inputs(model)
        self.gradient_checkpointing = False
        if gradient_checkpointing:
            self.gradient_checkpointing_enable()

    # ---- configuration -------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        # options read as attributes (encoder.pooling, encoder.query_prefix, ...)
        if name in _OPTION_FIELDS:
            return getattr(self.__dict__["options"], name)
        return super().__getattr__(name)

    @property
    def shared(self) -> bool:
        return self.passage_model is None

    @property
    def dim(self) -> int:
        config = self.model.config
        return int(getattr(config, "hidden_size", None) or config.d_model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tower(self, side: Side) -> nn.Module:
        """The transformer that encodes ``side`` (the same module for both when shared)."""
        self._side_options(side)  # validates side
        return self.model if side == "query" or self.passage_model is None else self.passage_model

    def _towers(self) -> list[nn.Module]:
        return [self.model] if self.passage_model is None else [self.model, self.passage_model]

    def gradient_checkpointing_enable(self) -> None:
        """Recompute activations in backward; non-reentrant so it composes with GradCache and autocast."""
        kwargs = {"use_reentrant": False}
        for tower in self._towers():
            if hasattr(tower, "activation_checkpointing_enable"):  # transformers >= 5.x name
                tower.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                tower.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        self.gradient_checkpointing = True

    # ---- tokenization --------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], side: Side) -> Any:
        """Prefix, truncate to the side's max length, pad to the longest; returns a BatchEncoding."""
        _check_texts(texts)
        prefix, max_length = self._side_options(side)
        return self.tokenizer(
            [prefix + text for text in texts], padding=True, truncation=True, max_length=max_length,
            return_tensors="pt",
        )

    def tokenize_queries(self, texts: Sequence[str]) -> Any:
        return self.tokenize(texts, "query")

    def tokenize_passages(self, texts: Sequence[str]) -> Any:
        return self.tokenize(texts, "passage")

    def _side_options(self, side: Side) -> tuple[str, int]:
        if side == "query":
            return self.options.query_prefix, self.options.query_max_length
        if side == "passage":
            return self.options.passage_prefix, self.options.passage_max_length
        raise ValueError(f"side must be 'query' or 'passage', got {side!r}")

    # ---- forward -------------------------------------------------------------------------
    def forward_tokens(self, batch: Mapping[str, Tensor], side: Side = "query") -> Tensor:
        """Embeddings [N, D] of a tokenized batch, with gradients (pooled in float32)."""
        tower = self.tower(side)
        device = self.device
        inputs = {k: v.to(device) for k, v in batch.items() if k in self._inputs and isinstance(v, Tensor)}
        hidden = tower(**inputs).last_hidden_state
        # pool and normalise in float32: bf16 sums over long sequences lose precision
        embeddings = pool(hidden.float(), inputs["attention_mask"], self.options.pooling)
        if self.options.normalize:
            embeddings = F.normalize(embeddings, p=2, dim=-1)
        return embeddings

    def forward(self, batch: Mapping[str, Tensor], side: Side = "query") -> Tensor:
        return self.forward_tokens(batch, side)

    # ---- inference -----------------------------------------------------------------------
    def encode_queries(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False,
                       bf16: bool | None = None) -> Tensor:
        return self.encode(texts, "query", batch_size, show_progress, bf16)

    def encode_passages(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False,
                        bf16: bool | None = None) -> Tensor:
        return self.encode(texts, "passage", batch_size, show_progress, bf16)

    def encode(self, texts: Sequence[str], side: Side, batch_size: int = 64, show_progress: bool = False,
               bf16: bool | None = None) -> Tensor:
        """Float32 CPU embeddings [N, D] in input order. ``bf16=None`` uses the instance setting, whose
        None means "where the hardware has native bf16"."""
        _check_texts(texts)
        self._side_options(side)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not texts:
            return torch.empty(0, self.dim)
        use_bf16 = resolve_autocast(self.device, self.bf16 if bf16 is None else bf16)
        # longest first, so each batch pads to similar lengths (and an OOM shows up at once)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        starts = range(0, len(texts), batch_size)
        if show_progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"encode {side}s", unit="batch")
        was_training = self.training
        self.eval()
        try:
            chunks = []
            with torch.inference_mode(), autocast(self.device, use_bf16):
                for start in starts:
                    batch = self.tokenize([texts[i] for i in order[start:start + batch_size]], side)
                    chunks.append(self.forward_tokens(batch, side).float().cpu())
        finally:
            self.train(was_training)
        sorted_embeddings = torch.cat(chunks)
        embeddings = torch.empty_like(sorted_embeddings)
        embeddings[torch.tensor(order)] = sorted_embeddings
        return embeddings


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise TypeError("expected a list of strings, got a single string")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is {type(text).__name__}, expected str")


def _transformer_dir(folder: Path) -> Path:
    """Where the HF weights live: the folder itself, or the Transformer module's sub-folder of a
    sentence-transformers folder (older exports used ``0_Transformer/``)."""
    modules = folder / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text()):
            if module.get("type", "").endswith("Transformer"):
                return folder / module.get("path", "")
    return folder


_LOAD_OPTIONS = ("shared", "gradient_checkpointing", "bf16", "device")


def load_student(name_or_path: str | Path, **overrides: Any) -> DualEncoder:
    """A DualEncoder for a registered name or a local folder (never downloads).

    Defaults come from the name (or the folder's sentence-transformers config, then an export's
    sidecar); ``overrides`` win: pooling, normalize, query_prefix, passage_prefix,
    query_max_length, passage_max_length, shared, gradient_checkpointing, bf16, device.
    """
    unknown = set(overrides) - set(_OPTION_FIELDS) - set(_LOAD_OPTIONS)
    if unknown:
        raise TypeError(f"unknown student option(s) {sorted(unknown)}; "
                        f"expected some of {list(_OPTION_FIELDS + _LOAD_OPTIONS)}")
    resolved = resolve(name_or_path)
    if not resolved.local:
        local_path(name_or_path)  # raises the one-line FileNotFoundError naming the package
        raise FileNotFoundError(f"student {name_or_path!r} is not available locally")
    if resolved.kind not in (None, "embedder"):
        raise ValueError(f"{resolved.name!r} is a {resolved.kind}, not an embedding model")
    folder = Path(resolved.path)
    if not folder.is_dir():
        raise FileNotFoundError(f"student {name_or_path!r}: {folder} is not a model folder")
    options = resolved.defaults
    sidecar = folder / SIDECAR
    if sidecar.is_file():
        saved = json.loads(sidecar.read_text())
        options = options.override(**{k: saved[k] for k in _OPTION_FIELDS if k in saved})
    options = options.override(**{k: overrides[k] for k in _OPTION_FIELDS if k in overrides})

    from transformers import AutoModel, AutoTokenizer

    weights = _transformer_dir(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(weights), local_files_only=True)
    # fp32 master weights whatever the checkpoint's dtype: bf16 is applied by autocast, not storage
    model = AutoModel.from_pretrained(str(weights), local_files_only=True, dtype=torch.float32)
    encoder = DualEncoder(
        model, tokenizer, options,
        shared=overrides.get("shared", True),
        gradient_checkpointing=overrides.get("gradient_checkpointing", False),
        bf16=overrides.get("bf16"),
    )
    if overrides.get("device") is not None:
        encoder.to(overrides["device"])
    return encoder
