"""All-gather with gradients, so other devices' passages can serve as negatives.

With data parallelism each rank encodes its own lists; the contrastive loss wants the other
ranks' passages as extra negatives. Gathering them with plain ``all_gather`` would cut the graph,
and the owners would never learn from being someone else's negative. Here the gather is
differentiable: the backward pass sums, for every rank's slice, the gradients all ranks computed
for it and hands that sum to the owner (``torch.distributed.nn.functional.all_gather``:
reduce-scatter on NCCL, all-to-all + sum elsewhere).

Because the backward is a collective, every rank must run backward through every gather it made
(as it does under DDP, where all ranks execute the same steps).

Outside ``torch.distributed`` (not initialised, or world size 1) every function degrades to the
local, single-process answer.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor


def _world_size(group: Any = None) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group=group)


def _gather_parts(tensor: Tensor, group: Any = None) -> list[Tensor]:
    """Every rank's ``tensor`` (first dims may differ), in rank order, differentiable."""
    world_size = _world_size(group)
    if world_size == 1:
        return [tensor]
    size = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size, group=group)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    padded = tensor
    if tensor.shape[0] < longest:
        filler = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([tensor, filler], dim=0)
    parts = dist_fn.all_gather(padded.contiguous(), group=group if group is not None else dist.group.WORLD)
    return [part[:count] for part, count in zip(parts, counts)]


def _rank(group: Any = None) -> int:
    return dist.get_rank(group=group) if _world_size(group) > 1 else 0


def all_gather_with_grad(tensor: Tensor, group: Any = None) -> Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0, in rank order, keeping gradients.

    Ranks may hold different numbers of rows (sizes are gathered first; the rows are padded to
    the longest and trimmed again). The gradient of the result reaching rank r's slice is summed
    over all ranks and returned to rank r, the owner. Without an initialised process group, or
    with world size 1, returns ``tensor`` itself.
    """
    if _world_size(group) == 1:
        return tensor
    return torch.cat(_gather_parts(tensor, group), dim=0)


def gather_other_ranks(tensor: Tensor, group: Any = None) -> Tensor:
    """The rows of every *other* rank's ``tensor``, concatenated in rank order, with gradients.

    This is "other devices' passages" for ``info_nce(extra_passage_emb=...)``: all-gathered
    minus the local slice. Gradients flow back to the rows' owners through the all-gather
    backward. Empty (0 rows) without distribution or with world size 1.
    """
    if _world_size(group) == 1:
        return tensor[:0]
    parts = _gather_parts(tensor, group)
    rank = _rank(group)
    return torch.cat(parts[:rank] + parts[rank + 1 :], dim=0)


def gather_object_list(obj: Any, group: Any = None) -> list[Any]:
    """Every rank's picklable ``obj`` (e.g. its doc ids), in rank order; ``[obj]`` when alone."""
    world_size = _world_size(group)
    if world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, obj, group=group)
    return gathered


def gather_other_ranks_objects(obj: Any, group: Any = None) -> list[Any]:
    """The other ranks' ``obj`` in rank order — the same order as :func:`gather_other_ranks`."""
    gathered = gather_object_list(obj, group)
    rank = _rank(group)
    return gathered[:rank] + gathered[rank + 1 :]
