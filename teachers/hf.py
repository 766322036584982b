"""Torch cross-encoders: any HF ``...ForSequenceClassification`` folder (sentence-transformers
CrossEncoder folders are one), frozen, with bf16 autocast where the hardware has bf16 units."""
from __future__ import annotations

import inspect
from pathlib import Path

import torch

from distill.hardware import autocast, default_device, resolve_autocast
from teachers.base import TokenizedTeacher, cap_length, fingerprint, pick_relevance

TORCH_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def has_torch_weights(folder: str | Path) -> bool:
    return any((Path(folder) / name).is_file() for name in TORCH_WEIGHTS)


class HFTeacher(TokenizedTeacher):
    """A frozen torch sequence-classification model scoring (query, passage) pairs."""

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        batch_size: int = 32,
        max_length: int = 512,
        bf16: bool | None = None,
        device: str | torch.device | None = None,
        show_progress: bool = False,
    ):
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        folder = Path(path)
        self.name = name or str(folder)
        if not (folder / "config.json").is_file():
            raise ValueError(f"teacher {self.name!r}: {folder} has no config.json, so it is not a HF model folder")
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        architectures = list(getattr(config, "architectures", None) or [])
        if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
            raise ValueError(
                f"teacher {self.name!r}: {folder} holds a {architectures[0]} without a sequence-classification "
                "head; a teacher must be a cross-encoder (a ...ForSequenceClassification folder)"
            )
        self.num_labels = int(config.num_labels)
        pick_relevance(torch.zeros(1, self.num_labels), self.num_labels, self.name)  # reject >2 heads early
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        length = cap_length(max_length, tokenizer, max_positions=getattr(config, "max_position_embeddings", None),
                            model_type=getattr(config, "model_type", None))
        super().__init__(tokenizer, batch_size=batch_size, max_length=length, show_progress=show_progress)

        model, info = AutoModelForSequenceClassification.from_pretrained(
            folder, local_files_only=True, output_loading_info=True, dtype=torch.float32
        )
        missing = [k for k in info.get("missing_keys", ()) if not k.endswith("position_ids")]
        if missing:
            # transformers would silently initialise these at random: a teacher that scores noise.
            raise ValueError(
                f"teacher {self.name!r}: {folder} lacks weights for {len(missing)} tensor(s) "
                f"({', '.join(sorted(missing)[:3])}); it has no trained sequence-classification head"
            )
        self.device = torch.device(device) if device is not None else default_device()
        self.bf16 = resolve_autocast(self.device, bf16)
        self.model = model.to(self.device).eval().requires_grad_(False)
        if self.bf16:
            _precast_linears(self.model)
        accepted = inspect.signature(self.model.forward).parameters
        self._inputs = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in accepted]
        self._identity = (
            f"hf:{self.name}@{fingerprint(folder)}|max_length={self.max_length}"
            f"|precision={'bf16' if self.bf16 else 'fp32'}|head=logit{self.num_labels - 1}of{self.num_labels}"
        )

    @property
    def identity(self) -> str:
        return self._identity

    def _score_batch(self, items) -> torch.Tensor:
        arrays = self._pad(items)
        feed = {k: torch.from_numpy(arrays[k]).to(self.device) for k in self._inputs}
        with torch.inference_mode(), autocast(self.device, self.bf16):
            logits = self.model(**feed).logits
        return pick_relevance(logits.float(), self.num_labels, self.name)


def _precast_linears(model: torch.nn.Module) -> None:
    """Store Linear weights in bf16 once. Autocast would cast them to bf16 on every forward anyway
    (same numbers), and on CPU those casts cost more than the short-sequence matmuls themselves.
    Embeddings and LayerNorms stay fp32, as autocast keeps them."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.to(torch.bfloat16)
