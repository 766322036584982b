"""DualEncoder: a Hugging Face backbone + tokenizer turned into query / passage embedders.

Backbones: BERT-like encoders, T5 encoders (loaded as ``T5EncoderModel``, as GTR) and decoder-only
models (left padding, last-token pooling by default). The head after the backbone is
sentence-transformers' own modules — Pooling → optional bias-free Dense bottleneck → Normalize — so
an export is ``SentenceTransformer(modules=[Transformer, *head]).save()`` and computes exactly this.

What the library cannot do is kept here and small: per-side prefixes and max lengths at training
time, and ``forward_tokens``, the differentiable path over an already tokenised batch that a
dataloader worker tokenised and GradCache calls chunk by chunk (sentence-transformers' own forward
re-enters its preprocessing). ``encode_*`` is the inference path over the same code.
"""
from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
from torch import Tensor, nn

from distill.hardware import autocast, resolve_autocast
from distill.models import local_path, resolve
from students.options import StudentOptions

Side = Literal["query", "passage"]

# Written next to an exported sentence-transformers folder: the exact options trained with, so an
# export loads back exactly as trained whatever the sentence-transformers version reads.
SIDECAR = "listwise_distill_student.json"
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
_ST_POOLING = {"cls": "cls", "mean": "mean", "last": "lasttoken"}
_HEAD_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")


def pool(hidden: Tensor, attention_mask: Tensor, mode: str) -> Tensor:
    """Pool token states [N, T, D] to [N, D] with sentence-transformers' Pooling; padding may be on
    either side."""
    from sentence_transformers.sentence_transformer.modules import Pooling

    if mode not in _ST_POOLING:
        raise ValueError(f"pooling must be cls, mean or last, got {mode!r}")
    features = {"token_embeddings": hidden, "attention_mask": attention_mask.to(hidden.device)}
    return Pooling(hidden.size(-1), pooling_mode=_ST_POOLING[mode])(features)["sentence_embedding"]


def new_projection(hidden_size: int, projection_dim: int) -> nn.Module:
    """GTR's bottleneck: a linear map without bias or activation (a sentence-transformers Dense).

    Initialised with orthonormal rows, i.e. a random projection, so the pretrained geometry (inner
    products between pooled vectors) survives at step 0 instead of being scrambled by a default init.
    """
    from sentence_transformers.base.modules import Dense

    dense = Dense(hidden_size, projection_dim, bias=False, activation_function=None)
    nn.init.orthogonal_(dense.linear.weight)
    return dense


def build_head(hidden_size: int, options: StudentOptions, projection: nn.Module | None = None) -> nn.Sequential:
    """Pooling → [Dense] → [Normalize], sentence-transformers modules (each maps a features dict to one)."""
    from sentence_transformers.base.modules import Normalize
    from sentence_transformers.sentence_transformer.modules import Pooling

    if options.projection_dim is not None and projection is None:
        projection = new_projection(hidden_size, options.projection_dim)
    if projection is not None:
        shape = (projection.linear.out_features, projection.linear.in_features)
        if shape != (options.projection_dim, hidden_size):
            raise ValueError(f"projection is {shape[1]}→{shape[0]}, but the student is "
                             f"{hidden_size}→{options.projection_dim}")
    modules = [Pooling(hidden_size, pooling_mode=_ST_POOLING[options.pooling])]
    modules += [projection] if projection is not None else []
    modules += [Normalize()] if options.normalize else []
    return nn.Sequential(*modules)


def set_dropout(model: nn.Module, probability: float) -> None:
    """Every dropout of ``model`` to ``probability``: the ``nn.Dropout`` modules, the float
    attention-dropout attributes some attention classes read in forward (Llama's
    ``attention_dropout``), and the config's ``*dropout*`` floats so a saved copy says the same."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = probability
        for name in ("attention_dropout", "dropout_prob"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, probability)
    config = getattr(model, "config", None)
    for name, value in (vars(config).items() if config is not None else ()):
        if "dropout" in name and isinstance(value, float):
            setattr(config, name, probability)


def is_decoder_only(config: Any) -> bool:
    """A causal LM without a masked-LM head (Llama, Qwen, GPT-2, …): BERT-likes also have causal
    heads, T5 is encoder-decoder."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                         MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    kind = getattr(config, "model_type", None)
    return (kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
            and not getattr(config, "is_encoder_decoder", False))


