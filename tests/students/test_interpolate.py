"""WiSE-FT weight interpolation: the function, `distill interpolate`, and `export.fine_tuned_weight` in a fit."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from factories import make_lists, make_tiny_bert, offline_env

from distill.cli import main
from students import load_student, save_sentence_transformers
from students.interpolate import interpolate_weights

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    base = tmp_path_factory.mktemp("interp")
    return {"base": make_tiny_bert(base / "base", seed=0), "other": make_tiny_bert(base / "other", seed=1),
            "root": base}


def _floats(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


def test_every_float_tensor_is_the_weighted_mean_and_integer_buffers_stay(two):
    fine, base = load_student(str(two["other"])), load_student(str(two["base"]))
    a, b = _floats(fine), _floats(base)
    mixed = interpolate_weights(fine, base, 0.3)
    after = fine.state_dict()
    assert mixed == len(a)
    for name in a:
        torch.testing.assert_close(after[name], 0.3 * a[name] + 0.7 * b[name])
    assert not torch.equal(after[next(iter(a))], a[next(iter(a))])

    again = load_student(str(two["other"]))
    interpolate_weights(again, base, 1.0)  # weight 1: the fine-tuned model unchanged
    for name, value in _floats(again).items():
        assert torch.equal(value, a[name])


def test_integer_buffers_are_left_alone():
    def module(value: int, weight: float) -> torch.nn.Module:
        m = torch.nn.Linear(2, 2)
        torch.nn.init.constant_(m.weight, weight)
        m.register_buffer("steps", torch.tensor([value]))
        return m

    fine, base = module(7, 1.0), module(3, 0.0)
    assert interpolate_weights(fine, base, 0.5) == 2  # weight and bias; not the integer buffer
    assert fine.steps.item() == 7 and torch.all(fine.weight == 0.5)


@pytest.mark.parametrize("weight", [0, 0.0, -0.1, 1.5, True, "0.5"])
def test_weights_outside_zero_one_are_refused(two, weight):
    fine, base = load_student(str(two["other"])), load_student(str(two["base"]))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        interpolate_weights(fine, base, weight)


def test_a_head_from_a_random_start_cannot_be_interpolated(two):
    projected = load_student(str(two["other"]), projection_dim=8)
    with pytest.raises(ValueError, match="projection_dim"):
        interpolate_weights(projected, load_student(str(two["base"])), 0.5)


def test_distill_interpolate_writes_a_loadable_mixed_folder(two, tmp_path, capsys):
    fine = save_sentence_transformers(load_student(str(two["other"]), query_prefix="q: "), tmp_path / "fine")
    out = tmp_path / "mixed"
    assert main(["interpolate", str(fine), "--base", str(two["base"]), "--weight", "0.6",
                 "--output", str(out)]) == 0
    mixed = load_student(str(out))
    assert mixed.options.query_prefix == "q: "  # options come from the fine-tuned export
    a, b = _floats(load_student(str(fine))), _floats(load_student(str(two["base"])))
    for name, value in _floats(mixed).items():
        torch.testing.assert_close(value, 0.6 * a[name] + 0.4 * b[name])

    assert main(["interpolate", str(fine), "--base", str(two["base"]), "--weight", "2",
                 "--output", str(tmp_path / "bad")]) == 2
    assert "(0, 1]" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_fit_exports_the_interpolated_student_and_keeps_checkpoints_fine_tuned(two, tmp_path):
    lists = make_lists(tmp_path / "lists.jsonl", n_queries=24)
    env = offline_env(PYTHONPATH=str(ROOT))
    args = [sys.executable, "-m", "distill.cli", "fit", "--config", str(ROOT / "recipes/smoke.yaml"),
            "--model.student.name", str(two["base"]), "--model.optimizer.lr", "1.0e-2",
            "--data.lists", str(lists), "--data.list_size", "4", "--data.batch_size", "6",
            "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_epochs", "1",
            "--trainer.precision", "32-true", "--evaluation.datasets", "[]", "--export.fine_tuned_weight", "0.25"]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    metrics = json.loads((tmp_path / "run/student/metrics.json").read_text())
    assert metrics["fine_tuned_weight"] == 0.25
    state = torch.load(metrics["selected_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    trained = {k[len("student."):]: v for k, v in state.items() if k.startswith("student.") and v.is_floating_point()}
    base = _floats(load_student(str(two["base"])))
    exported = _floats(load_student(str(tmp_path / "run/student")))
    assert set(exported) == set(trained) == set(base)
    assert any(not torch.equal(trained[k], base[k]) for k in base), "training moved the weights"
    for name, value in exported.items():
        torch.testing.assert_close(value, 0.25 * trained[name] + 0.75 * base[name])
    fine_tuned = _floats(load_student(str(tmp_path / "run/student-fine-tuned")))  # the other end, for sweeps
    for name, value in fine_tuned.items():
        torch.testing.assert_close(value, trained[name])

    bad = subprocess.run([*args[:-1], "1.5"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "export.fine_tuned_weight" in bad.stderr and "Traceback" not in bad.stderr
