"""Issue 12 §2: a non-finite loss stops training before the optimiser step, and a student selected
on a non-finite score (or holding non-finite weights) is never exported."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from factories import make_lists, make_tiny_bert

from distill.training.callbacks import ExportStudent
from distill.training.datamodule import ListsDataModule
from distill.training.module import DistillationModule, StudentConfig


class _InfTeacher:
    """The teacher gone wrong: every missing score comes back as +inf."""

    name = identity = "inf"

    def score(self, queries, passages):
        return torch.full((len(queries),), float("inf"))


def _trainer(root: Path, callbacks) -> L.Trainer:
    return L.Trainer(default_root_dir=str(root), accelerator="cpu", devices=1, logger=False, max_steps=3,
                     enable_progress_bar=False, enable_model_summary=False, precision="32-true",
                     num_sanity_val_steps=0, val_check_interval=1, callbacks=callbacks)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "bert", dropout=0.0)


def test_non_finite_loss_stops_before_the_step_naming_step_and_batch(bert, tmp_path):
    lists = make_lists(tmp_path / "raw.jsonl", n_queries=12, scored=False)  # the teacher fills every score
    module = DistillationModule(StudentConfig(name=str(bert)), teacher=None)
    module._teacher = _InfTeacher()
    before = {k: v.clone() for k, v in module.student.state_dict().items()}
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor="dev/kl", mode="min", save_top_k=1)
    data = ListsDataModule(str(lists), list_size=4, batch_size=4, dev_fraction=0.25)
    with pytest.raises(RuntimeError) as err:
        _trainer(tmp_path, [ckpt, ExportStudent()]).fit(module, datamodule=data)
    message = str(err.value)
    assert "\n" not in message and "step 0, batch 0" in message and "before the optimiser step" in message
    after = module.student.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the step never ran
    assert not ckpt.best_model_path and not (tmp_path / "student").exists()


def test_export_refuses_a_non_finite_best_score_or_weights(bert, tmp_path):
    lists = make_lists(tmp_path / "l.jsonl", n_queries=12)
    module = DistillationModule(StudentConfig(name=str(bert)), teacher=None)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor="dev/kl", mode="min", save_top_k=1)
    data = ListsDataModule(str(lists), list_size=4, batch_size=4, dev_fraction=0.25)
    trainer = _trainer(tmp_path, [ckpt])
    trainer.fit(module, datamodule=data)
    export = ExportStudent()
    ckpt.best_model_score = torch.tensor(float("inf"))  # what Lightning records for a NaN dev/kl
    with pytest.raises(RuntimeError, match=r"dev/kl = inf, not a finite score"):
        export.on_fit_end(trainer, module)
    assert not (tmp_path / "student").exists()
    ckpt.best_model_path = ""  # no selection: the last weights, here poisoned
    ckpt.best_model_score = None
    with torch.no_grad():
        next(module.student.parameters()).fill_(float("nan"))
    with pytest.raises(RuntimeError, match="parameters are not finite"):
        export.on_fit_end(trainer, module)
    assert not (tmp_path / "student").exists()
