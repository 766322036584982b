"""The published method's training options as recipe fields: the percentile teacher scale and list filter,
split vs shuffle seeds, dropout off, the lr floor, dev-only early stopping, the auto student temperature,
large batches through GradCache, and the shipped cadet recipe / ablation arm."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from factories import make_lists, make_tiny_bert, offline_env

from distill.losses import ObjectiveConfig, list_entropy
from distill.training.callbacks import DevEarlyStopping
from distill.training.datamodule import ListsDataModule
from distill.training.module import DistillationModule, OptimizerConfig, StudentConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("cadet")
    return {"bert": make_tiny_bert(base / "bert", dropout=0.1), "lists": make_lists(base / "lists.jsonl", n_queries=40),
            "base": base}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- data ------------------------------------------------------------------------------------------

def test_percentiles_come_from_the_training_lists_only(tiny):
    data = ListsDataModule(str(tiny["lists"]), list_size=3, dev_fraction=0.25)
    data.setup("fit")
    assert data.dev_rows  # the dev lists exist and are left out of the percentiles
    scores = [c["teacher_score"] for r in data.train_rows for c in r["candidates"][:3]]
    assert data.score_percentiles == pytest.approx(tuple(np.percentile(scores, [1, 99])))
    everything = [c["teacher_score"] for r in _rows(tiny["lists"]) for c in r["candidates"][:3]]
    assert data.score_percentiles != pytest.approx(tuple(np.percentile(everything, [1, 99])))


def test_lists_whose_top_score_is_low_are_dropped_and_counted(tiny, capsys):
    data = ListsDataModule(str(tiny["lists"]), list_size=4, dev_fraction=0.25, min_top_score_percentile=50)
    data.setup("fit")
    whole = ListsDataModule(str(tiny["lists"]), list_size=4, dev_fraction=0.25)
    whole.setup("fit")
    tops = {r["query_id"]: max(c["teacher_score"] for c in r["candidates"]) for r in whole.train_rows}
    threshold = np.percentile(list(tops.values()), 50)
    kept = {r["query_id"] for r in data.train_rows}
    assert kept == {q for q, top in tops.items() if top >= threshold}
    assert 0 < len(kept) < len(tops)
    assert [r["query_id"] for r in data.dev_rows] == [r["query_id"] for r in whole.dev_rows]  # dev kept whole
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("data: dropped"))
    assert f"dropped {len(tops) - len(kept)} of {len(tops)} training lists" in line
    with pytest.raises(ValueError, match="min_top_score_percentile"):
        ListsDataModule(str(tiny["lists"]), min_top_score_percentile=150)


def test_unscored_lists_cannot_be_filtered_by_top_score(tmp_path):
    lists = make_lists(tmp_path / "raw.jsonl", n_queries=8, scored=False)
    data = ListsDataModule(str(lists), list_size=4, dev_fraction=0.0, min_top_score_percentile=10)
    with pytest.raises(ValueError, match=r"raw.jsonl: data.min_top_score_percentile needs teacher scores"):
        data.setup("fit")


def test_shuffle_seed_varies_order_but_not_the_lists_split_seed_varies_the_lists(tiny):
    def train(**kw):
        data = ListsDataModule(str(tiny["lists"]), list_size=4, batch_size=4, dev_fraction=0.25, **kw)
        data.setup("fit")
        order = [q for batch in data.train_dataloader() for q in batch.query_ids]
        return order

    default, reseeded = train(), train(seed=1)
    assert sorted(default) == sorted(reseeded) and default != reseeded
    assert train(split_seed=0) == default  # the default split is the one every recipe used (seed 0)
    assert sorted(train(split_seed=5)) != sorted(default)


# ---- student ----------------------------------------------------------------------------------------

def test_dropout_option_turns_the_backbone_dropout_off(tiny):
    from students import load_student

    def twice(**kw):
        torch.manual_seed(0)
        student = load_student(str(tiny["bert"]), **kw).train()
        tokens = student.tokenize_queries(["the cat sat on the mat"])
        return student, student.forward_tokens(tokens), student.forward_tokens(tokens)

    student, a, b = twice()
    assert not torch.allclose(a, b)  # the tiny model is built with dropout 0.1
    student, a, b = twice(dropout=0.0)
    torch.testing.assert_close(a, b)
    drops = [m.p for m in student.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and set(drops) == {0.0}
    assert student.model.config.hidden_dropout_prob == 0.0
    assert student.model.config.attention_probs_dropout_prob == 0.0
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)"):
        StudentConfig(name="x", dropout=1.5)


# ---- schedule and early stopping ----------------------------------------------------------------------

def test_lr_decays_linearly_to_the_floor():
    cfg = OptimizerConfig(lr=1.0, warmup_ratio=0.2, min_lr_ratio=0.1)
    assert cfg.lr_factor(0, 10) == pytest.approx(1 / 3)  # warm-up over 2 steps
    assert cfg.lr_factor(2, 10) == pytest.approx(1.0)
    assert cfg.lr_factor(6, 10) == pytest.approx(0.1 + 0.9 * 0.5)
    assert cfg.lr_factor(10, 10) == pytest.approx(0.1)
    assert OptimizerConfig(warmup_ratio=0.2).lr_factor(10, 10) == 0.0  # default: today's decay to 0
    with pytest.raises(ValueError, match="min_lr_ratio"):
        OptimizerConfig(min_lr_ratio=1.5)


def test_early_stopping_is_off_by_default_and_never_watches_evaluation_sets():
    assert not DevEarlyStopping().enabled and not DevEarlyStopping(patience=0).enabled
    assert DevEarlyStopping(patience=2).enabled
    with pytest.raises(ValueError, match="not a dev-list metric"):
        DevEarlyStopping(monitor="monitor/capretrieval-en/ndcg@10", patience=2)


# ---- one large step: batch 512 through GradCache chunks of 64, percentile scale, auto temperature ------

def test_large_batch_step_with_percentile_scale_and_auto_temperature(tiny, tmp_path, capsys):
    lists = make_lists(tmp_path / "many.jsonl", n_queries=600, list_size=4, seed=1)
    L.seed_everything(0)
    module = DistillationModule(
        StudentConfig(name=str(tiny["bert"]), dropout=0.0), teacher=None,
        objective=ObjectiveConfig(teacher_normalization="percentile", student_temperature="auto", entropy_lists=64),
        optimizer=OptimizerConfig(lr=1e-3, warmup_ratio=0.0, min_lr_ratio=0.1), chunk_size=64)
    data = ListsDataModule(str(lists), list_size=4, batch_size=512, dev_fraction=0.0)
    start = {k: v.detach().clone() for k, v in module.student.state_dict().items()}
    trainer = L.Trainer(default_root_dir=str(tmp_path), accelerator="cpu", devices=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, precision="32-true", max_steps=1,
                        num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 1
    moved = max((v - start[k]).abs().max().item() for k, v in module.student.state_dict().items())
    assert moved > 1e-5
    # the objective uses the training lists' percentiles
    assert module.objective.percentiles == pytest.approx(data.score_percentiles)
    # the chosen temperature matches the teacher's entropy on the first lists (measured with the start weights)
    temperature = module.objective.student_temperature
    assert temperature is not None and temperature > 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("init:"))
    measured = float(line.split("student entropy ")[1].split()[0])
    target = float(line.split("teacher entropy ")[1].split()[0])
    assert abs(measured - target) < 1e-3 and "(auto)" in line
    fresh = DistillationModule(StudentConfig(name=str(tiny["bert"]), dropout=0.0), teacher=None,
                               objective=ObjectiveConfig(teacher_normalization="percentile"))
    fresh.trainer = trainer
    fresh.objective.set_percentiles(*data.score_percentiles)
    student, teacher, mask = fresh._first_lists(data.train_rows[:64])  # start weights, same lists
    assert abs(list_entropy(student, temperature, mask).mean().item() - target) < 1e-3
    assert list_entropy(teacher, 0.3, mask).mean().item() == pytest.approx(target, abs=1e-4)
    # the lr after the one (and last) step sits at the floor
    assert module.lr_schedulers().get_last_lr()[0] == pytest.approx(1e-4)
    # a checkpoint carries the chosen numbers: a module loaded from it trains and validates with them
    trainer.save_checkpoint(tmp_path / "one.ckpt")
    loaded = DistillationModule.load_from_checkpoint(tmp_path / "one.ckpt", weights_only=False)
    assert loaded.objective.student_temperature == pytest.approx(temperature)
    assert loaded.objective.percentiles == pytest.approx(data.score_percentiles)


# ---- through `distill fit`: cadet options, early stopping, and what metrics.json records ----------------

def test_fit_with_cadet_options_stops_early_and_records_steps(tiny, tmp_path):
    env = offline_env(PYTHONPATH=str(ROOT))
    # cadet.yaml's fields over smoke.yaml; min_delta so large that nothing after the first validation improves
    args = [sys.executable, "-m", "distill.cli", "fit", "--config", str(ROOT / "recipes/smoke.yaml"),
            "--config", str(ROOT / "recipes/capretrieval-en/cadet.yaml"),
            "--model.optimizer.lr", "1.0e-3", "--model.objective.student_temperature", "auto",
            "--model.student.name", str(tiny["bert"]), "--data.lists", str(tiny["lists"]),
            "--data.list_size", "4", "--data.batch_size", "6", "--trainer.default_root_dir", str(tmp_path),
            "--trainer.max_epochs", "6", "--trainer.precision", "32-true", "--early_stopping.patience", "1",
            "--early_stopping.min_delta", "1.0e9", "--evaluation.datasets", "[]"]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert any(l.startswith("init:") and "(auto)" in l for l in proc.stdout.splitlines())
    metrics = json.loads((tmp_path / "student" / "metrics.json").read_text())
    split = ListsDataModule(str(tiny["lists"]), list_size=4, dev_fraction=0.25)  # smoke.yaml's dev share
    split.setup("fit")
    steps_per_epoch = math.ceil(len(split.train_rows) / 6)
    end = metrics["end_of_training"]
    # validations after epochs 1 and 2; the second does not improve by min_delta → stop (6 epochs asked)
    assert end["global_step"] == 2 * steps_per_epoch and end["epoch"] <= 2
    assert metrics["stopped_early_at_step"] == end["global_step"]
    selected = metrics["selected"]  # the best dev/kl of the two validations
    assert selected["global_step"] in (steps_per_epoch, 2 * steps_per_epoch)
    assert selected["epoch"] == selected["global_step"] // steps_per_epoch - 1
    assert metrics["objective"]["student_temperature"] > 0
    assert metrics["objective"]["teacher_percentiles"][0] < metrics["objective"]["teacher_percentiles"][1]
    from students import load_student

    exported = load_student(str(tmp_path / "student"))
    assert {m.p for m in exported.model.modules() if isinstance(m, torch.nn.Dropout)} == {0.0}

    bad = subprocess.run([*args[:-2], "--early_stopping.monitor", "monitor/capretrieval-en/ndcg@10"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2
    assert "not a dev-list metric" in bad.stderr and "Traceback" not in bad.stderr


# ---- shipped recipes ---------------------------------------------------------------------------------

def test_cadet_recipe_and_its_ablation_arm():
    from distill.ablate import load_config
    from distill.training.cli import resolve_fit_config

    resolved = resolve_fit_config(["--config", str(ROOT / "recipes/capretrieval-en/base.yaml"),
                                   "--config", str(ROOT / "recipes/capretrieval-en/cadet.yaml")])
    model = resolved["model"]
    assert model["objective"]["teacher_normalization"] == "percentile"
    assert (model["objective"]["kl_weight"], model["objective"]["contrastive_weight"]) == (1.0, 0.1)
    assert model["student"]["dropout"] == 0.0 and model["optimizer"]["min_lr_ratio"] == 0.1
    assert resolved["early_stopping"]["patience"] and resolved["early_stopping"]["monitor"] == "dev/kl"
    assert model["optimizer"]["lr"] == yaml.safe_load((ROOT / "recipes/capretrieval-en/base.yaml").read_text())[
        "model"]["optimizer"]["lr"]

    cfg = load_config(ROOT / "recipes/capretrieval-en/ablation.yaml")
    arm = cfg.arms["cadet"]
    cadet = yaml.safe_load((ROOT / "recipes/capretrieval-en/cadet.yaml").read_text())
    assert arm["model.objective.teacher_normalization"] == cadet["model"]["objective"]["teacher_normalization"]
    assert arm["model.student.dropout"] == 0.0 and arm["early_stopping.patience"] == cadet["early_stopping"]["patience"]
    gtr = yaml.safe_load((ROOT / "recipes/capretrieval-en/gtr-projection.yaml").read_text())
    assert cfg.arms["gtr-256d"]["model.student.projection_dim"] == gtr["model"]["student"]["projection_dim"]
    # seeds vary init and order; which lists are trained on is data.split_seed, never a seed key
    assert "data.split_seed" not in cfg.seed_keys and "data.seed" in cfg.seed_keys
