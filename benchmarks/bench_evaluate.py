"""`distill evaluate` end to end against a plain sentence-transformers encode + numpy search of the
same model on CapRetrievalEn, as ratios from the same run: at fp32 both must give equal nDCG@10; the
default precision (bf16 where the CPU has bf16 units) is timed too, and its nDCG@10 shown.

Run: .venv/bin/python benchmarks/bench_evaluate.py [--model all-MiniLM-L6-v2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def plain(model: str) -> tuple[float, dict]:
    """What a user would write without this tool: SentenceTransformer.encode, numpy top-100."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from distill.data.corpora import load_retrieval_set, normalize_text
    from distill.evaluation.metrics import evaluate_run, mean_scores
    from distill.models import local_path

    start = time.perf_counter()
    rs = load_retrieval_set("capretrieval-en")  # both sides read the files inside the timed region
    st = SentenceTransformer(str(local_path(model)), device="cpu")
    ids, texts = rs.doc_texts()
    qids, qtexts = rs.query_texts("test")
    docs = st.encode([normalize_text(t) for t in texts], batch_size=64, normalize_embeddings=True)
    queries = st.encode([normalize_text(t) for t in qtexts], batch_size=64, normalize_embeddings=True)
    scores = queries @ docs.T
    top = np.argsort(-scores, axis=1)[:, :100]
    run = {q: [(ids[j], float(scores[i, j])) for j in top[i]] for i, q in enumerate(qids)}
    metrics = mean_scores(evaluate_run(run, rs.qrels["test"]))
    return time.perf_counter() - start, metrics


def ours(model: str, precision: str) -> tuple[float, dict]:
    from distill.evaluation.evaluate import EvalConfig, evaluate

    start = time.perf_counter()
    report = evaluate(EvalConfig(model=model, dataset="capretrieval-en", show_progress=False, precision=precision))
    return time.perf_counter() - start, report.metrics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    args = parser.parse_args()
    from distill.data.corpora import load_retrieval_set

    load_retrieval_set("capretrieval-en")  # warm the OS file cache for both sides
    base_s, base_m = plain(args.model)
    print(f"plain sentence-transformers + numpy (fp32): {base_s:7.1f} s  nDCG@10 {100 * base_m['ndcg@10']:.2f}")
    # fp32 is the like-for-like run (metrics must be equal); auto adds bf16 where the CPU has it
    for precision in ("fp32", "auto"):
        our_s, our_m = ours(args.model, precision)
        print(f"distill evaluate --precision {precision:<4}:      {our_s:7.1f} s  nDCG@10 {100 * our_m['ndcg@10']:.2f}"
              f"  speed ratio (plain time / ours) {base_s / our_s:.2f}x, "
              f"|nDCG@10 difference| {abs(base_m['ndcg@10'] - our_m['ndcg@10']):.2e}")


if __name__ == "__main__":
    main()
