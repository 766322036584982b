import math

import pytest

from distill.evaluation.metrics import evaluate_run, mean_scores, score_query, trec_order


def dcg(gains):
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def test_ndcg_uses_linear_gains_and_ideal_from_all_labels():
    judged = {"a": 2, "b": 1, "missed": 2, "zero": 0}
    ranking = [("x", 0.9), ("b", 0.8), ("a", 0.7), ("zero", 0.6)]
    got = score_query(ranking, judged)
    # the missed document counts in the ideal DCG (2, 2, 1) but not in the run's DCG
    expected = dcg([0, 1, 2, 0]) / dcg([2, 2, 1])
    assert got.ndcg_at_10 == pytest.approx(expected, abs=1e-6)
    assert got.recall_at_100 == pytest.approx(2 / 3)
    assert got.mrr_at_10 == pytest.approx(1 / 2)


def test_short_run_never_counts_missed_documents_as_retrieved():
    got = score_query([("x", 1.0)], {"a": 1})
    assert got.ndcg_at_10 == 0.0 and got.recall_at_100 == 0.0 and got.mrr_at_10 == 0.0


def test_cutoffs():
    ranking = [(f"d{i}", 100.0 - i) for i in range(150)]
    got = score_query(ranking, {"d10": 1, "d120": 1})  # ranks 11 and 121
    assert got.ndcg_at_10 == 0.0 and got.mrr_at_10 == 0.0
    assert got.recall_at_100 == pytest.approx(0.5)


def test_ties_break_like_trec_eval():
    # equal scores: doc id descending
    assert trec_order([("a", 1.0), ("c", 1.0), ("b", 2.0)]) == ["b", "c", "a"]


def test_queries_without_positives_are_excluded_and_missing_runs_score_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 0}, "q3": {"c": 1}}
    per_query = evaluate_run({"q1": [("a", 1.0)]}, qrels)
    assert set(per_query) == {"q1", "q3"}
    means = mean_scores(per_query)
    assert means["num_queries"] == 2 and means["ndcg@10"] == pytest.approx(0.5)
