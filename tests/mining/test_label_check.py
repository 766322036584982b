"""label_check: each ordering of the same mined lists scored against the training labels."""
from __future__ import annotations

import pytest

from distill.mining.label_check import format_label_check, label_check


def row(qid: str, teacher: list[float], dense: list[int | None], bm25: list[int | None]) -> dict:
    return {"query_id": qid, "candidates": [
        {"doc_id": f"d{i}", "teacher_score": t, "dense_rank": r, "bm25_rank": b}
        for i, (t, r, b) in enumerate(zip(teacher, dense, bm25))]}


def test_teacher_that_finds_the_gold_beats_a_dense_order_that_buries_it():
    # gold d0 everywhere: the teacher puts it first, dense puts it last, bm25 misses it, fused (list order) first
    rows = [row(f"q{i}", [3.0, 1.0, 2.0], [3, 1, 2], [None, 1, 2]) for i in range(12)]
    rows.append(row("unlabelled", [0.0, 1.0, 2.0], [1, 2, 3], [1, 2, 3]))
    qrels = {f"q{i}": {"d0": 1} for i in range(12)} | {"unlabelled": {"d1": 0}}
    check = label_check(rows, qrels)
    assert check["queries"] == 12 and check["relevant_in_list"] == 1.0
    assert check["teacher"]["ndcg@10"] == pytest.approx(1.0) and check["fused"]["mrr@10"] == pytest.approx(1.0)
    assert check["dense"]["mrr@10"] == pytest.approx(1 / 3) and check["bm25"]["mrr@10"] == pytest.approx(1 / 3)
    diff = check["teacher_minus_dense"]
    assert diff["ndcg@10"] == pytest.approx(1.0 - 0.5) and diff["teacher_better"] == 12 and diff["p"] < 0.001
    assert "teacher - dense: +50.00" in format_label_check(check)


def test_gold_outside_the_list_counts_against_every_ordering_alike():
    rows = [row("q", [1.0, 2.0], [1, 2], [1, 2])]
    check = label_check(rows, {"q": {"elsewhere": 1}})
    assert check["relevant_in_list"] == 0.0
    assert all(check[o]["ndcg@10"] == 0.0 for o in ("teacher", "dense", "bm25", "fused"))
    assert check["teacher_minus_dense"]["p"] == 1.0


def test_no_labelled_query_gives_an_empty_check():
    assert label_check([row("q", [1.0], [1], [1])], {}) == {}
    assert format_label_check({}) == ""
