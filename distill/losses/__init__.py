"""Distillation losses: one per file, each a pure function of scores/embeddings plus a thin nn.Module.

Imports only torch (see DESIGN.md).
"""

from distill.losses.infonce import InfoNCELoss, info_nce
from distill.losses.listwise_kl import (
    ListwiseKLLoss,
    list_entropy,
    list_scores,
    listwise_kl,
    match_temperature,
    minmax_normalize,
    normalize_teacher,
    percentile_normalize,
)
from distill.losses.margin_mse import MarginMSELoss, margin_mse
from distill.losses.objective import DistillationObjective, ObjectiveConfig

__all__ = [
    "DistillationObjective",
    "InfoNCELoss",
    "ListwiseKLLoss",
    "MarginMSELoss",
    "ObjectiveConfig",
    "info_nce",
    "list_entropy",
    "list_scores",
    "listwise_kl",
    "margin_mse",
    "match_temperature",
    "minmax_normalize",
    "normalize_teacher",
    "percentile_normalize",
]
