"""The machine's measured matmul peak, and the useful FLOPs of a BERT-style encoder, for benchmarks.

    from benchmarks.peak import matmul_peak, encoder_flops
    peak = matmul_peak(torch.bfloat16)          # FLOP/s of a 2048x2048 matmul, measured now
    useful = encoder_flops(model.config, lengths)  # FLOPs of a forward over these unpadded lengths

Measured in the same run as the workload: other processes on shared cores move both alike.
"""
from __future__ import annotations

import time
from typing import Iterable

import torch


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 2048, seconds: float = 2.0,
                threads: int | None = None) -> float:
    """FLOP/s of repeated ``[n, n] @ [n, n]`` in ``dtype`` on the CPU (2·n³ FLOPs each), best of 3 windows.

    Where ``dtype`` has no fast kernel (bf16 on a CPU without bf16 units runs a reference loop, minutes
    per 2048² product) the size stops growing before one product would take a third of ``seconds``:
    that slow peak is the honest one for such a machine.
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        size = 256
        while True:  # grow from a small size, so a slow dtype never runs one huge product
            a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
            a @ b  # warm-up: thread pool, kernel choice
            start = time.perf_counter()
            a @ b
            took = time.perf_counter() - start
            if size >= n or took * 8 > seconds / 3:
                break
            size *= 2
        best = 0.0
        for _ in range(3):
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 3 or count == 0:
                a @ b
                count += 1
            best = max(best, 2 * size**3 * count / (time.perf_counter() - start))
        return best
    finally:
        torch.set_num_threads(previous)


def encoder_flops(config, lengths: Iterable[int], *, head_params: int = 0, backward: bool = False) -> float:
    """Useful FLOPs of a transformer encoder forward over sequences of these (unpadded) token counts.

    Per token 2 x the layer weights (QKV, output, FFN: 4·H² + 2·H·I per layer); per sequence of L
    tokens 4·L²·H per layer for QKᵀ and AV; ``head_params`` (pooler + classifier) once per sequence.
    Embedding look-ups, LayerNorm, softmax and GELU are not counted. ``backward`` triples it.
    """
    H, I, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_token = 2 * layers * (4 * H * H + 2 * H * I)
    lengths = list(lengths)
    tokens = sum(lengths)
    attention = 4 * layers * H * sum(n * n for n in lengths)
    total = per_token * tokens + attention + 2 * head_params * len(lengths)
    return float(total * (3 if backward else 1))
