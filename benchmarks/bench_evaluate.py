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


def encode_only(model: str, rounds: int) -> tuple[dict[tuple[str, str], float], float]:
    """texts/s of encoding the CapRetrievalEn captions alone (no loading, no search): sentence-transformers'
    encode against the student's, best of ``rounds``, the same texts and batch size."""
    from sentence_transformers import SentenceTransformer

    from distill.data.corpora import load_retrieval_set, normalize_text
    from distill.models import local_path
    from students.dual_encoder import load_student

    _, texts = load_retrieval_set("capretrieval-en").doc_texts()
    texts = [normalize_text(t) for t in texts]
    st = SentenceTransformer(str(local_path(model)), device="cpu")
    student = load_student(model)
    paths = {
        ("sentence-transformers encode", "fp32"): lambda: st.encode(texts, batch_size=64, normalize_embeddings=True),
        ("student encode_passages", "fp32"): lambda: student.encode_passages(texts, batch_size=64, bf16=False),
        ("student encode_passages", "bf16"): lambda: student.encode_passages(texts, batch_size=64, bf16=True),
    }
    if not _bf16():
        del paths[("student encode_passages", "bf16")]
    rates = {}
    for key, fn in paths.items():
        fn()  # warm-up
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        rates[key] = len(texts) / best
    lengths = [len(ids) for ids in st.tokenizer(texts, truncation=True, max_length=st.max_seq_length)["input_ids"]]
    from benchmarks.peak import encoder_flops

    per_text = encoder_flops(st[0].auto_model.config, lengths) / len(texts)
    return rates, per_text


def _bf16() -> bool:
    from distill.hardware import bf16_available

    return bf16_available("cpu")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import torch

    from benchmarks.peak import matmul_peak
    from benchmarks.record import Row, save
    from distill.data.corpora import load_retrieval_set

    load_retrieval_set("capretrieval-en")  # warm the OS file cache for both sides
    base_s, base_m = plain(args.model)
    print(f"plain sentence-transformers + numpy (fp32): {base_s:7.1f} s  nDCG@10 {100 * base_m['ndcg@10']:.2f}")
    rows = [Row("evaluate end to end: plain sentence-transformers + numpy", base_s, "s", precision="fp32",
                note=f"nDCG@10 {100 * base_m['ndcg@10']:.2f}")]
    # fp32 is the like-for-like run (metrics must be equal); auto adds bf16 where the CPU has it
    for precision in ("fp32", "auto"):
        our_s, our_m = ours(args.model, precision)
        print(f"distill evaluate --precision {precision:<4}:      {our_s:7.1f} s  nDCG@10 {100 * our_m['ndcg@10']:.2f}"
              f"  speed ratio (plain time / ours) {base_s / our_s:.2f}x, "
              f"|nDCG@10 difference| {abs(base_m['ndcg@10'] - our_m['ndcg@10']):.2e}")
        rows.append(Row(f"evaluate end to end: distill evaluate --precision {precision}", our_s, "s",
                        baseline="plain sentence-transformers (time ratio)", ratio=base_s / our_s,
                        precision="bf16" if precision == "auto" and _bf16() else "fp32",
                        note=f"nDCG@10 {100 * our_m['ndcg@10']:.2f}, "
                             f"|difference| {abs(base_m['ndcg@10'] - our_m['ndcg@10']):.1e}"))
    rates, per_text = encode_only(args.model, args.rounds)
    peaks = {"fp32": matmul_peak(torch.float32) / 1e9, "bf16": matmul_peak(torch.bfloat16) / 1e9 if _bf16() else None}
    base_rate = rates[("sentence-transformers encode", "fp32")]
    for (path, precision), rate in rates.items():
        gflops = rate * per_text / 1e9
        peak = peaks[precision]
        print(f"{path} ({precision}): {rate:8.1f} texts/s, {gflops:6.1f} GFLOP/s"
              + (f" ({gflops / peak:.1%} of the {precision} peak {peak:.0f})" if peak else "")
              + ("" if path.startswith("sentence") else f", {rate / base_rate:.2f}x sentence-transformers fp32"))
        rows.append(Row(f"encode captions: {path}", rate, "texts/s",
                        baseline=None if path.startswith("sentence") else "sentence-transformers fp32",
                        ratio=None if path.startswith("sentence") else rate / base_rate,
                        gflops=gflops, peak_gflops=peak, precision=precision))
    save("evaluate", rows, [f"CapRetrievalEn (3,024 captions, 404 queries), {args.model}, batch 64; "
                            f"encode rows best of {args.rounds}"])


if __name__ == "__main__":
    main()
