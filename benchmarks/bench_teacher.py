"""Teacher scoring on real CapRetrievalEn pairs: speed as ratios and as a fraction of the measured peak,
batch-(in)dependence and rank agreement of each scoring path, in one run.

    .venv/bin/python benchmarks/bench_teacher.py [--pairs 512] [--batch-size 64] [--rounds 1] [--profile]

Paths: sentence-transformers ``CrossEncoder.predict`` (fp32, the baseline a user would pick) on the
dequantised ms-marco-MiniLM-L-12-v2 folder; our torch teacher fp32 and bf16 (bf16 weights, length
bucketed); the packaged INT8 ONNX graph (the scorer before issue 12). Useful FLOPs come from the real
token counts (padding not counted, ``benchmarks.peak.encoder_flops``) against the fp32 and bf16
matmul peaks measured in the same run (``benchmarks.peak.matmul_peak``).
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.peak import encoder_flops, matmul_peak  # noqa: E402
from distill.data.corpora import load_retrieval_set  # noqa: E402
from distill.hardware import bf16_available  # noqa: E402
from distill.models import local_path  # noqa: E402
from teachers import load_teacher  # noqa: E402
from teachers.base import available_cores  # noqa: E402

MODEL = "ms-marco-MiniLM-L-12-v2"


def load_lists(n: int, list_size: int = 8, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` pairs as lists of ``list_size``: each query with its positives and random captions."""
    rs = load_retrieval_set("capretrieval-en")
    ids, texts = rs.doc_texts()
    text_of = dict(zip(ids, texts))
    split = rs.splits[0]
    qrels = rs.split_qrels(split)
    qids, qtexts = rs.query_texts(split)
    rng = random.Random(seed)
    order = list(range(len(qids)))
    rng.shuffle(order)
    queries, passages = [], []
    for i in order:
        pos = [d for d, rel in qrels[qids[i]].items() if rel > 0][: list_size // 2]
        docs = pos + rng.sample(ids, list_size - len(pos))
        queries += [qtexts[i]] * len(docs)
        passages += [text_of[d] for d in docs]
        if len(queries) >= n:
            break
    return queries[:n], passages[:n]


def timed(fn, rounds: int):
    best, out = float("inf"), None
    for _ in range(rounds):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def batch_gap(teacher, queries, passages, picks) -> float:
    """max |score alone − score inside the full batch| over the picked pairs."""
    batch = teacher.score(queries, passages)
    alone = torch.cat([teacher.score([queries[i]], [passages[i]]) for i in picks])
    return (alone - batch[picks]).abs().max().item()


def per_list_kendall(a: torch.Tensor, b: torch.Tensor, size: int) -> float:
    from scipy.stats import kendalltau

    taus = [kendalltau(a[i:i + size], b[i:i + size])[0] for i in range(0, len(a) - size + 1, size)]
    return float(sum(taus) / len(taus))


def profile(teacher, queries, passages) -> str:
    """Share of CPU time by op family while the torch teacher scores the pairs."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        teacher.score(queries, passages)
    families = {"matmul": ("addmm", "mm", "bmm", "matmul", "linear", "baddbmm"),
                "attention kernel": ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_attention_math"),
                "softmax": ("softmax",), "layernorm": ("layer_norm",), "gelu": ("gelu",),
                "copy/cast": ("copy_", "to", "_to_copy", "contiguous", "clone")}
    totals = dict.fromkeys([*families, "other"], 0.0)
    for event in prof.key_averages():
        name = event.key.removeprefix("aten::")
        family = next((f for f, keys in families.items() if name in keys), None)
        if family is None and event.key.startswith("aten::") and not name.startswith(("empty", "view", "as_strided", "reshape", "transpose", "permute", "expand", "unsqueeze", "slice", "select", "t")):
            family = "other"
        if family:
            totals[family] += event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return ", ".join(f"{k} {v / whole:.0%}" for k, v in totals.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256, help="the recipes' teacher.max_length")
    parser.add_argument("--rounds", type=int, default=1, help="repetitions; the best time of each path is kept")
    parser.add_argument("--alone", type=int, default=12, help="pairs also scored one at a time (batch dependence)")
    parser.add_argument("--profile", action="store_true", help="torch.profiler op shares of the torch paths")
    args = parser.parse_args()

    queries, passages = load_lists(args.pairs)
    load_before = os.getloadavg()[0]
    folder = local_path(MODEL)  # the dequantised torch folder (importers/onnx_bert.py)
    kw = dict(batch_size=args.batch_size, max_length=args.max_length)
    onnx = load_teacher(MODEL, backend="onnx", **kw)
    fp32 = load_teacher(MODEL, bf16=False, **kw)
    bf16 = load_teacher(MODEL, bf16=True, **kw)
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(str(folder), device="cpu", max_length=fp32.max_length, local_files_only=True)
    pairs = [[q, p] for q, p in zip(queries, passages)]

    def ce_predict():
        return ce.predict(pairs, batch_size=args.batch_size, activation_fn=torch.nn.Identity(),
                          convert_to_tensor=True, show_progress_bar=False).float().cpu()

    lengths = [len(ids) for ids, _ in fp32._prepare(queries, passages)]
    padded_plain = sum(args.batch_size * max(lengths[i:i + args.batch_size]) for i in range(0, len(lengths), args.batch_size))
    config = fp32.model.config
    head = sum(p.numel() for n, p in fp32.model.named_parameters() if n.startswith(("bert.pooler", "classifier")) and n.endswith("weight"))
    flops = encoder_flops(config, lengths, head_params=head)

    for t in (onnx, fp32, bf16):  # warm-up: first calls allocate and pick kernels
        t.score(queries[:args.batch_size], passages[:args.batch_size])
    ce.predict(pairs[:args.batch_size], batch_size=args.batch_size, show_progress_bar=False)
    # which torch path `distill mine` takes here (teacher.precision: auto) is decided by the hardware
    FP32, BF16 = ("torch fp32", "torch bf16 weights (default here)") if bf16_available("cpu") else \
        ("torch fp32 (default here)", "torch bf16 weights")
    runs = {
        "CrossEncoder.predict fp32 (baseline)": ce_predict,
        FP32: lambda: fp32.score(queries, passages),
        BF16: lambda: bf16.score(queries, passages),
        "ONNX INT8 graph (before)": lambda: onnx.score(queries, passages),
    }
    results = {}
    for label, run in runs.items():
        results[label] = timed(run, args.rounds)
        print(f"  {label}: {len(pairs) / results[label][0]:.1f} pairs/s", file=sys.stderr, flush=True)
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)

    rng = random.Random(0)
    picks = sorted({lengths.index(min(lengths)), lengths.index(max(lengths)),
                    *rng.sample(range(min(len(lengths), args.batch_size)), min(args.alone, args.batch_size) - 2)})
    picks = [i for i in picks if i < args.batch_size]
    gaps = {FP32: batch_gap(fp32, queries[:args.batch_size], passages[:args.batch_size], picks),
            BF16: batch_gap(bf16, queries[:args.batch_size], passages[:args.batch_size], picks),
            "ONNX INT8 graph (before)": batch_gap(onnx, queries[:args.batch_size], passages[:args.batch_size], picks)}

    from scipy.stats import kendalltau, spearmanr

    before = results["ONNX INT8 graph (before)"][1]
    base_time = results["CrossEncoder.predict fp32 (baseline)"][0]
    print(f"teacher benchmark: {MODEL}, {len(pairs)} CapRetrievalEn pairs in lists of 8, batch {args.batch_size}, "
          f"max_length {fp32.max_length}, best of {args.rounds}, {available_cores()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, bf16 units: {bf16_available('cpu')}")
    print(f"1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (shared cores depress every "
          "absolute figure; ratios and fractions are from the same run)")
    print(f"matmul peak (benchmarks.peak.matmul_peak, up to 2048^2): fp32 {peak32 / 1e9:.0f} GFLOP/s, bf16 {peak16 / 1e9:.0f} GFLOP/s")
    print(f"tokens {sum(lengths)} non-padding ({sum(lengths) / len(lengths):.1f}/pair, max {max(lengths)}); unsorted batches "
          f"would run {padded_plain / sum(lengths):.2f}x that; useful work {flops / 1e12:.3f} TFLOP/run")
    print(f"batch dependence: {len(picks)} pairs (shortest, longest, random) alone vs in a batch of {args.batch_size}")
    print(f"| {'path':36s} | {'pairs/s':>8s} | {'vs base':>7s} | {'GFLOP/s':>7s} | {'of fp32 peak':>12s} | "
          f"{'of bf16 peak':>12s} | {'max|alone-batch|':>16s} | {'Spearman/Kendall vs before':>26s} | {'per-list Kendall':>16s} |")
    print("|" + "|".join("-" * (w + 2) for w in (36, 8, 7, 7, 12, 12, 16, 26, 16)) + "|")
    for label, (seconds, scores) in results.items():
        rate = flops / seconds
        gap = f"{gaps[label]:.2e}" if label in gaps else "-"
        agree = f"{spearmanr(scores, before)[0]:.4f} / {kendalltau(scores, before)[0]:.4f}"
        print(f"| {label:36s} | {len(pairs) / seconds:8.1f} | {base_time / seconds:6.2f}x | {rate / 1e9:7.1f} | "
              f"{rate / peak32:12.1%} | {rate / peak16:12.1%} | {gap:>16s} | {agree:>26s} | "
              f"{per_list_kendall(scores, before, 8):16.4f} |")
    from benchmarks.record import Row, save

    rows = []
    for label, (seconds, _) in results.items():
        bf = "bf16" in label
        rows.append(Row(f"teacher scoring: {label}", len(pairs) / seconds, "pairs/s",
                        baseline=None if "baseline" in label else "CrossEncoder.predict fp32",
                        ratio=None if "baseline" in label else base_time / seconds, gflops=flops / seconds / 1e9,
                        peak_gflops=(peak16 if bf else peak32) / 1e9, precision="bf16" if bf else
                        ("int8" if "INT8" in label else "fp32"),
                        note="INT8 graph: fraction of the fp32 peak" if "INT8" in label else ""))
    save("teacher", rows, [f"{len(pairs)} CapRetrievalEn pairs, batch {args.batch_size}, max_length {fp32.max_length}, "
                           f"{sum(lengths) / len(lengths):.1f} tokens/pair"])
    if args.profile:
        n = min(len(queries), 4 * args.batch_size)
        print(f"profile fp32 ({n} pairs): {profile(fp32, queries[:n], passages[:n])}")
        print(f"profile bf16 ({n} pairs): {profile(bf16, queries[:n], passages[:n])}")


if __name__ == "__main__":
    main()
