"""Reciprocal rank fusion (Cormack et al. 2009): score(d) = Σ_runs 1 / (k + rank_run(d))."""
from __future__ import annotations

Ranking = list[tuple[str, float]]


def reciprocal_rank_fusion(runs: list[Ranking], k: int = 60, top_n: int | None = None) -> Ranking:
    """Fuse ranked lists of (doc_id, score) for one query; ranks start at 1, duplicates within a run
    count at their best rank. Ties break by the best single rank, then doc id, so output is deterministic."""
    if k < 0:
        raise ValueError(f"rrf k must be >= 0, got {k}")
    fused: dict[str, float] = {}
    best: dict[str, int] = {}
    for run in runs:
        seen: set[str] = set()
        for rank, (doc_id, _) in enumerate(run, 1):
            if doc_id in seen:
                continue
            seen.add(doc_id)
            fused[doc_id] = fused.get(doc_id, 0.0) + 1.0 / (k + rank)
            best[doc_id] = min(best.get(doc_id, rank), rank)
    order = sorted(fused, key=lambda d: (-fused[d], best[d], d))
    if top_n is not None:
        order = order[:top_n]
    return [(d, fused[d]) for d in order]
