"""Length buckets: encode a tokenized batch in length-sorted groups, each padded only to its own longest.

A step's 16 × 20 captions average ~27 tokens but are padded to the longest (~70): about half of
what the encoder computes is padding. Sorting the rows by length, cutting them into groups and
trimming each group's all-padding columns removes that waste; the embeddings are put back in the
input order with a differentiable gather, so the loss (and its gradients) are unchanged.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor

Tokens = Mapping[str, Tensor]


def length_order(tokens: Tokens) -> tuple[Tensor, Tensor]:
    """(order, inverse): rows longest first (stable), and the permutation that undoes it."""
    lengths = tokens["attention_mask"].sum(1)
    order = torch.argsort(lengths, descending=True, stable=True)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return order, inverse


def take_rows(tokens: Tokens, rows: Tensor) -> dict[str, Tensor]:
    return {k: v[rows] if isinstance(v, Tensor) else v for k, v in tokens.items()}


def trim_padding(tokens: Tokens, multiple: int = 8) -> dict[str, Tensor]:
    """Drop the columns that are padding in every row (left or right padding alike), keeping the width
    a multiple of ``multiple``: oneDNN compiles a kernel per new matmul shape on CPU, and a new length
    each group costs more than the few padded columns.
    """
    mask = tokens["attention_mask"]
    width = mask.shape[1]
    columns = mask.bool().any(0).nonzero(as_tuple=True)[0]
    if columns.numel() == 0:
        return dict(tokens)
    lo, hi = int(columns[0]), int(columns[-1]) + 1  # real tokens are contiguous columns under either side's padding
    target = min(width, -(-(hi - lo) // multiple) * multiple)
    hi = min(width, lo + target)
    lo = hi - target
    if hi - lo == width:
        return dict(tokens)
    return {k: v[:, lo:hi] if isinstance(v, Tensor) and v.dim() == 2 and v.shape == mask.shape else v
            for k, v in tokens.items()}


def encode_in_buckets(encode: Callable[[dict[str, Tensor]], Tensor], tokens: Tokens,
                      bucket_size: int | None) -> Tensor:
    """``encode`` applied to length-sorted groups of at most ``bucket_size`` rows; [N, D] in input order.

    ``bucket_size=None`` encodes the batch at once (padded to its longest row), as before.
    """
    if bucket_size is None:
        return encode(dict(tokens))
    if bucket_size < 1:
        raise ValueError(f"bucket_size must be >= 1 or null, got {bucket_size}")
    order, inverse = length_order(tokens)
    parts = [encode(trim_padding(take_rows(tokens, rows))) for rows in order.split(bucket_size)]
    return torch.cat(parts).index_select(0, inverse.to(parts[0].device))
