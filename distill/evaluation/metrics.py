"""Retrieval metrics through torchmetrics, with the official definitions.

- linear graded gains, log2 discount (torchmetrics' nDCG; trec_eval's ndcg_cut);
- ideal DCG from *all* judged labels, not only the retrieved ones: relevant documents the run
  missed are appended below the run, so they enter the ideal ranking but never the top k;
- queries without any positive judgement are excluded (CapRetrieval's 27 unlabeled queries);
- ties are broken as trec_eval does (score descending, then doc id descending), and the run is
  handed to torchmetrics as strict ranks, so the numbers equal trec_eval's to float precision.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchmetrics.functional.retrieval import (
    retrieval_normalized_dcg,
    retrieval_recall,
    retrieval_reciprocal_rank,
)

Run = dict[str, list[tuple[str, float]]]
Qrels = dict[str, dict[str, int]]

METRICS = ("ndcg@10", "recall@100", "mrr@10")
_DEEPEST_CUTOFF = 100


@dataclass(frozen=True)
class QueryScores:
    ndcg_at_10: float
    recall_at_100: float
    mrr_at_10: float

    def as_dict(self) -> dict[str, float]:
        return {"ndcg@10": self.ndcg_at_10, "recall@100": self.recall_at_100, "mrr@10": self.mrr_at_10}


def trec_order(ranking: list[tuple[str, float]]) -> list[str]:
    """Doc ids in trec_eval's order: score descending, ties by doc id descending; duplicates dropped."""
    seen: set[str] = set()
    unique = []
    for doc, score in ranking:
        if doc not in seen:
            seen.add(doc)
            unique.append((doc, score))
    return [d for d, _ in sorted(unique, key=lambda x: (x[1], x[0]), reverse=True)]


def score_query(ranking: list[tuple[str, float]], judged: dict[str, int]) -> QueryScores:
    """Metrics of one query's ranking against its judgements (at least one positive)."""
    order = trec_order(ranking)
    in_run = set(order)
    missed = [d for d, rel in judged.items() if rel > 0 and d not in in_run]
    # Missed relevant documents go below the deepest cut-off (padding with unjudged fillers),
    # so they enter the ideal DCG and the recall denominator but are never "retrieved".
    filler = max(0, _DEEPEST_CUTOFF - len(order)) if missed else 0
    gains = torch.tensor([max(judged.get(d, 0), 0) for d in order] + [0] * filler
                         + [judged[d] for d in missed], dtype=torch.long)
    # strict ranks, no ties to average; positive because torchmetrics' recall ignores preds <= 0
    preds = torch.arange(len(gains), 0, -1, dtype=torch.float64)
    if len(gains) == 0:
        return QueryScores(0.0, 0.0, 0.0)
    relevant = gains > 0
    return QueryScores(
        retrieval_normalized_dcg(preds, gains, top_k=10).item(),
        retrieval_recall(preds, relevant, top_k=100).item(),
        retrieval_reciprocal_rank(preds, relevant, top_k=10).item(),
    )


def evaluate_run(run: Run, qrels: Qrels) -> dict[str, QueryScores]:
    """Per-query scores for every query of ``qrels`` with a positive judgement (missing run → zeros)."""
    scores = {}
    for qid, judged in qrels.items():
        if not any(rel > 0 for rel in judged.values()):
            continue
        scores[qid] = score_query(run.get(qid, []), judged)
    return scores


def mean_scores(per_query: dict[str, QueryScores], query_ids: list[str] | None = None) -> dict[str, float]:
    ids = list(per_query) if query_ids is None else [q for q in query_ids if q in per_query]
    if not ids:
        return {m: 0.0 for m in METRICS} | {"num_queries": 0}
    rows = [per_query[q].as_dict() for q in ids]
    return {m: sum(r[m] for r in rows) / len(rows) for m in METRICS} | {"num_queries": len(ids)}
