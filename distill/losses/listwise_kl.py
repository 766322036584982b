"""Listwise KL distillation from a cross-encoder teacher.

The loss of CADET (Tamber et al. 2025, "Conventional contrastive learning often falls short:
improving dense retrieval with cross-encoder listwise distillation and synthetic data"): for
every query, the teacher's scores over its candidate list define a target distribution and the
student's query-passage similarities over the same list define a predicted one; the loss is
``KL(teacher ‖ student)`` per list, averaged over lists.

This module also holds the small list primitives shared by the other losses of the package
(``resolve_mask``, ``minmax_normalize``, ``teacher_top1``, ``list_scores``): they describe what a
*list* is (B queries × L candidates, some of them padding) rather than any one loss.

Imports only torch (see DESIGN.md).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TEACHER_NORMALIZATIONS = ("none", "minmax", "percentile")

# (p1, p99) of every teacher score of the training lists, for ``teacher_normalization="percentile"``
Percentiles = Sequence[float] | Tensor


def no_autocast(device: torch.device):
    """A context in which autocast is off for ``device`` so the loss math runs in float32."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def resolve_mask(mask: Tensor | None, shape: torch.Size, device: torch.device) -> Tensor:
    """``mask`` as a bool tensor of ``shape`` (True = real candidate); all True when ``None``."""
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {tuple(shape)}")
    return mask.to(device=device, dtype=torch.bool)


