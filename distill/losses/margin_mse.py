"""Margin-MSE, generalised from triples to candidate lists.

Margin-MSE (Hofstätter et al. 2020, "Improving efficient neural ranking models with
cross-architecture knowledge distillation") trains the student to reproduce the teacher's score
*margin* between a positive and a negative passage. Here every list provides one positive (the
teacher's top-1) and its other candidates as negatives: for each of them the student margin
``s_pos − s_j`` is regressed onto the teacher margin ``t_pos − t_j``.

Imports only torch (see DESIGN.md).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distill.losses.listwise_kl import (
    list_scores,
    minmax_normalize,
    no_autocast,
    resolve_mask,
    teacher_top1,
)


# margins are differences within a list, so a set-wide affine scale (percentile) adds nothing over "none"
MARGIN_NORMALIZATIONS = ("none", "minmax")


def margin_mse(
    query_emb: Tensor,
    passage_emb: Tensor,
    teacher_scores: Tensor,
    mask: Tensor | None = None,
    teacher_normalization: str = "none",
) -> Tensor:
    """Mean squared error between student and teacher margins to each list's teacher top-1.

    Args:
        query_emb: ``[B, D]``.
        passage_emb: ``[B·L, D]`` list-major: row ``i·L + j`` is candidate j of query i.
        teacher_scores: ``[B, L]`` cross-encoder scores.
        mask: optional ``BoolTensor[B, L]``, True for real candidates; padded ones contribute
            nothing.
        teacher_normalization: ``"none"`` (Hofstätter et al.: raw teacher margins — the student
            scores must then be on the teacher's scale, i.e. unnormalised embeddings) or
            ``"minmax"`` (teacher margins in [0, 1] per list, a scale that suits cosine scores).

    Student score s_j is the dot product of the query with candidate j of its own list; the
    positive is the teacher's top-1 (first one on ties).

    Returns:
        float32 scalar: for each list the mean of ``((s_pos − s_j) − (t_pos − t_j))²`` over its
        real candidates j ≠ pos, then the mean over lists (lists with fewer than two real
        candidates have no margin and are left out). Computed in float32 even under autocast.
    """
    if teacher_normalization not in MARGIN_NORMALIZATIONS:
        raise ValueError(
            f"teacher_normalization must be one of {MARGIN_NORMALIZATIONS}, got {teacher_normalization!r}"
        )
    student = list_scores(query_emb, passage_emb)
    if student.shape != teacher_scores.shape:
        raise ValueError(
            f"teacher_scores{tuple(teacher_scores.shape)} does not match the lists of "
            f"query_emb{tuple(query_emb.shape)} / passage_emb{tuple(passage_emb.shape)}"
        )
    with no_autocast(student.device):
        mask = resolve_mask(mask, student.shape, student.device)
        teacher = teacher_scores.float()
        if teacher_normalization == "minmax":
            teacher = minmax_normalize(teacher, mask)
        teacher = teacher.masked_fill(~mask, 0.0)
        student = student.masked_fill(~mask, 0.0)
        rows = torch.arange(student.shape[0], device=student.device)
        positive = teacher_top1(teacher_scores, mask)
        student_margin = student[rows, positive].unsqueeze(-1) - student
        teacher_margin = teacher[rows, positive].unsqueeze(-1) - teacher
        negatives = mask.clone()
        negatives[rows, positive] = False
        squared = (student_margin - teacher_margin).pow(2) * negatives
        counts = negatives.sum(dim=-1)
        has_margin = counts > 0
        per_list = squared.sum(dim=-1) / counts.clamp_min(1)
        return (per_list * has_margin).sum() / has_margin.sum().clamp_min(1)


class MarginMSELoss(nn.Module):
    """Listwise Margin-MSE (Hofstätter et al. 2020); see :func:`margin_mse`.

    ``forward(query_emb[B, D], passage_emb[B·L, D], teacher_scores[B, L], mask=None) -> scalar``.
    """

    def __init__(self, teacher_normalization: str = "none") -> None:
        super().__init__()
        self.teacher_normalization = teacher_normalization

    def forward(
        self, query_emb: Tensor, passage_emb: Tensor, teacher_scores: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        return margin_mse(query_emb, passage_emb, teacher_scores, mask, self.teacher_normalization)

    def extra_repr(self) -> str:
        return f"teacher_normalization={self.teacher_normalization!r}"
