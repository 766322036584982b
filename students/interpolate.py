"""Weight-space ensembling of a fine-tuned student with the model it started from (WiSE-FT).

Wortsman et al. 2022, "Robust fine-tuning of zero-shot models" (CVPR): the linear interpolation
``θ = w · θ_fine-tuned + (1 − w) · θ_zero-shot`` of two models that share a pretrained start often
beats both ends, on the target distribution as well as off it. Here it is the last step of an
export (``export.fine_tuned_weight``) and a command (``distill interpolate``), so the weight can be
swept without training again.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def check_fine_tuned_weight(weight: float, where: str = "fine_tuned_weight") -> float:
    """``weight`` as a float in (0, 1]; 1 is the fine-tuned model unchanged."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= 1:
        raise ValueError(f"{where} must be a number in (0, 1] (1 keeps the fine-tuned weights), got {weight!r}")
    return float(weight)


@torch.no_grad()
def interpolate_weights(fine_tuned: nn.Module, base: nn.Module, weight: float) -> int:
    """In place: every floating tensor of ``fine_tuned``'s state becomes ``weight · fine_tuned + (1 − weight)
    · base``. Integer buffers (position ids) stay as they are. Returns how many tensors were mixed.

    Both modules must hold the same tensors (names and shapes): a head trained from a random start
    (a projection) has no zero-shot counterpart to interpolate with, and is refused.
    """
    weight = check_fine_tuned_weight(weight)
    ours, theirs = fine_tuned.state_dict(), base.state_dict()
    _check_states(ours, theirs)
    mixed = 0
    for name, tensor in ours.items():
        if tensor.is_floating_point():
            if weight != 1.0:
                tensor.mul_(weight).add_(theirs[name].to(tensor), alpha=1.0 - weight)
            mixed += 1
    return mixed


def check_interpolable(fine_tuned: nn.Module, base: nn.Module) -> None:
    """Raise a one-line ValueError unless ``base`` holds every floating tensor of ``fine_tuned``
    with the same shape."""
    _check_states(fine_tuned.state_dict(), base.state_dict())


def _check_states(ours: dict, theirs: dict) -> None:
    for name, tensor in ours.items():
        if not tensor.is_floating_point():
            continue
        if name not in theirs:
            raise ValueError(f"the base model has no {name!r}: weight interpolation needs a student whose "
                             "every weight started from the base (projection_dim adds a head from a random start)")
        if theirs[name].shape != tensor.shape:
            raise ValueError(f"{name}: shape {tuple(tensor.shape)} in the fine-tuned student, "
                             f"{tuple(theirs[name].shape)} in the base model")


def interpolate_folders(fine_tuned: str | Path, base: str, weight: float, output: str | Path) -> Path:
    """``distill interpolate``: a fine-tuned student folder mixed with ``base`` (a model name or folder)
    at ``weight``, written as a sentence-transformers folder at ``output`` (options from the fine-tuned one)."""
    from students.dual_encoder import load_student
    from students.export import load_sentence_transformers, save_sentence_transformers

    student = load_sentence_transformers(fine_tuned)
    interpolate_weights(student, load_student(base), weight)
    return save_sentence_transformers(student, output)
