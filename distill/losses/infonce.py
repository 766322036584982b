"""InfoNCE with teacher-chosen positives, in-batch negatives and false-negative filtering.

InfoNCE (van den Oord et al. 2018, "Representation learning with contrastive predictive
coding"), in the in-batch-negatives form of dense passage retrieval (Karpukhin et al. 2020,
"Dense passage retrieval for open-domain question answering"). As in CADET (Tamber et al. 2025)
the positive of each query is its teacher's top-1 candidate, and own-list candidates the teacher
rates close to that top are dropped instead of being pushed away (likely false negatives).

Imports only torch (see DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from distill.losses.listwise_kl import Percentiles, no_autocast, normalize_teacher, resolve_mask, teacher_top1

DocIds = Sequence[Sequence[str | None]] | Sequence[str | None] | Tensor

_NO_ID = -1


def _encode_doc_ids(
    doc_ids: DocIds, extra_doc_ids: DocIds | None, batch: int, list_size: int, extra: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Doc ids as int64 tensors ``[B, L]`` and ``[M]``; -1 means "no id" and never matches.

    Strings are mapped through one shared vocabulary so equal strings get equal integers. An int
    tensor is used as is (negative ids never match). Nested lists may be shorter than L (the
    missing tail is padding and must be masked); ``None`` entries are "no id".
    """
    if extra_doc_ids is not None and isinstance(doc_ids, Tensor) != isinstance(extra_doc_ids, Tensor):
        raise ValueError("doc_ids and extra_doc_ids must both be int tensors or both be strings")

    if isinstance(doc_ids, Tensor):
        if tuple(doc_ids.shape) != (batch, list_size):
            raise ValueError(f"doc_ids has shape {tuple(doc_ids.shape)}, expected {(batch, list_size)}")
        ids = doc_ids.to(device=device, dtype=torch.long).clamp_min(_NO_ID)
        if extra_doc_ids is None:
            extra_ids = torch.full((extra,), _NO_ID, dtype=torch.long, device=device)
        else:
            extra_ids = extra_doc_ids.to(device=device, dtype=torch.long).reshape(-1).clamp_min(_NO_ID)
        if extra_ids.numel() != extra:
            raise ValueError(f"extra_doc_ids has {extra_ids.numel()} entries, expected {extra}")
        return ids, extra_ids

    vocab: dict[str, int] = {}

    def code(doc_id: str | None) -> int:
        if doc_id is None:
            return _NO_ID
        return vocab.setdefault(doc_id, len(vocab))

    if len(doc_ids) != batch:
        raise ValueError(f"doc_ids has {len(doc_ids)} lists, expected {batch}")
    rows = []
    for i, row in enumerate(doc_ids):
        if isinstance(row, str):
            raise ValueError("doc_ids must be one list of doc ids per query, got a flat list of strings")
        if len(row) > list_size:
            raise ValueError(f"doc_ids[{i}] has {len(row)} ids, more than the list size L={list_size}")
        rows.append([code(d) for d in row] + [_NO_ID] * (list_size - len(row)))
    flat_extra: list[str | None] = []
    for item in extra_doc_ids or []:
        if item is None or isinstance(item, str):
            flat_extra.append(item)
        else:  # one nested list per gathered query
            flat_extra.extend(item)
    if extra_doc_ids is not None and len(flat_extra) != extra:
        raise ValueError(f"extra_doc_ids has {len(flat_extra)} ids, expected {extra} (one per extra passage)")
    extra_codes = [code(d) for d in flat_extra] if extra_doc_ids is not None else [_NO_ID] * extra
    ids = torch.tensor(rows, dtype=torch.long, device=device).view(batch, list_size)
    return ids, torch.tensor(extra_codes, dtype=torch.long, device=device).view(extra)


