"""Does the teacher know more than the student? Checked on the training queries that carry labels.

Distillation can only teach what the teacher ranks better than the student already does. For the
queries of a qrels split (SciFact's train claims, ...) the mined lists hold, per candidate, the teacher's
score and the zero-shot retrievers' ranks, so each ordering of the *same* 20 candidates can be scored
against the labels: teacher, dense (the zero-shot student), BM25 and their fusion. Written to mining's
``stats.json`` as ``label_check``; a teacher no better than ``dense`` here has nothing to distil.
"""
from __future__ import annotations

import math

from distill.compare import paired_randomization
from distill.evaluation.metrics import Qrels, evaluate_run

ORDERS = ("teacher", "dense", "bm25", "fused")


def _ranking(candidates: list[dict], order: str) -> list[tuple[str, float]]:
    """The list's doc ids with a score that sorts them in ``order`` (a retriever's miss sorts last)."""
    n = len(candidates)
    if order == "teacher":
        return [(c["doc_id"], float(c["teacher_score"])) for c in candidates]
    if order == "fused":  # the mined list order
        return [(c["doc_id"], float(n - i)) for i, c in enumerate(candidates)]
    key = f"{order}_rank"
    return [(c["doc_id"], -float(c[key]) if c.get(key) is not None else -math.inf) for c in candidates]


def label_check(rows: list[dict], qrels: Qrels) -> dict:
    """Per ordering of the lists of labelled queries: mean nDCG@10 and MRR@10 against ``qrels``; the
    share of queries with a relevant document anywhere in the list; teacher − dense per query with a
    paired randomisation p-value. ``rows``: mined rows (``query_id``, ``candidates`` with ``doc_id``,
    ``teacher_score``, ``bm25_rank``, ``dense_rank``); queries without a positive label are skipped."""
    labelled = [r for r in rows if any(v > 0 for v in qrels.get(r["query_id"], {}).values())]
    if not labelled:
        return {}
    judged = {r["query_id"]: qrels[r["query_id"]] for r in labelled}
    per_order = {order: evaluate_run({r["query_id"]: _ranking(r["candidates"], order) for r in labelled}, judged)
                 for order in ORDERS}
    ids = [r["query_id"] for r in labelled]
    out: dict = {"queries": len(ids),
                 "relevant_in_list": sum(per_order["teacher"][q].recall_at_100 > 0 for q in ids) / len(ids)}
    for order, scores in per_order.items():
        out[order] = {"ndcg@10": sum(scores[q].ndcg_at_10 for q in ids) / len(ids),
                      "mrr@10": sum(scores[q].mrr_at_10 for q in ids) / len(ids)}
    teacher = [per_order["teacher"][q].ndcg_at_10 for q in ids]
    dense = [per_order["dense"][q].ndcg_at_10 for q in ids]
    out["teacher_minus_dense"] = {"ndcg@10": out["teacher"]["ndcg@10"] - out["dense"]["ndcg@10"],
                                  "p": paired_randomization(teacher, dense),
                                  "teacher_better": sum(t > d for t, d in zip(teacher, dense)),
                                  "dense_better": sum(d > t for t, d in zip(teacher, dense))}
    return out


def format_label_check(check: dict) -> str:
    """One line per ordering, for the mining log."""
    if not check:
        return ""
    lines = [f"label check on {check['queries']} labelled training queries "
             f"(relevant in list: {check['relevant_in_list']:.1%}), nDCG@10 / MRR@10 of the same lists:"]
    lines += [f"  {order:<8} {check[order]['ndcg@10'] * 100:6.2f} / {check[order]['mrr@10'] * 100:6.2f}"
              for order in ORDERS]
    d = check["teacher_minus_dense"]
    lines.append(f"  teacher - dense: {d['ndcg@10'] * 100:+.2f} nDCG@10 (p {d['p']:.4f}; "
                 f"better on {d['teacher_better']}, worse on {d['dense_better']} queries)")
    return "\n".join(lines)
