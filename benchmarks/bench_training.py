"""Training throughput and memory, as ratios against named baselines measured in the same run.

1. queries/s of DistillationModule (Lightning, manual optimisation) against a straightforward
   plain-PyTorch loop with the same student (all-MiniLM-L6-v2), list length 20, the same objective
   and precision; the first-step losses must agree to 1e-4.
2. peak memory of one step at effective batch 1,024 lists with GradCache chunking against batch 32
   without chunking (goal: <= 1.2x). Each configuration runs in its own process; memory is the
   growth of peak RSS over the process's RSS after loading the model.

Run: .venv/bin/python benchmarks/bench_training.py [--steps 6] [--memory-list-size 4]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rows(n: int, list_size: int, seed: int = 0) -> list[dict]:
    from distill.data.corpora import load_retrieval_set

    rs = load_retrieval_set("capretrieval-en")
    ids, texts = rs.doc_texts()
    queries = rs.queries["text"]
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        picked = rng.sample(range(len(ids)), list_size)
        rows.append({"query_id": f"q{i}", "query": rng.choice(queries), "query_type": "bench", "source_id": "",
                     "candidates": [{"doc_id": ids[j], "text": texts[j], "teacher_score": rng.uniform(-10, 5),
                                     "bm25_rank": None, "dense_rank": None} for j in picked]})
    return rows


def _no_dropout(model) -> None:
    # dropout masks depend on how each loop consumes the RNG; without them the losses must agree
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def _plain_loop(rows, batch_size: int, list_size: int, steps: int, bf16: bool):
    """The baseline a researcher would write: tokenize, encode, loss, backward, AdamW."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from distill.losses import DistillationObjective
    from distill.models import local_path

    torch.manual_seed(0)
    path = str(local_path("all-MiniLM-L6-v2"))
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
    model.train()
    _no_dropout(model)
    objective = DistillationObjective()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5)

    def embed(texts, max_len):
        batch = tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        hidden = model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    losses, start = [], None
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()  # step 0 warms up kernels
        chunk = rows[step * batch_size:(step + 1) * batch_size]
        scores = torch.tensor([[c["teacher_score"] for c in r["candidates"][:list_size]] for r in chunk])
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
        with ctx:
            q = embed([r["query"] for r in chunk], 128)
            p = embed([c["text"] for r in chunk for c in r["candidates"][:list_size]], 256)
            loss = objective(q, p, scores, [[c["doc_id"] for c in r["candidates"]] for r in chunk])["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return steps * batch_size / (time.perf_counter() - start), losses[0]


def _module_loop(rows, batch_size: int, list_size: int, steps: int, bf16: bool, chunk_size=None):
    import lightning as L
    import torch

    from distill.training.datamodule import collate_lists
    from distill.training.module import DistillationModule, OptimizerConfig, StudentConfig

    torch.manual_seed(0)
    module = DistillationModule(StudentConfig(), teacher=None, optimizer=OptimizerConfig(warmup_ratio=0.0),
                                chunk_size=chunk_size)
    _no_dropout(module.student)
    batches = [collate_lists(rows[i * batch_size:(i + 1) * batch_size], list_size) for i in range(steps + 1)]
    times, losses = [], []

    class Timer(L.Callback):
        def on_train_batch_start(self, *a):
            times.append(time.perf_counter())

        def on_train_batch_end(self, trainer, pl_module, outputs, *a):
            losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))
            times.append(time.perf_counter())

    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps + 1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Timer()],
                        precision="bf16-mixed" if bf16 else "32-true", num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    elapsed = times[-1] - times[2]  # from the start of step 1 (step 0 warms up)
    return steps * batch_size / elapsed, losses[0]


def _memory_child(batch_size: int, chunk_size: int | None, list_size: int) -> None:
    import torch

    from distill.training.datamodule import collate_lists
    from distill.training.module import DistillationModule, StudentConfig

    rows = _rows(batch_size, list_size)
    module = DistillationModule(StudentConfig(), teacher=None, chunk_size=chunk_size)
    batch = collate_lists(rows, list_size)
    import threading

    import psutil

    proc, peak, done = psutil.Process(), [0], threading.Event()

    def sample():  # ru_maxrss cannot see growth below the model-loading peak, so sample RSS
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    base = proc.memory_info().rss
    threading.Thread(target=sample, daemon=True).start()
    scores = batch.teacher_scores
    q_tok = module.student.tokenize_queries(batch.queries)
    p_tok = module.student.tokenize_passages(batch.passages)
    if chunk_size is None:
        q = module.student.forward_tokens(q_tok, "query")
        p = module.student.forward_tokens(p_tok, "passage")
        module.objective(q, p, scores, batch.doc_ids, candidate_mask=batch.mask)["loss"].backward()
    else:
        from distill.training.gradcache import GradCache

        GradCache({"query": lambda b: module.student.forward_tokens(b, "query"),
                   "passage": lambda b: module.student.forward_tokens(b, "passage")},
                  lambda q, p: module.objective(q, p, scores, batch.doc_ids, candidate_mask=batch.mask)["loss"],
                  chunk_size=chunk_size)({"query": dict(q_tok), "passage": dict(p_tok)})
    done.set()
    time.sleep(0.02)
    print(json.dumps({"growth_mb": (peak[0] - base) / 2**20}))


def _memory(batch_size: int, chunk_size: int | None, list_size: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(batch_size), str(chunk_size or 0),
                          str(list_size)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["growth_mb"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--list-size", type=int, default=20)
    parser.add_argument("--memory-list-size", type=int, default=4)
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--memory-child", nargs=3, type=int)
    args = parser.parse_args()
    if args.memory_child:
        b, c, size = args.memory_child
        _memory_child(b, c or None, size)
        return

    from distill.hardware import bf16_available

    bf16 = bf16_available("cpu")
    rows = _rows((args.steps + 1) * args.batch_size, args.list_size)
    if args.memory_only:
        _report_memory(args.memory_list_size)
        return
    base_qps, base_loss = _plain_loop(rows, args.batch_size, args.list_size, args.steps, bf16)
    ours_qps, ours_loss = _module_loop(rows, args.batch_size, args.list_size, args.steps, bf16)
    print(f"precision: {'bf16 autocast' if bf16 else 'fp32'}; batch {args.batch_size} lists x {args.list_size}")
    print(f"plain PyTorch loop   {base_qps:8.2f} queries/s  first loss {base_loss:.6f}")
    print(f"DistillationModule   {ours_qps:8.2f} queries/s  first loss {ours_loss:.6f}")
    print(f"throughput ratio (ours / plain): {ours_qps / base_qps:.2f}x  (goal >= 1x); "
          f"|loss difference| {abs(ours_loss - base_loss):.2e} (goal <= 1e-4)")

    _report_memory(args.memory_list_size)


def _report_memory(list_size: int) -> None:
    small = _memory(32, None, list_size)
    large = _memory(1024, 32, list_size)
    print(f"peak memory growth: batch 32 unchunked {small:.0f} MB, batch 1024 chunk 32 {large:.0f} MB; "
          f"ratio {large / small:.2f}x (goal <= 1.2x), list size {list_size}")


if __name__ == "__main__":
    main()