def _accepted_inputs(model: nn.Module) -> frozenset[str]:
    params = inspect.signature(model.forward).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        # **kwargs forwards anything; keep the usual names only (BatchEncoding may carry extras)
        return frozenset(name for name in _MODEL_INPUTS if name != "position_ids") | frozenset(params)
    return frozenset(params)


class DualEncoder(nn.Module):
    """Query / passage embedder over any ``AutoModel``. Weights are shared unless ``shared=False``.

    ``transformer`` is the sentence-transformers Transformer module that loaded ``model`` (same
    object, not registered twice); export reuses it, and builds one when the encoder was made by hand.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        options: StudentOptions = StudentOptions(),
        *,
        projection: nn.Module | None = None,
        shared: bool = True,
        gradient_checkpointing: bool = False,
        bf16: bool | None = None,
        transformer: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        # a separate passage tower starts as an exact copy (asymmetric fine-tuning); a shared one is
        # not registered twice, so state_dict / checkpoints hold the weights once
        self.passage_model = None if shared else copy.deepcopy(model)
        self.tokenizer = tokenizer
        self.options = options
        self.attention_by_length: Callable[[int], str | None] | None = None  # set_attention(callable)
        self.head = build_head(self.hidden_size, options, projection)
        self.bf16 = bf16
        self.__dict__["transformer"] = transformer  # plain attribute: its weights are self.model's
        if tokenizer is not None and is_decoder_only(getattr(model, "config", None)):
            # the last position must be a real token for last-token pooling; decoder-only models
            # ship without a pad token
            tokenizer.padding_side = "left"
            if getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None):
                tokenizer.pad_token = tokenizer.eos_token
        for tower in self._towers():
            if getattr(getattr(tower, "config", None), "use_cache", False):
                tower.config.use_cache = False  # a KV cache is useless for embedding and costs memory
        if options.dropout is not None:
            for tower in self._towers():
                set_dropout(tower, options.dropout)
        self._inputs = _accepted_inputs(model)
        self.gradient_checkpointing = False
        if gradient_checkpointing:
            self.gradient_checkpointing_enable()

    # ---- configuration -------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        # options read as attributes (encoder.pooling, encoder.query_prefix, ...)
        if name in StudentOptions.names():
            return getattr(self.__dict__["options"], name)
        return super().__getattr__(name)

    @property
    def shared(self) -> bool:
        return self.passage_model is None

    @property
    def hidden_size(self) -> int:
        """Width of the backbone's token states."""
        config = self.model.config
        return int(getattr(config, "hidden_size", None) or config.d_model)

    @property
    def dim(self) -> int:
        """Width of the embeddings (the projection's, when there is one)."""
        return self.options.projection_dim or self.hidden_size

    @property
    def projection(self) -> nn.Module | None:
        return next((m for m in self.head if type(m).__name__ == "Dense"), None)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tower(self, side: Side) -> nn.Module:
        """The transformer that encodes ``side`` (the same module for both when shared)."""
        self._side_options(side)  # validates side
        return self.model if side == "query" or self.passage_model is None else self.passage_model

    def _towers(self) -> list[nn.Module]:
        return [self.model] if self.passage_model is None else [self.model, self.passage_model]

    def set_attention(self, implementation: str | Callable[[int], str | None]) -> None:
        """Every tower's attention kernel (``eager``, ``sdpa``, ...): the same function, another speed.
        A callable picks the kernel per batch from its padded length."""
        if callable(implementation):
            self.attention_by_length = implementation
            return
        self.attention_by_length = None
        for tower in self._towers():
            _set_tower_attention(tower, implementation)

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
        """Embeddings [N, dim] of a tokenised batch (``tokenize``'s output), with gradients, float32."""
        tower = self.tower(side)
        device = self.device
        inputs = {k: v.to(device) for k, v in batch.items() if k in self._inputs and isinstance(v, Tensor)}
        if self.attention_by_length is not None:
            implementation = self.attention_by_length(inputs["input_ids"].shape[-1])
            if implementation is not None:
                _set_tower_attention(tower, implementation)
        hidden = tower(**inputs).last_hidden_state
        # the head in float32: bf16 sums over long sequences lose precision, and it is tiny
        with torch.autocast(device.type, enabled=False):
            features = {"token_embeddings": hidden.float(), "attention_mask": inputs["attention_mask"]}
            return self.head(features)["sentence_embedding"]

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

            starts = tqdm(starts, desc="encode queries" if side == "query" else "encode passages", unit="batch")
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


