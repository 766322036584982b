"""The teacher protocol and the batching every cross-encoder shares.

A teacher maps (query, passage) pairs to one raw relevance logit each. ``identity`` names everything
that changes those numbers (weights, max length, precision, head), so a score cache keyed on it is
never stale.
"""
from __future__ import annotations

import abc
import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import torch

# How many pairs are tokenised and length-sorted together: large enough that sorting removes most
# padding, small enough that a million-pair call never holds a million tokenised pairs at once.
SORT_WINDOW_BATCHES = 64

# Files whose content changes a cross-encoder's scores (weights, head config, vocabulary).
FINGERPRINT_FILES = (
    "model.onnx", "model.safetensors", "pytorch_model.bin", "config.json", "tokenizer.json",
    "vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "sentencepiece.bpe.model",
    "spm.model", "merges.txt", "vocab.json",
)
_FINGERPRINTS: dict[tuple, str] = {}


def fingerprint(folder: str | Path) -> str:
    """sha256 (16 hex) over the content of the score-relevant files of a model folder.

    Content rather than mtime so a reinstalled package or a copied folder keeps its cache entries;
    memoised on (path, size, mtime) so it is read once per process.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*") if p.name in FINGERPRINT_FILES or p.suffix == ".safetensors")
    stamp = tuple((str(p.resolve()), st.st_size, st.st_mtime_ns) for p in files for st in [p.stat()])
    if stamp not in _FINGERPRINTS:
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.name.encode() + b"\0")
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        _FINGERPRINTS[stamp] = digest.hexdigest()[:16]
    return _FINGERPRINTS[stamp]


def available_cores() -> int:
    """CPU cores this process may run on (affinity/cgroup-aware where the OS says so)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Teacher(abc.ABC):
    """A frozen scorer: ``score(queries, passages) -> float32 Tensor[N]`` of raw logits.

    Subclasses implement ``_score_batch`` (and, to batch by token length, ``_prepare``/``_length``).
    The base validates input, sorts pairs by length so batches carry little padding, restores the
    caller's order and rejects non-finite outputs.
    """

    name: str = "teacher"

    def __init__(self, *, batch_size: int = 32, max_length: int = 512, show_progress: bool = False):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.show_progress = bool(show_progress)

    @property
    @abc.abstractmethod
    def identity(self) -> str:
        """Stable string naming the model files and every option that changes scores."""

    # -- hooks for subclasses ------------------------------------------------------------------
    def _prepare(self, queries: Sequence[str], passages: Sequence[str]) -> list[Any]:
        """One item per pair, handed back to ``_score_batch`` (default: the raw pair)."""
        return list(zip(queries, passages))

    def _length(self, item: Any) -> int:
        """Sort key; tokenising teachers return the token count."""
        query, passage = item
        return len(query) + len(passage)

    @abc.abstractmethod
    def _score_batch(self, items: list[Any]) -> torch.Tensor:
        """Scores for one batch of prepared items, in the given order."""

    # -- the shared path -----------------------------------------------------------------------
    def score(self, queries: Sequence[str], passages: Sequence[str]) -> torch.Tensor:
        """One float32 raw logit per (query, passage) pair, in input order."""
        queries, passages = check_pairs(queries, passages)
        total = len(queries)
        out = torch.empty(total, dtype=torch.float32)
        if total == 0:
            return out
        bar = _progress(total, self.name) if self.show_progress else None
        window = self.batch_size * SORT_WINDOW_BATCHES
        try:
            for start in range(0, total, window):
                stop = min(start + window, total)
                items = self._prepare(queries[start:stop], passages[start:stop])
                # Longest first: the largest batch runs first, so an out-of-memory shows at once.
                order = sorted(range(len(items)), key=lambda i: -self._length(items[i]))
                for b in range(0, len(order), self.batch_size):
                    idx = order[b:b + self.batch_size]
                    scores = self._score_batch([items[i] for i in idx])
                    scores = scores.detach().reshape(-1).to("cpu", torch.float32)
                    if scores.numel() != len(idx):
                        raise ValueError(f"teacher {self.name!r} returned {scores.numel()} scores for {len(idx)} pairs")
                    out[torch.tensor(idx, dtype=torch.long) + start] = scores
                    if bar is not None:
                        bar.update(len(idx))
        finally:
            if bar is not None:
                bar.close()
        check_finite(out, self.name)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity})"


