"""Issue 12 §5: `distill compare` refuses reports of different data and names the file of a bad report."""
from __future__ import annotations

import json

import pytest

from test_compare import _report

from distill.cli import main
from distill.compare import compare


def _tagged(path, dataset="scifact", split="test", value=0.5):
    _report(path, {f"q{i}": value for i in range(10)})
    report = json.loads(path.read_text())
    path.write_text(json.dumps({**report, "dataset": dataset, "split": split}))
    return path


def test_reports_of_different_data_sets_or_splits_are_refused(tmp_path, capsys):
    a = _tagged(tmp_path / "a.json")
    assert "+20.00" in compare([a, _tagged(tmp_path / "same.json", value=0.7)])
    for other, shown in ((_tagged(tmp_path / "b.json", dataset="nfcorpus"), "nfcorpus (test)"),
                         (_tagged(tmp_path / "c.json", split="dev"), "scifact (dev)")):
        assert main(["compare", str(a), str(other)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert f"{a} is scifact (test) but {other} is {shown}" in err


@pytest.mark.parametrize("content, expected", [
    (None, "is a directory"),
    ("42", "expected a JSON object"),
    ('{"ndcg@10": "0.5", "recall@100": 0.5, "mrr@10": 0.5, "num_queries": 3}', "ndcg@10: expected a finite number, got '0.5'"),
    ('{"ndcg@10": NaN, "recall@100": 0.5, "mrr@10": 0.5, "num_queries": 3}', "ndcg@10: expected a finite number"),
    ('{"ndcg@10": 0.5, "recall@100": 0.5, "mrr@10": 0.5, "num_queries": 1, "per_query": {"q1": {"ndcg@10": "x"}}}',
     "per_query.q1"),
])
def test_bad_reports_are_one_line_naming_the_file(tmp_path, capsys, content, expected):
    a = _tagged(tmp_path / "a.json")
    bad = tmp_path / "bad.json"
    if content is None:
        bad.mkdir()
    else:
        bad.write_text(content)
    assert main(["compare", str(a), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and expected in err, err
