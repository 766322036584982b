"""Dev-list metrics: how closely the student orders each held-out list the way the teacher does.

Logged by ``DistillationModule.validation_step`` beside ``dev/kl`` (the selection metric); the
evaluation sets' metrics live in ``distill/evaluation`` and never come near these lists.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.regression import kendall_rank_corrcoef
from torchmetrics.functional.retrieval import retrieval_normalized_dcg

from distill.losses import minmax_normalize


def dev_list_metrics(student_scores: Tensor, teacher_scores: Tensor, mask: Tensor) -> dict[str, float]:
    """Means over the lists with at least two candidates of ``student_scores[B, L]`` vs ``teacher_scores[B, L]``
    (``mask[B, L]`` False on padding): ``kendall_tau`` (a list of ties counts 0) and
    ``ndcg@10_vs_teacher`` (gains: the teacher's scores min-max normalised per list, as the KL's
    teacher side sees them). Empty when no list has two candidates.
    """
    gains = minmax_normalize(teacher_scores, mask)
    taus, ndcgs = [], []
    for s, g, t, m in zip(student_scores.float(), gains, teacher_scores.float(), mask):
        if int(m.sum()) < 2:
            continue
        tau = kendall_rank_corrcoef(s[m], t[m])
        taus.append(0.0 if torch.isnan(tau) else tau.item())
        ndcgs.append(retrieval_normalized_dcg(s[m], g[m], top_k=10).item())
    if not taus:
        return {}
    return {"kendall_tau": sum(taus) / len(taus), "ndcg@10_vs_teacher": sum(ndcgs) / len(ndcgs)}
