"""One definition of a teacher setting, shared by mining recipes and the training module.

The recipe keys are the field names (``teacher: {name, batch_size, max_length, cache, backend,
precision}``); ``cache_path`` is the one place the default score cache is named.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from distill.paths import cache_root

DEFAULT_TEACHER = "ms-marco-MiniLM-L-12-v2"
CACHE_FILE = "teacher_scores.sqlite"


def default_cache_path() -> Path:
    """``<cache root>/teacher_scores.sqlite``, shared by every recipe (keys carry the teacher identity)."""
    return cache_root() / CACHE_FILE


@dataclass
class TeacherSpec:
    """A frozen cross-encoder teacher as a recipe names it.

    Args:
        name: packaged name (``distill models``) or a local cross-encoder folder.
        batch_size: pairs per forward pass (scores do not depend on it on the torch backend).
        max_length: max tokens of a (query, passage) pair; None = the model's default.
        cache: the SQLite score cache; None = ``<cache root>/teacher_scores.sqlite``.
        backend: ``auto`` (torch when the folder has torch weights, else ONNX), ``torch`` or ``onnx``
            (for the packaged ms-marco model: its original INT8 graph, whose scores depend on the batch).
        precision: ``auto`` (bf16 where the hardware has bf16 units, else fp32), ``bf16`` or ``fp32``;
            torch only.
    """

    name: str = DEFAULT_TEACHER
    batch_size: int = 64
    max_length: Optional[int] = 256
    cache: Optional[str] = None
    backend: Literal["auto", "torch", "onnx"] = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"

    def __post_init__(self) -> None:
        if self.batch_size is None or int(self.batch_size) < 1:
            raise ValueError(f"teacher.batch_size must be >= 1, got {self.batch_size!r}")
        if self.max_length is not None and int(self.max_length) < 1:
            raise ValueError(f"teacher.max_length must be >= 1 or null, got {self.max_length!r}")
        if self.backend not in ("auto", "torch", "onnx"):
            raise ValueError(f"teacher.backend must be auto, torch or onnx, got {self.backend!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"teacher.precision must be auto, bf16 or fp32, got {self.precision!r}")

    def cache_path(self) -> Path:
        return Path(self.cache).expanduser() if self.cache else default_cache_path()

    @property
    def bf16(self) -> bool | None:
        return {"auto": None, "bf16": True, "fp32": False}[self.precision]

    def load(self, *, cached: bool = True, **options):
        """The teacher (behind the score cache unless ``cached=False``); ``options`` go to the backend."""
        from teachers import load_teacher

        return load_teacher(self.name, batch_size=self.batch_size, max_length=self.max_length,
                            bf16=self.bf16, backend=self.backend,
                            cache=self.cache_path() if cached else None, **options)
