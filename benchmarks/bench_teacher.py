"""Teacher throughput on real (query, passage) pairs, as ratios from one run.

    .venv/bin/python benchmarks/bench_teacher.py [--pairs 2000] [--batch-size 32] [--rounds 2]

Baseline: sentence-transformers ``CrossEncoder.predict`` on ms-marco-MiniLM-L-12-v2 in fp32 torch.
The packaged model is INT8 ONNX only, so the torch copy is rebuilt from the ONNX graph by
dequantising its weights (w = (q - zero_point) * scale) into a BertForSequenceClassification; the
script prints how closely that copy agrees with the ONNX model. Compared: our HF teacher fp32 (token
length bucketing), our HF teacher bf16 autocast, our ONNX INT8 teacher, and a cached re-run. Achieved
FLOP/s = 2 x non-embedding params x non-padding tokens / s, as a fraction of a bf16 2048x2048 matmul's
FLOP/s measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.data.corpora import load_retrieval_set  # noqa: E402
from distill.hardware import bf16_available  # noqa: E402
from distill.models import local_path  # noqa: E402
from teachers import load_teacher  # noqa: E402
from teachers.base import available_cores  # noqa: E402
from teachers.cache import CachedTeacher  # noqa: E402

DATASET = "capretrieval-en"
MODEL = "ms-marco-MiniLM-L-12-v2"
# cross-encoder/ms-marco-MiniLM-L-12-v2's architecture.
BERT_CONFIG = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=12, num_attention_heads=12,
                   intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2, num_labels=1)


def load_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Each query with its positives and random documents, shuffled, ``n`` pairs in all."""
    rng = random.Random(seed)
    rs = load_retrieval_set(DATASET)  # the package's data resolver ($DISTILL_DATA or ../shared/data)
    docs = dict(zip(*rs.doc_texts()))
    ids = list(docs)
    qrels = rs.split_qrels("test")
    queries = [(text, list(qrels.get(qid, {}))) for qid, text in zip(rs.queries["query_id"], rs.queries["text"])]
    pairs: dict[tuple[str, str], None] = {}  # distinct pairs, so the cache's dedup does not flatter it
    while len(pairs) < n:
        for query, positives in queries:
            pos = [d for d in positives if d in docs][:2]
            for doc in pos + rng.sample(ids, 3):
                pairs[(query, docs[doc])] = None
    pairs = list(pairs)
    rng.shuffle(pairs)
    pairs = pairs[:n]
    return [q for q, _ in pairs], [p for _, p in pairs]


def dequantised_torch_copy(onnx_dir: Path, out: Path) -> Path:
    """Rebuild a torch BertForSequenceClassification folder from the INT8 ONNX graph's weights."""
    import onnx
    from onnx import numpy_helper
    from transformers import BertConfig, BertForSequenceClassification

    graph = onnx.load(str(onnx_dir / "model.onnx")).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}

    def deq(base: str) -> np.ndarray:
        q = init[f"{base}_quantized"].astype(np.float32)
        return (q - init[f"{base}_zero_point"].astype(np.float32)) * init[f"{base}_scale"].astype(np.float32)

    state = {k: torch.from_numpy(v.copy()) for k, v in init.items() if k.endswith((".bias", ".weight")) and v.dtype == np.float32}
    for emb in ("word", "position", "token_type"):
        state[f"bert.embeddings.{emb}_embeddings.weight"] = torch.from_numpy(deq(f"bert.embeddings.{emb}_embeddings.weight"))
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        base = node.input[1].removesuffix("_quantized")
        # MatMulInteger -> Cast -> Mul(scales) -> Add(bias): the bias initialiser names the Linear.
        frontier, bias = [node], None
        for _ in range(4):
            frontier = [c for n in frontier for out in n.output for c in consumers.get(out, [])]
            bias = next((i for n in frontier if n.op_type == "Add" for i in n.input if i.endswith(".bias") and i in init), None)
            if bias:
                break
        if bias is None:
            raise RuntimeError(f"cannot map ONNX weight {base} to a torch Linear")
        state[bias.removesuffix(".bias") + ".weight"] = torch.from_numpy(deq(base).T.copy())  # ONNX [in,out] -> torch [out,in]
    model = BertForSequenceClassification(BertConfig(**BERT_CONFIG))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise RuntimeError(f"dequantised copy incomplete: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.save_pretrained(out)
    for file in onnx_dir.iterdir():
        if file.name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(file, out / file.name)
    return out


def random_torch_copy(onnx_dir: Path, out: Path) -> Path:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(**BERT_CONFIG)).save_pretrained(out)
    for file in onnx_dir.iterdir():
        if file.name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(file, out / file.name)
    return out


