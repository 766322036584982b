"""The training objective: weighted sum of listwise KL, InfoNCE and Margin-MSE.

CADET (Tamber et al. 2025) trains with the listwise KL plus a small weight of contrastive loss;
"KL only" and "InfoNCE only" are this same objective with the other weight at 0, and a weight of
0 skips that term's computation entirely.

Imports only torch (see DESIGN.md).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Union

from torch import Tensor, nn

from distill.losses.infonce import DocIds, InfoNCELoss
from distill.losses.listwise_kl import TEACHER_NORMALIZATIONS, ListwiseKLLoss, list_scores
from distill.losses.margin_mse import MARGIN_NORMALIZATIONS, MarginMSELoss


@dataclass(frozen=True)
class ObjectiveConfig:
    """Weights and hyper-parameters of :class:`DistillationObjective`, validated on creation.

    kl_weight / contrastive_weight / margin_mse_weight: weights (>= 0, not all 0) of the
        listwise KL, the InfoNCE and the Margin-MSE terms.
    student_temperature / teacher_temperature / teacher_normalization: of the listwise KL.
        ``student_temperature: auto`` is chosen when training starts so that the student's mean list
        entropy on the first ``entropy_lists`` training lists equals the teacher target's;
        ``teacher_normalization: percentile`` scales by the training lists' (p1, p99) teacher scores.
        The InfoNCE's false-negative rule uses the same teacher scale.
    contrastive_temperature / false_negative_ratio: of the InfoNCE.
    margin_mse_teacher_normalization: of the Margin-MSE ("none" or "minmax").
    entropy_lists: lists over which the starting entropies are measured (and ``auto`` is chosen).
    """

    kl_weight: float = 1.0
    contrastive_weight: float = 0.1
    margin_mse_weight: float = 0.0
    student_temperature: Union[float, Literal["auto"]] = 0.05
    teacher_temperature: float = 0.3
    teacher_normalization: str = "minmax"
    contrastive_temperature: float = 0.01
    false_negative_ratio: float = 0.6
    margin_mse_teacher_normalization: str = "none"
    entropy_lists: int = 256

    def __post_init__(self) -> None:
        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"ObjectiveConfig.{name} must be a finite number, got {value!r}")
            return float(value)

        for name in ("kl_weight", "contrastive_weight", "margin_mse_weight"):
            if number(name) < 0:
                raise ValueError(f"ObjectiveConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.kl_weight == 0 and self.contrastive_weight == 0 and self.margin_mse_weight == 0:
            raise ValueError(
                "ObjectiveConfig: kl_weight, contrastive_weight and margin_mse_weight are all 0; "
                "at least one loss term must have a positive weight"
            )
        temperatures = ["teacher_temperature", "contrastive_temperature"]
        if self.student_temperature != "auto":
            temperatures.append("student_temperature")
        for name in temperatures:
            if number(name) <= 0:
                raise ValueError(f"ObjectiveConfig.{name} must be > 0, got {getattr(self, name)!r}")
        ratio = number("false_negative_ratio")
        if not 0 < ratio <= 1:
            raise ValueError(f"ObjectiveConfig.false_negative_ratio must be in (0, 1], got {ratio!r}")
        for name, allowed in (("teacher_normalization", TEACHER_NORMALIZATIONS),
                              ("margin_mse_teacher_normalization", MARGIN_NORMALIZATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"ObjectiveConfig.{name} must be one of {', '.join(map(repr, allowed))}, "
                    f"got {getattr(self, name)!r}"
                )
        entropy_lists = self.entropy_lists
        if isinstance(entropy_lists, bool) or not isinstance(entropy_lists, int) or entropy_lists < 1:
            raise ValueError(f"ObjectiveConfig.entropy_lists must be a positive integer, got {entropy_lists!r}")


class DistillationObjective(nn.Module):
    """``kl_weight · KL + contrastive_weight · InfoNCE + margin_mse_weight · MarginMSE``.

    Build with ``DistillationObjective(ObjectiveConfig(...))`` or with keyword overrides,
    ``DistillationObjective(contrastive_weight=0.0)`` (overrides also apply on top of a config).

    ``forward(query_emb[B, D], passage_emb[B·L, D], teacher_scores[B, L], doc_ids,
    candidate_mask=None, extra_passage_emb=None, extra_doc_ids=None, extra_passage_mask=None)``
    returns ``{"loss": weighted sum (with grad), "kl": ..., "contrastive": ..., "margin_mse": ...}``
    where each component is the unweighted, detached term, present only when its weight is > 0.
    Student scores for the KL and Margin-MSE are query·passage within each list; the extra
    (other devices') passages only enter the InfoNCE as negatives.

    Every term is a mean over the local lists. Under DDP, with gradients flowing back to their
    owners through ``gather_other_ranks`` and DDP averaging gradients over ranks, training is
    equivalent to the single-process objective on the global batch when every rank holds the
    same number of lists (tests/test_distributed.py).
    """

    def __init__(self, config: ObjectiveConfig | None = None, **overrides: object) -> None:
        super().__init__()
        if config is None:
            config = ObjectiveConfig(**overrides)  # type: ignore[arg-type]
        elif overrides:
            config = dataclasses.replace(config, **overrides)  # type: ignore[arg-type]
        self.config = config
        auto = config.student_temperature == "auto"
        # 1.0 stands in until set_student_temperature (an unset "auto" is refused in forward)
        self.kl = ListwiseKLLoss(1.0 if auto else config.student_temperature, config.teacher_temperature,
                                 config.teacher_normalization)
        self.contrastive = InfoNCELoss(config.contrastive_temperature, config.false_negative_ratio,
                                       config.teacher_normalization)
        self.margin_mse = MarginMSELoss(config.margin_mse_teacher_normalization)
        self._student_temperature_set = not auto

    # ---- values chosen from the training data, kept in the state dict (checkpoint, resume, export) ----
    @property
    def percentiles(self) -> tuple[float, float] | None:
        """(p1, p99) of the training lists' teacher scores, once set."""
        return self.kl.percentiles

    def set_percentiles(self, p1: float, p99: float) -> None:
        values = (float(p1), float(p99))
        if not all(math.isfinite(v) for v in values) or values[1] <= values[0]:
            raise ValueError(f"teacher score percentiles must be finite with p1 < p99, got {values}")
        self.kl.percentiles = self.contrastive.percentiles = values

    @property
    def student_temperature(self) -> float | None:
        """The listwise KL's student temperature (None while ``auto`` is not chosen yet)."""
        return self.kl.student_temperature if self._student_temperature_set else None

    def set_student_temperature(self, temperature: float) -> None:
        if not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"student temperature must be a positive number, got {temperature!r}")
        self.kl.student_temperature = float(temperature)
        self._student_temperature_set = True

    def get_extra_state(self) -> dict[str, Any]:
        return {"teacher_percentiles": self.percentiles, "student_temperature": self.student_temperature}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("teacher_percentiles") is not None:
            self.set_percentiles(*state["teacher_percentiles"])
        if state.get("student_temperature") is not None:
            self.set_student_temperature(state["student_temperature"])

    def kl_term(self, student_scores: Tensor, teacher_scores: Tensor, mask: Tensor | None = None) -> Tensor:
        """The listwise KL with the run's temperatures and teacher scale (``student_scores[B, L]``)."""
        self._check_ready(kl=True)
        return self.kl(student_scores, teacher_scores, mask)

    def _check_ready(self, kl: bool) -> None:
        if kl and not self._student_temperature_set:
            raise RuntimeError("student_temperature is 'auto' and has not been chosen yet "
                               "(the training module chooses it when fitting starts)")
        if self.config.teacher_normalization == "percentile" and self.percentiles is None:
            raise RuntimeError("teacher_normalization is 'percentile' but the training lists' (p1, p99) "
                               "teacher scores were never set (set_percentiles)")

    def forward(
        self,
        query_emb: Tensor,
        passage_emb: Tensor,
        teacher_scores: Tensor,
        doc_ids: DocIds,
        candidate_mask: Tensor | None = None,
        extra_passage_emb: Tensor | None = None,
        extra_doc_ids: DocIds | None = None,
        extra_passage_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        config = self.config
        self._check_ready(kl=config.kl_weight > 0)
        terms: dict[str, Tensor] = {}
        loss: Tensor | None = None
        if config.kl_weight > 0:
            terms["kl"] = self.kl(list_scores(query_emb, passage_emb), teacher_scores, candidate_mask)
            loss = config.kl_weight * terms["kl"]
        if config.contrastive_weight > 0:
            terms["contrastive"] = self.contrastive(
                query_emb,
                passage_emb,
                teacher_scores,
                doc_ids,
                candidate_mask=candidate_mask,
                extra_passage_emb=extra_passage_emb,
                extra_doc_ids=extra_doc_ids,
                extra_passage_mask=extra_passage_mask,
            )
            weighted = config.contrastive_weight * terms["contrastive"]
            loss = weighted if loss is None else loss + weighted
        if config.margin_mse_weight > 0:
            terms["margin_mse"] = self.margin_mse(query_emb, passage_emb, teacher_scores, candidate_mask)
            weighted = config.margin_mse_weight * terms["margin_mse"]
            loss = weighted if loss is None else loss + weighted
        assert loss is not None  # ObjectiveConfig guarantees a positive weight
        return {"loss": loss, **{name: value.detach() for name, value in terms.items()}}