# Position-embedding tables of these model types keep 2 rows for padding offsets (RoBERTa rule).
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert")


def cap_length(max_length: int, tokenizer, *, max_positions: int | None = None, model_type: str | None = None) -> int:
    """``max_length`` clipped to what the tokenizer and the position embeddings allow.

    One rule for every backend: ``model_max_length`` (ignored when unset, i.e. a huge sentinel) and
    ``max_position_embeddings``, less 2 for RoBERTa-style models, whose positions start after the pad id.
    """
    limits = [int(max_length)]
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < 100_000:
        limits.append(declared)
    if isinstance(max_positions, int) and max_positions > 0:
        limits.append(max_positions - 2 if model_type in _OFFSET_POSITIONS else max_positions)
    return min(limits)


def check_pairs(queries: Sequence[str], passages: Sequence[str]) -> tuple[list[str], list[str]]:
    """Lists of strings of equal length, or a one-line ValueError."""
    if isinstance(queries, str) or isinstance(passages, str):
        raise ValueError("score() takes lists of queries and passages, not single strings")
    queries, passages = list(queries), list(passages)
    if len(queries) != len(passages):
        raise ValueError(f"score() got {len(queries)} queries but {len(passages)} passages; pass one query per passage")
    for kind, texts in (("query", queries), ("passage", passages)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"{kind} #{i} is {type(text).__name__}, not str")
    return queries, passages


def check_finite(scores: torch.Tensor, name: str) -> None:
    bad = ~torch.isfinite(scores)
    if bool(bad.any()):
        first = int(bad.nonzero()[0])
        raise ValueError(
            f"teacher {name!r} produced {int(bad.sum())} non-finite score(s) (NaN/inf), first at pair #{first} "
            f"(value {scores[first].item()}); check the weights and the precision (try bf16=False)"
        )


def _progress(total: int, name: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"scoring ({name})", unit="pair", dynamic_ncols=True)


class TokenizedTeacher(Teacher):
    """A teacher fed by a HF tokenizer: pairs are tokenised once, unpadded, sorted by token count,
    and each batch is padded only to its own longest pair."""

    def __init__(self, tokenizer, **kwargs):
        super().__init__(**kwargs)
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def _prepare(self, queries, passages):
        # longest_first truncation, as sentence-transformers' CrossEncoder does.
        enc = self.tokenizer(
            list(queries), list(passages), truncation=True, max_length=self.max_length,
            padding=False, return_attention_mask=False, return_token_type_ids=True,
        )
        types = enc.get("token_type_ids") or [None] * len(enc["input_ids"])
        return list(zip(enc["input_ids"], types))

    def _length(self, item) -> int:
        return len(item[0])

    def _pad(self, items) -> dict[str, "np.ndarray"]:
        """int64 input_ids / attention_mask / token_type_ids, right-padded to the batch's longest."""
        import numpy as np

        width = max(len(ids) for ids, _ in items)
        input_ids = np.full((len(items), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(items), width), dtype=np.int64)
        types = np.zeros((len(items), width), dtype=np.int64)
        for row, (ids, type_ids) in enumerate(items):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
            if type_ids is not None:
                types[row, : len(ids)] = type_ids
        return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types}


def pick_relevance(logits, num_labels: int, name: str):
    """The relevance logit: the only one of a 1-logit head, label 1 ("relevant") of a 2-logit head."""
    if num_labels == 1:
        return logits[:, 0]
    if num_labels == 2:
        return logits[:, 1]
    raise ValueError(
        f"teacher {name!r} has a {num_labels}-logit head; a cross-encoder teacher needs 1 logit "
        "(relevance) or 2 (irrelevant, relevant)"
    )
