import json

import pytest

from distill.compare import compare, paired_randomization


def _report(path, per_query):
    values = list(per_query.values())
    mean = sum(values) / len(values)
    path.write_text(json.dumps({"ndcg@10": mean, "recall@100": mean, "mrr@10": mean, "num_queries": len(values),
                                "per_query": {q: {"ndcg@10": v, "recall@100": v, "mrr@10": v}
                                              for q, v in per_query.items()}}))
    return path


def test_randomization_test_separates_consistent_gains_from_noise():
    base = [0.5] * 40
    assert paired_randomization(base, [0.6] * 40) < 0.001
    assert paired_randomization(base, [0.6 if i % 2 else 0.4 for i in range(40)]) > 0.5


def test_compare_table_and_bad_report(tmp_path):
    a = _report(tmp_path / "a.json", {f"q{i}": 0.5 for i in range(30)})
    b = _report(tmp_path / "b.json", {f"q{i}": 0.7 for i in range(30)})
    table = compare([a, b], names=["zero-shot", "distilled"])
    assert "+20.00" in table.splitlines()[2] and "0.0001" in table
    (tmp_path / "bad.json").write_text('{"ndcg@10": 1}')
    with pytest.raises(ValueError, match="bad.json: recall@100: missing"):
        compare([a, tmp_path / "bad.json"])
