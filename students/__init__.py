"""Trainable dual encoders: ``load_student(name_or_path, **options) -> DualEncoder``.

Imports nothing from ``distill`` except ``distill.models`` (names) and ``distill.hardware`` (bf16).
"""
from students.dual_encoder import DualEncoder, load_student, pool
from students.export import load_sentence_transformers, save_sentence_transformers

__all__ = ["DualEncoder", "load_student", "pool", "load_sentence_transformers", "save_sentence_transformers"]
