"""The evaluator's numbers against pyserini's trec_eval on a real run, and `distill evaluate` end to end."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distill.data.corpora import load_retrieval_set
from distill.evaluation.evaluate import evaluate_retriever, rerank
from distill.retrieval import build_retriever
from distill.retrieval.trec import trec_eval, write_qrels, write_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ndcg_equals_trec_eval_on_a_real_bm25_run(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    rs = load_retrieval_set("capretrieval-en")
    report, run = evaluate_retriever(build_retriever("bm25", rs, normalize=True), rs, "test", k=100)
    judged = {q: d for q, d in rs.qrels["test"].items() if any(v > 0 for v in d.values())}
    write_qrels(judged, tmp_path / "qrels.txt")
    write_run(run, tmp_path / "run.txt", tag="bm25")
    official = trec_eval(tmp_path / "qrels.txt", tmp_path / "run.txt", "ndcg_cut.10")
    assert report.metrics["num_queries"] == len(judged) == 377
    # trec_eval prints 4 decimals
    for qid, scores in report.per_query.items():
        assert scores["ndcg@10"] == pytest.approx(official[qid], abs=1e-4), qid
    assert report.metrics["ndcg@10"] == pytest.approx(official["all"], abs=1e-4)
    recall = trec_eval(tmp_path / "qrels.txt", tmp_path / "run.txt", "recall.100")
    assert report.metrics["recall@100"] == pytest.approx(recall["all"], abs=1e-4)
    assert report.by_type and sum(m["num_queries"] for m in report.by_type.values()) <= 377


class _ReverseTeacher:
    identity = "reverse"

    def score(self, queries, passages):
        import torch

        return -torch.arange(len(queries), dtype=torch.float32)  # keeps the given order, tails below


def test_rerank_keeps_tail_below_head():
    run = {"q": [(f"d{i}", 10.0 - i) for i in range(6)]}
    out = rerank(run, _ReverseTeacher(), {"q": "x"}, {f"d{i}": "t" for i in range(6)}, depth=3)
    scores = [s for _, s in out["q"]]
    assert [d for d, _ in out["q"]] == [f"d{i}" for i in range(6)]
    assert scores == sorted(scores, reverse=True) and min(scores[:3]) > max(scores[3:])


def test_evaluate_cli_writes_json_and_fails_in_one_line(tmp_path):
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "distill.cli", "evaluate", "--model", "bm25", "--dataset",
                           "capretrieval-en", "--output", str(out), "--quiet"], cwd=ROOT, capture_output=True,
                          text=True, env={**__import__("os").environ, "DISTILL_CACHE": str(tmp_path / "c")})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report) >= {"ndcg@10", "recall@100", "mrr@10", "num_queries", "by_type"}
    assert report["ndcg@10"] == pytest.approx(0.7198, abs=5e-4)
    assert "ndcg@10" in done.stdout and "singleton_object" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "distill.cli", "evaluate", "--model", "bm25", "--dataset", "nope"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "neither a known data set" in bad.stderr


def test_precision_flag_reaches_the_encoder(tmp_path):
    from factories import make_tiny_bert

    from distill.evaluation.evaluate import PRECISIONS, EvalConfig

    folder = tmp_path / "capset"
    folder.mkdir()
    (folder / "candidates.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n"
                                                     for i, t in enumerate(["the cat sat", "a dog went home"])))
    (folder / "queries.jsonl").write_text(json.dumps({"id": "q1", "query": "cat", "positives": [{"id": "d0", "score": 1}]}) + "\n")
    rs = load_retrieval_set(str(folder))
    bert = make_tiny_bert(tmp_path / "bert")
    assert build_retriever(str(bert), rs, bf16=PRECISIONS["fp32"]).encoder.bf16 is False
    assert build_retriever(str(bert), rs, bf16=PRECISIONS["bf16"]).encoder.bf16 is True
    assert build_retriever(str(bert), rs, bf16=PRECISIONS["auto"]).encoder.bf16 is None  # decided by the hardware
    assert build_retriever(str(bert), rs).encoder.bf16 is False  # fp32 by default (issue 12 §7)
    with pytest.raises(ValueError, match="--precision must be one of"):
        EvalConfig(model="bm25", dataset="x", precision="fp16")
