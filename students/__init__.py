"""Trainable dual encoders: ``load_student(name_or_path, **options) -> DualEncoder``.

Imports nothing from ``distill`` except ``distill.models`` (names), ``distill.hardware`` (bf16) and
``distill.atomic``. Attributes load lazily: ``distill.models`` imports ``students.options`` (the one
definition of the student options), which must not pull in torch or import ``distill.models`` back.
"""
from importlib import import_module

_EXPORTS = {
    "DualEncoder": "students.dual_encoder", "load_student": "students.dual_encoder", "pool": "students.dual_encoder",
    "load_sentence_transformers": "students.export", "save_sentence_transformers": "students.export",
    "StudentOptions": "students.options", "StudentOverrides": "students.options",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'students' has no attribute {name!r}")
