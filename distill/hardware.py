"""What the machine can do fast, detected at run time (never assumed).

bf16 pays off only where there are bf16 matrix units: CUDA GPUs with bf16 support, or x86 CPUs with
AMX-BF16 / AVX512-BF16. Elsewhere bf16 autocast on CPU is emulated and slower than fp32.
"""
from __future__ import annotations

import contextlib
import functools

import torch

# A ``precision`` setting (`distill evaluate --precision`, a recipe's ``teacher.precision``) → the
# ``bf16`` flag the loaders take; None decides by the hardware (resolve_autocast).
PRECISIONS: dict[str, bool | None] = {"auto": None, "bf16": True, "fp32": False}


def cpu_has_bf16_units() -> bool:
    """AMX tiles or AVX512-BF16, as torch's own CPU probe (cpuinfo) reports them."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def bf16_available(device: torch.device | str) -> bool:
    """True when bf16 matmuls are native (and so faster than fp32) on ``device``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_bf16_units()
    return False


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_autocast(device: torch.device | str, bf16: bool | None) -> bool:
    """``bf16=None`` means "automatic": on where the hardware has bf16 units."""
    return bf16_available(device) if bf16 is None else bool(bf16)


def autocast(device: torch.device | str, enabled: bool) -> contextlib.AbstractContextManager:
    device = torch.device(device)
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def lightning_precision(device_type: str = "auto") -> str:
    """The Lightning ``precision`` for this machine: bf16-mixed where bf16 is native, else 32-true."""
    dev = default_device() if device_type == "auto" else torch.device(device_type)
    return "bf16-mixed" if bf16_available(dev) else "32-true"


# Above this padded length the eager kernel's saved [heads, L, L] probabilities dominate memory: a bf16 step of
# 16 lists x 20 SciFact abstracts (256 tokens) peaked at 22 GB RSS with eager, near this machine's 24 GB.
EAGER_MAX_TOKENS = 128


def training_attention(device: torch.device | str, length: int = 0) -> str | None:
    """The attention kernel to train a batch padded to ``length`` tokens with on ``device`` (None: the
    model's own choice).

    On CPU, PyTorch's fused SDPA attention has a slow backward for short sequences: in a bf16 step of
    16 lists x 20 captions (~27 tokens) it took 48 % of the time; the eager kernel (plain matmuls,
    the same function) made the backward 2.2x faster. Eager keeps every attention matrix for the
    backward, so batches longer than ``EAGER_MAX_TOKENS`` go back to SDPA, which does not.
    Inference is unaffected (equal speed).
    """
    if torch.device(device).type != "cpu":
        return None
    return "eager" if length <= EAGER_MAX_TOKENS else "sdpa"


@functools.lru_cache(maxsize=1)
def retain_freed_memory() -> bool:
    """Keep freed memory in the process heap instead of returning it to the kernel (glibc only).

    A training step frees and re-allocates large buffers (each word-embedding gradient is
    vocab x width, 47 MB for MiniLM, once per length bucket); glibc serves blocks above 32 MB with
    mmap, so every step paid page faults to zero fresh pages: 36 % of a profiled CPU step went to
    ``fill_``. Returns whether the setting took (False off glibc). Idempotent; process-wide.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameters from malloc.h
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