def _set_tower_attention(tower: nn.Module, implementation: str) -> None:
    if getattr(getattr(tower, "config", None), "_attn_implementation", implementation) != implementation:
        tower.set_attn_implementation(implementation)


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise TypeError("expected a list of strings, got a single string")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is {type(text).__name__}, expected str")


_LOAD_OPTIONS = ("shared", "gradient_checkpointing", "bf16", "device")


def load_student(name_or_path: str | Path, **overrides: Any) -> DualEncoder:
    """A DualEncoder for a registered name, a model folder or a sentence-transformers folder
    (never downloads).

    Defaults come from the name (or the folder's sentence-transformers config, then an export's
    sidecar); ``overrides`` win: the ``StudentOptions`` fields (pooling, normalize, query_prefix,
    passage_prefix, query_max_length, passage_max_length, projection_dim, dropout) and shared,
    gradient_checkpointing, bf16, device. A plain decoder-only folder defaults to last-token pooling.
    """
    names = StudentOptions.names()
    unknown = set(overrides) - set(names) - set(_LOAD_OPTIONS)
    if unknown:
        raise TypeError(f"unknown student option(s) {sorted(unknown)}; expected some of {list(names + _LOAD_OPTIONS)}")
    resolved = resolve(name_or_path)
    if not resolved.local:
        local_path(name_or_path)  # raises the one-line FileNotFoundError naming the package
        raise FileNotFoundError(f"student {name_or_path!r} is not available locally")
    if resolved.kind not in (None, "embedder"):
        raise ValueError(f"{resolved.name!r} is a {resolved.kind}, not an embedding model")
    folder = Path(resolved.path)
    if not folder.is_dir():
        raise FileNotFoundError(f"student {name_or_path!r}: {folder} is not a model folder")
    options = resolved.defaults.student_options()
    sidecar = folder / SIDECAR
    if sidecar.is_file():
        saved = json.loads(sidecar.read_text())
        options = options.override(**{k: saved[k] for k in names if k in saved})
    transformer, projection = _load_modules(folder)
    if projection is not None:
        options = options.override(projection_dim=projection.linear.out_features)
        if overrides.get("projection_dim") not in (None, options.projection_dim):
            raise ValueError(f"{folder} has a {options.projection_dim}-d projection; "
                             f"projection_dim={overrides['projection_dim']} does not match it")
    if (is_decoder_only(transformer.model.config) and not (folder / "modules.json").is_file()
            and "pooling" not in overrides):
        options = options.override(pooling="last")  # a causal model's summary is its last token
    options = options.override(**{k: overrides[k] for k in names if k in overrides})
    encoder = DualEncoder(
        transformer.model, transformer.tokenizer, options, projection=projection,
        shared=overrides.get("shared", True),
        gradient_checkpointing=overrides.get("gradient_checkpointing", False),
        bf16=overrides.get("bf16"), transformer=transformer,
    )
    if overrides.get("device") is not None:
        encoder.to(overrides["device"])
    return encoder


def _load_modules(folder: Path) -> tuple[nn.Module, nn.Module | None]:
    """sentence-transformers' Transformer module (it knows T5 → T5EncoderModel) and the folder's
    Dense bottleneck, if any. fp32 master weights whatever the checkpoint's dtype: bf16 is applied
    by autocast, not storage."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer

    model_kwargs = {"dtype": torch.float32}
    if not (folder / "modules.json").is_file():
        transformer = Transformer(str(folder), model_kwargs={**model_kwargs, "local_files_only": True},
                                  processor_kwargs={"local_files_only": True})
        return transformer, None
    st = SentenceTransformer(str(folder), device="cpu", local_files_only=True, model_kwargs=model_kwargs)
    kinds = [type(module).__name__ for module in st]
    if kinds[0] != "Transformer" or any(kind not in _HEAD_MODULES for kind in kinds):
        raise ValueError(f"{folder}: a student is Transformer → Pooling → [Dense] → [Normalize]; "
                         f"this folder has {' → '.join(kinds)}")
    return st[0], next((module for module in st if type(module).__name__ == "Dense"), None)