def minmax_normalize(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """Min-max normalise each row of ``scores[B, L]`` to [0, 1] over its unmasked entries.

    The top candidate of a list gets 1 and the bottom one 0. A list whose (unmasked) scores are
    all equal has no spread to normalise: every candidate ties with the top and gets 1 (the row
    is then uniform under any temperature, and no NaN is produced). Masked entries get 0.
    Computed in float32.
    """
    scores = scores.float()
    mask = resolve_mask(mask, scores.shape, scores.device)
    safe = scores.masked_fill(~mask, 0.0)
    low = safe.masked_fill(~mask, float("inf")).amin(dim=-1, keepdim=True)
    high = safe.masked_fill(~mask, float("-inf")).amax(dim=-1, keepdim=True)
    has_any = mask.any(dim=-1, keepdim=True)
    low = torch.where(has_any, low, torch.zeros_like(low))
    high = torch.where(has_any, high, torch.zeros_like(high))
    spread = high - low
    flat = spread <= 0
    normalized = (safe - low) / torch.where(flat, torch.ones_like(spread), spread)
    normalized = torch.where(flat, torch.ones_like(normalized), normalized)
    return normalized.masked_fill(~mask, 0.0)


def percentile_normalize(scores: Tensor, percentiles: Percentiles, mask: Tensor | None = None) -> Tensor:
    """CADET's teacher scale: ``(s − p1) / (p99 − p1)`` clipped to [0, 1], for ``scores[B, L]``.

    Unlike :func:`minmax_normalize` the scale is one for the whole list set (p1 / p99 are the 1st
    and 99th percentiles of every teacher score of the training lists), so a list the teacher finds
    uniformly poor keeps low targets instead of being stretched to [0, 1]. Masked entries get 0.
    Computed in float32.
    """
    p1, p99 = _check_percentiles(percentiles)
    scores = scores.float()
    mask = resolve_mask(mask, scores.shape, scores.device)
    normalized = ((scores - p1) / (p99 - p1)).clamp(0.0, 1.0)
    return normalized.masked_fill(~mask, 0.0)


def _check_percentiles(percentiles: Percentiles | None) -> tuple[float, float]:
    if percentiles is None:
        raise ValueError("teacher_normalization='percentile' needs the training lists' (p1, p99) teacher scores")
    values = [float(v) for v in (percentiles.tolist() if isinstance(percentiles, Tensor) else percentiles)]
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or values[1] <= values[0]:
        raise ValueError(f"percentiles must be two finite numbers p1 < p99, got {values}")
    return values[0], values[1]


def normalize_teacher(
    teacher_scores: Tensor, normalization: str, mask: Tensor | None = None, percentiles: Percentiles | None = None
) -> Tensor:
    """``teacher_scores[B, L]`` on the scale the losses use: ``"none"`` (raw, float32), ``"minmax"``
    (per list, :func:`minmax_normalize`) or ``"percentile"`` (whole list set, :func:`percentile_normalize`).
    Masked entries get 0."""
    if normalization not in TEACHER_NORMALIZATIONS:
        raise ValueError(f"teacher_normalization must be one of {TEACHER_NORMALIZATIONS}, got {normalization!r}")
    mask = resolve_mask(mask, teacher_scores.shape, teacher_scores.device)
    if normalization == "minmax":
        return minmax_normalize(teacher_scores, mask)
    if normalization == "percentile":
        return percentile_normalize(teacher_scores, percentiles, mask)
    return teacher_scores.float().masked_fill(~mask, 0.0)


def list_entropy(scores: Tensor, temperature: float, mask: Tensor | None = None) -> Tensor:
    """Entropy (nats) ``[B]`` of ``softmax(scores / temperature)`` over each list's unmasked entries.

    A list with no unmasked entry has entropy 0. Computed in float32 without gradients.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with torch.no_grad():
        mask = resolve_mask(mask, scores.shape, scores.device)
        logits = (scores.float() / temperature).masked_fill(~mask, float("-inf"))
        log_p = F.log_softmax(logits.masked_fill(~mask.any(-1, keepdim=True), 0.0), dim=-1)
        entropy = -(log_p.exp() * log_p.masked_fill(~mask, 0.0)).sum(dim=-1)
        return entropy * mask.any(dim=-1)


def match_temperature(
    scores: Tensor,
    target_entropy: float,
    mask: Tensor | None = None,
    low: float = 1e-4,
    high: float = 1e2,
    tolerance: float = 1e-6,
) -> float:
    """The temperature T at which the mean :func:`list_entropy` of ``scores[B, L]`` equals ``target_entropy``.

    Bisection on log T (the entropy of ``softmax(s / T)`` grows monotonically with T) over
    ``[low, high]`` until the mean entropy is within ``tolerance`` nats of the target. Used to pick
    the student's temperature so its list distributions start as peaked as the teacher's.
    Raises ``ValueError`` when the target is out of reach in that range (e.g. lists of equal scores).
    """
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, got low={low}, high={high}")

    def mean_entropy(temperature: float) -> float:
        return list_entropy(scores, temperature, mask).mean().item()

    at_low, at_high = mean_entropy(low), mean_entropy(high)
    if not at_low - tolerance <= target_entropy <= at_high + tolerance:
        raise ValueError(
            f"target entropy {target_entropy:.4f} is out of reach: the mean list entropy is {at_low:.4f} at "
            f"T={low:g} and {at_high:.4f} at T={high:g}"
        )
    log_low, log_high = math.log(low), math.log(high)
    for _ in range(200):
        middle = (log_low + log_high) / 2
        value = mean_entropy(math.exp(middle))
        if abs(value - target_entropy) <= tolerance:
            break
        if value < target_entropy:
            log_low = middle
        else:
            log_high = middle
    return math.exp(middle)


def teacher_top1(teacher_scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """Index ``[B]`` of each list's best unmasked candidate (first one on ties).

    A list with no unmasked candidate gets index 0; callers drop such lists.
    """
    mask = resolve_mask(mask, teacher_scores.shape, teacher_scores.device)
    return teacher_scores.float().masked_fill(~mask, float("-inf")).argmax(dim=-1)


def list_scores(query_emb: Tensor, passage_emb: Tensor) -> Tensor:
    """Student scores ``[B, L]``: dot product of query i with each candidate of its own list.

    ``query_emb[B, D]``, ``passage_emb[B·L, D]`` list-major (row ``i·L + j`` is candidate j of
    query i). Computed in float32.
    """
    if query_emb.dim() != 2 or passage_emb.dim() != 2:
        raise ValueError(
            f"expected query_emb[B, D] and passage_emb[B*L, D], got shapes "
            f"{tuple(query_emb.shape)} and {tuple(passage_emb.shape)}"
        )
    batch, dim = query_emb.shape
    if passage_emb.shape[1] != dim or batch == 0 or passage_emb.shape[0] % batch != 0:
        raise ValueError(
            f"passage_emb{tuple(passage_emb.shape)} is not [B*L, D] for query_emb{tuple(query_emb.shape)}"
        )
    with no_autocast(query_emb.device):
        grouped = passage_emb.float().reshape(batch, -1, dim)
        return torch.einsum("bd,bld->bl", query_emb.float(), grouped)


def listwise_kl(
    student_scores: Tensor,
    teacher_scores: Tensor,
    student_temperature: float = 0.05,
    teacher_temperature: float = 0.3,
    teacher_normalization: str = "minmax",
    mask: Tensor | None = None,
    percentiles: Percentiles | None = None,
) -> Tensor:
    """KL(softmax(teacher / T_t) ‖ softmax(student / T_s)) per list, mean over lists.

    Args:
        student_scores: ``[B, L]`` student similarities (e.g. query·passage dot products).
        teacher_scores: ``[B, L]`` cross-encoder scores (raw logits); treated as constants
            only in the sense that they are usually detached — gradients flow if they require it.
        student_temperature: T_s (CADET: 0.05).
        teacher_temperature: T_t (CADET: 0.3). CADET's value is meant for teacher scores in
            [0, 1]: with ``teacher_normalization="minmax"`` (default) each list's teacher scores
            are first min-max normalised to [0, 1] (a list of equal scores becomes uniform). With
            ``"none"`` the raw logits are divided by T_t directly — on ms-marco cross-encoder
            logits spanning about −10..+4 that makes the target almost one-hot.
        teacher_normalization: ``"minmax"``, ``"none"`` or ``"percentile"`` (CADET's: one scale
            for all lists, ``(s − p1) / (p99 − p1)`` clipped to [0, 1]; see :func:`percentile_normalize`).
        mask: optional ``BoolTensor[B, L]``, True for real candidates. Padded candidates get zero
            probability on both sides and contribute nothing, so the loss of a padded list equals
            the loss of the shorter list. Lists with no real candidate are left out of the mean.
        percentiles: ``(p1, p99)`` of the training lists' teacher scores (floats or a Tensor[2]);
            required by ``"percentile"``, ignored otherwise.

    Returns:
        A float32 scalar: the summed KL of each list averaged over the (non-empty) lists,
        i.e. ``kl_div(..., reduction="batchmean")``. Computed in float32 even under autocast.
    """
    if student_temperature <= 0 or teacher_temperature <= 0:
        raise ValueError(
            f"temperatures must be > 0, got student_temperature={student_temperature}, "
            f"teacher_temperature={teacher_temperature}"
        )
    if teacher_normalization not in TEACHER_NORMALIZATIONS:
        raise ValueError(
            f"teacher_normalization must be one of {TEACHER_NORMALIZATIONS}, got {teacher_normalization!r}"
        )
    if student_scores.shape != teacher_scores.shape or student_scores.dim() != 2:
        raise ValueError(
            f"student_scores{tuple(student_scores.shape)} and teacher_scores{tuple(teacher_scores.shape)} "
            "must both be [B, L]"
        )
    with no_autocast(student_scores.device):
        mask = resolve_mask(mask, student_scores.shape, student_scores.device)
        nonempty = mask.any(dim=-1)
        # An empty list is computed as if it were full (no -inf-only rows) and then dropped.
        compute_mask = mask | ~nonempty.unsqueeze(-1)

        teacher = normalize_teacher(teacher_scores, teacher_normalization, compute_mask, percentiles)
        student = student_scores.float().masked_fill(~compute_mask, 0.0)

        neg_inf = float("-inf")
        log_p = F.log_softmax((teacher / teacher_temperature).masked_fill(~compute_mask, neg_inf), dim=-1)
        log_q = F.log_softmax((student / student_temperature).masked_fill(~compute_mask, neg_inf), dim=-1)
        # Padded entries: exp(0) * (0 - 0) = 0, instead of exp(-inf) * (-inf + inf) = nan.
        log_p = log_p.masked_fill(~compute_mask, 0.0)
        log_q = log_q.masked_fill(~compute_mask, 0.0)
        per_list = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=-1)
        per_list = per_list * nonempty
        return per_list.sum() / nonempty.sum().clamp_min(1)


class ListwiseKLLoss(nn.Module):
    """Listwise KL distillation loss (Tamber et al. 2025, CADET); see :func:`listwise_kl`.

    ``forward(student_scores[B, L], teacher_scores[B, L], mask=None) -> scalar``.
    """

    def __init__(
        self,
        student_temperature: float = 0.05,
        teacher_temperature: float = 0.3,
        teacher_normalization: str = "minmax",
        percentiles: Percentiles | None = None,
    ) -> None:
        super().__init__()
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.teacher_normalization = teacher_normalization
        self.percentiles = percentiles

    def forward(self, student_scores: Tensor, teacher_scores: Tensor, mask: Tensor | None = None) -> Tensor:
        return listwise_kl(
            student_scores,
            teacher_scores,
            student_temperature=self.student_temperature,
            teacher_temperature=self.teacher_temperature,
            teacher_normalization=self.teacher_normalization,
            mask=mask,
            percentiles=self.percentiles,
        )

    def extra_repr(self) -> str:
        return (
            f"student_temperature={self.student_temperature}, teacher_temperature={self.teacher_temperature}, "
            f"teacher_normalization={self.teacher_normalization!r}"
        )