def timed(fn, warmup):
    warmup()
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def matmul_flops(dtype=torch.bfloat16, n=2048, seconds=2.0) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2, help="round-robin repetitions; the best time of each is kept")
    args = parser.parse_args()

    queries, passages = load_pairs(args.pairs)
    load_before = os.getloadavg()[0]
    wq, wp = queries[:64], passages[:64]
    onnx_dir = local_path(MODEL)
    work = Path(tempfile.mkdtemp(prefix="bench_teacher_"))
    try:
        source = "dequantised from the packaged INT8 ONNX weights"
        try:
            torch_dir = dequantised_torch_copy(onnx_dir, work / "torch")
        except ImportError:
            torch_dir, source = random_torch_copy(onnx_dir, work / "torch"), "RANDOM weights, same config (no `onnx` package)"

        onnx_teacher = load_teacher(MODEL, batch_size=args.batch_size, max_length=args.max_length)
        hf32 = load_teacher(torch_dir, batch_size=args.batch_size, max_length=args.max_length, bf16=False, backend="torch")
        hf16 = load_teacher(torch_dir, batch_size=args.batch_size, max_length=args.max_length, bf16=True, backend="torch")
        from sentence_transformers import CrossEncoder

        ce = CrossEncoder(str(torch_dir), device="cpu", max_length=args.max_length, local_files_only=True)
        pairs = [[q, p] for q, p in zip(queries, passages)]

        def ce_predict(items):
            return ce.predict(items, batch_size=args.batch_size, activation_fn=torch.nn.Identity(),
                              convert_to_tensor=True, show_progress_bar=False).float().cpu()

        enc = hf32.tokenizer(queries, passages, truncation=True, max_length=hf32.max_length)
        tokens = sum(len(ids) for ids in enc["input_ids"])
        padded_plain = sum(  # tokens an unsorted batching would run, padding included
            len(pairs[i:i + args.batch_size]) * max(len(x) for x in enc["input_ids"][i:i + args.batch_size])
            for i in range(0, len(pairs), args.batch_size))
        params = sum(p.numel() for name, p in hf32.model.named_parameters() if "embeddings" not in name)
        flops = 2.0 * params * tokens

        runs = {
            "CrossEncoder.predict fp32 (baseline)": (lambda: ce_predict(pairs), lambda: ce_predict(pairs[:64])),
            "HF teacher fp32, length-bucketed": (lambda: hf32.score(queries, passages), lambda: hf32.score(wq, wp)),
            "HF teacher bf16 autocast": (lambda: hf16.score(queries, passages), lambda: hf16.score(wq, wp)),
            "ONNX INT8 teacher": (lambda: onnx_teacher.score(queries, passages), lambda: onnx_teacher.score(wq, wp)),
        }
        # Round-robin rounds, best time each: load from other processes drifts over minutes, and
        # interleaving exposes every variant to the same drift.
        results: dict[str, tuple[float, torch.Tensor]] = {}
        for round_ in range(args.rounds):
            for label, (run, warmup) in runs.items():
                seconds, scores = timed(run, warmup if round_ == 0 else (lambda: None))
                if label not in results or seconds < results[label][0]:
                    results[label] = (seconds, scores)
        cached = CachedTeacher(onnx_teacher, work / "scores.sqlite")
        first = timed(lambda: cached.score(queries, passages), lambda: None)
        forward_first = cached.forward_pairs
        second = timed(lambda: cached.score(queries, passages), lambda: None)
        peak_bf16 = matmul_flops(torch.bfloat16)
        peak_fp32 = matmul_flops(torch.float32)

        base_time = results["CrossEncoder.predict fp32 (baseline)"][0]
        reference = results["HF teacher fp32, length-bucketed"][1]
        onnx_scores = results["ONNX INT8 teacher"][1]
        agree = torch.corrcoef(torch.stack([reference, onnx_scores]))[0, 1].item()
        print(f"teacher benchmark: {MODEL}, {len(pairs)} CapRetrievalEn pairs, batch {args.batch_size}, "
              f"max_length {hf32.max_length}, best of {args.rounds} rounds, {available_cores()} cores, torch {torch.__version__}, "
              f"threads {torch.get_num_threads()}, bf16 units: {bf16_available('cpu')}")
        print(f"1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after: other processes on "
              "these cores depress every absolute figure; the ratios are from the same run")
        print(f"torch copy: {source}; pearson vs the INT8 ONNX scores {agree:.4f}")
        print(f"tokens: {tokens} non-padding ({tokens / len(pairs):.1f}/pair); unsorted batches would run "
              f"{padded_plain} ({padded_plain / tokens:.2f}x); FLOPs/run = 2 x {params / 1e6:.1f}M non-embedding "
              f"params x tokens = {flops / 1e12:.2f} TFLOP")
        print(f"matmul 2048^2 in this run: bf16 {peak_bf16 / 1e9:.0f} GFLOP/s, fp32 {peak_fp32 / 1e9:.0f} GFLOP/s")
        print(f"{'':40s} {'pairs/s':>9s} {'vs base':>8s} {'GFLOP/s':>8s} {'of bf16 mm':>10s} {'max|d| vs fp32':>14s} {'pearson':>8s}")
        for label, (seconds, scores) in results.items():
            diff = (scores - reference).abs().max().item()
            corr = torch.corrcoef(torch.stack([scores, reference]))[0, 1].item()
            print(f"{label:40s} {len(pairs) / seconds:9.1f} {base_time / seconds:7.2f}x {flops / seconds / 1e9:8.1f} "
                  f"{flops / seconds / peak_bf16:10.1%} {diff:14.4f} {corr:8.4f}")
        print(f"{'cached, first run (cold, ONNX)':40s} {len(pairs) / first[0]:9.1f} {base_time / first[0]:7.2f}x  "
              f"forward pairs {forward_first}")
        print(f"{'cached, re-run':40s} {len(pairs) / second[0]:9.1f} {base_time / second[0]:7.2f}x  "
              f"forward pairs {cached.forward_pairs - forward_first}; {first[0] / second[0]:.0f}x faster than the first run")
        assert torch.equal(first[1], second[1])
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
