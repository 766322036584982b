"""Frozen cross-encoder teachers behind one protocol: ``Teacher.score(queries, passages) -> Tensor``.

``load_teacher`` turns a packaged name or a local folder into a teacher; ``cache=`` wraps it in the
persistent score cache. ``TeacherSpec`` is the recipe-level setting (``spec.load()``). Backends are
imported lazily so ``teachers.cache`` stays light.

The packaged ms-marco-MiniLM-L-12-v2 runs on torch from a folder dequantised once from its INT8
ONNX graph (``distill/importers/onnx_bert.py``): the graph quantises activations per batch, so a
pair's score there depends on its neighbours. ``backend="onnx"`` still runs the original graph.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

from teachers.base import Teacher
from teachers.spec import TeacherSpec, default_cache_path

__all__ = ["Teacher", "TeacherSpec", "default_cache_path", "load_teacher", "teacher_names"]

Backend = Literal["auto", "torch", "onnx"]


def teacher_names() -> list[str]:
    """The packaged cross-encoder names ``load_teacher`` knows."""
    from distill.models import KNOWN_MODELS

    return [m.name for m in KNOWN_MODELS if m.kind == "cross-encoder"]


def load_teacher(
    name_or_path: str | Path,
    *,
    batch_size: int = 32,
    max_length: int | None = None,
    bf16: bool | None = None,
    cache: str | Path | None = None,
    backend: Backend = "auto",
    **options,
) -> Teacher:
    """A teacher for a packaged name or a local folder; ``max_length`` defaults to the name's default.

    A folder with ``model.onnx`` runs on onnxruntime unless ``backend="torch"`` and it also holds torch
    weights; otherwise torch. ``bf16`` (torch only): None = on where the hardware has bf16 units.
    """
    from distill.models import known, local_path, resolve

    if backend not in ("auto", "torch", "onnx"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'onnx', got {backend!r}")
    entry = known(str(name_or_path))
    if entry is not None and entry.kind != "cross-encoder":
        raise ValueError(f"{entry.name!r} is a packaged {entry.kind}, not a cross-encoder; teachers: {', '.join(teacher_names())}")
    resolved = resolve(name_or_path)
    if backend == "onnx" and entry is not None and entry.locate_onnx is not None and resolved.local:
        # the packaged graph the default torch folder was converted from
        onnx_dir = entry.locate_onnx()
        if onnx_dir is not None:
            resolved = replace(resolved, path=str(onnx_dir))
    if not resolved.local:
        if entry is not None:
            local_path(name_or_path)  # raises the one-line "install package X" error
        raise ValueError(
            f"unknown teacher {str(name_or_path)!r}: not a packaged model name ({', '.join(teacher_names())}) "
            "nor a local folder"
        )
    folder = Path(resolved.path)
    if not folder.is_dir():
        raise ValueError(f"teacher {str(name_or_path)!r}: {folder} is a file; pass the model folder")
    name = entry.name if entry is not None else str(folder)
    length = int(max_length) if max_length is not None else resolved.defaults.max_length

    from teachers.hf import has_torch_weights
    from teachers.onnx import onnx_file

    has_onnx, has_torch = onnx_file(folder) is not None, has_torch_weights(folder)
    if backend == "onnx" and not has_onnx:
        raise ValueError(f"teacher {name!r}: backend='onnx' but {folder} has no model.onnx")
    if backend == "torch" and not has_torch:
        raise ValueError(f"teacher {name!r}: backend='torch' but {folder} has no torch weights (model.safetensors / pytorch_model.bin)")
    use_onnx = backend == "onnx" or (backend == "auto" and has_onnx)
    if use_onnx:
        from teachers.onnx import OnnxTeacher

        teacher: Teacher = OnnxTeacher(folder, name=name, batch_size=batch_size, max_length=length, **options)
    else:
        from teachers.hf import HFTeacher

        teacher = HFTeacher(folder, name=name, batch_size=batch_size, max_length=length, bf16=bf16, **options)
    if cache is not None:
        from teachers.cache import CachedTeacher

        teacher = CachedTeacher(teacher, cache)
    return teacher