def info_nce(
    query_emb: Tensor,
    passage_emb: Tensor,
    teacher_scores: Tensor,
    doc_ids: DocIds,
    temperature: float = 0.01,
    false_negative_ratio: float = 0.6,
    candidate_mask: Tensor | None = None,
    extra_passage_emb: Tensor | None = None,
    extra_doc_ids: DocIds | None = None,
    extra_passage_mask: Tensor | None = None,
    teacher_normalization: str = "minmax",
    percentiles: Percentiles | None = None,
) -> Tensor:
    """Cross-entropy of each query's teacher top-1 against every other passage in the batch.

    Args:
        query_emb: ``[B, D]``.
        passage_emb: ``[B·L, D]`` list-major: row ``i·L + j`` is candidate j of query i.
        teacher_scores: ``[B, L]`` cross-encoder scores (raw logits).
        doc_ids: the candidates' document ids, ``list[list[str]]`` (B lists of at most L ids,
            ``None`` = no id) or an int tensor ``[B, L]`` (negative = no id).
        temperature: softmax temperature τ on the dot products (default 0.01 for normalised
            embeddings).
        false_negative_ratio: r in (0, 1]. An own-list candidate j is a likely false negative
            and is dropped when ``n(t_j) > r × n(t_top)``, on the scale ``n`` the listwise KL
            targets use (``teacher_normalization``): per-list min-max (the top is 1, so the rule
            reads ``(t_j − min) / (max − min) > r``) or the list set's percentile scale. Raw
            cross-encoder logits can be negative ("> r × top" would then be meaningless), so
            ``"none"`` applies the rule on the min-max scale. A list whose teacher scores are all
            equal normalises to all ones under min-max: every candidate ties with the positive and
            all of them are dropped as false negatives.
        candidate_mask: optional ``BoolTensor[B, L]``, True for real candidates; padded ones are
            neither positives nor negatives for any query.
        extra_passage_emb: optional ``[M, D]`` further negatives, typically the other devices'
            passages (``distill.training.distributed.gather_other_ranks``).
        extra_doc_ids: ids of the extra passages: a flat sequence of M ids, B' nested lists whose
            lengths sum to M, or an int tensor with M elements. Required for the same-document
            rule to reach them; ``None`` = no ids.
        extra_passage_mask: optional ``BoolTensor[M]``, True for real extra passages (the other
            devices' padding is False).
        teacher_normalization: the scale of the false-negative rule: ``"minmax"`` (also used for
            ``"none"``) or ``"percentile"`` (needs ``percentiles``).
        percentiles: ``(p1, p99)`` of the training lists' teacher scores, for ``"percentile"``.

    Negatives of query i are: the rest of its own list, every candidate of every other list,
    and the extra passages. Excluded (logit −inf, neither positive nor negative): own-list
    likely false negatives, padding, and every passage — in-batch or extra — whose doc id equals
    the id of query i's positive, except the positive itself (the same document retrieved for
    another query is not a negative of this one).

    Scores are plain dot products (the student normalises embeddings when configured).

    Returns:
        float32 scalar: mean over queries (lists with no real candidate are left out) of
        ``−log softmax(q·p / τ)[positive]``. Computed in float32 even under autocast.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 < false_negative_ratio <= 1:
        raise ValueError(f"false_negative_ratio must be in (0, 1], got {false_negative_ratio}")
    if query_emb.dim() != 2 or teacher_scores.dim() != 2:
        raise ValueError(
            f"expected query_emb[B, D] and teacher_scores[B, L], got {tuple(query_emb.shape)} "
            f"and {tuple(teacher_scores.shape)}"
        )
    batch, list_size = teacher_scores.shape
    dim = query_emb.shape[1]
    if query_emb.shape[0] != batch or tuple(passage_emb.shape) != (batch * list_size, dim):
        raise ValueError(
            f"shapes do not agree: query_emb{tuple(query_emb.shape)}, passage_emb{tuple(passage_emb.shape)}, "
            f"teacher_scores{tuple(teacher_scores.shape)}; expected [B, D], [B*L, D], [B, L]"
        )
    device = query_emb.device
    if extra_passage_emb is None:
        extra_passage_emb = passage_emb.new_zeros((0, dim))
    if extra_passage_emb.dim() != 2 or extra_passage_emb.shape[1] != dim:
        raise ValueError(f"extra_passage_emb{tuple(extra_passage_emb.shape)} is not [M, {dim}]")
    extra = extra_passage_emb.shape[0]

    mask = resolve_mask(candidate_mask, teacher_scores.shape, device)
    extra_mask = resolve_mask(extra_passage_mask, torch.Size([extra]), device)
    ids, extra_ids = _encode_doc_ids(doc_ids, extra_doc_ids, batch, list_size, extra, device)

    with no_autocast(device):
        passages = torch.cat([passage_emb.float(), extra_passage_emb.float()], dim=0)
        logits = query_emb.float() @ passages.T / temperature  # [B, B·L + M]

        with torch.no_grad():
            positive_in_list = teacher_top1(teacher_scores, mask)  # [B]
            rows = torch.arange(batch, device=device)
            positive = rows * list_size + positive_in_list  # column of each positive
            all_ids = torch.cat([ids.reshape(-1), extra_ids])
            positive_id = ids[rows, positive_in_list]

            keep = torch.cat([mask.reshape(-1), extra_mask]).unsqueeze(0).expand(batch, -1).clone()
            # Likely false negatives: own-list candidates close to the top on the KL target's scale.
            scale = "minmax" if teacher_normalization == "none" else teacher_normalization
            normalized = normalize_teacher(teacher_scores.detach(), scale, mask, percentiles)  # [B, L]
            top = normalized[rows, positive_in_list].unsqueeze(-1)
            near_top_own = normalized > false_negative_ratio * top
            near_top = torch.zeros(batch, batch, list_size, dtype=torch.bool, device=device)
            near_top[rows, rows] = near_top_own
            keep[:, : batch * list_size] &= ~near_top.view(batch, batch * list_size)
            # The positive's document wherever else it appears (another list, another device).
            same_doc = (all_ids.unsqueeze(0) == positive_id.unsqueeze(1)) & (positive_id.unsqueeze(1) != _NO_ID)
            keep &= ~same_doc
            keep[rows, positive] = True
            nonempty = mask.any(dim=-1)

        logits = logits.masked_fill(~keep, float("-inf"))
        per_query = torch.logsumexp(logits, dim=-1) - logits[rows, positive]
        per_query = per_query * nonempty
        return per_query.sum() / nonempty.sum().clamp_min(1)


class InfoNCELoss(nn.Module):
    """InfoNCE with teacher top-1 positives (van den Oord et al. 2018; Karpukhin et al. 2020).

    See :func:`info_nce`. ``forward(query_emb, passage_emb, teacher_scores, doc_ids,
    candidate_mask=None, extra_passage_emb=None, extra_doc_ids=None, extra_passage_mask=None)``.
    """

    def __init__(self, temperature: float = 0.01, false_negative_ratio: float = 0.6,
                 teacher_normalization: str = "minmax", percentiles: Percentiles | None = None) -> None:
        super().__init__()
        self.temperature = temperature
        self.false_negative_ratio = false_negative_ratio
        self.teacher_normalization = teacher_normalization
        self.percentiles = percentiles

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
    ) -> Tensor:
        return info_nce(
            query_emb,
            passage_emb,
            teacher_scores,
            doc_ids,
            temperature=self.temperature,
            false_negative_ratio=self.false_negative_ratio,
            candidate_mask=candidate_mask,
            extra_passage_emb=extra_passage_emb,
            extra_doc_ids=extra_doc_ids,
            extra_passage_mask=extra_passage_mask,
            teacher_normalization=self.teacher_normalization,
            percentiles=self.percentiles,
        )

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, false_negative_ratio={self.false_negative_ratio}, "
                f"teacher_normalization={self.teacher_normalization!r}")
