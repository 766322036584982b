"""Progress: speed in the logged metrics, and periodic lines when nobody watches a progress bar."""
from __future__ import annotations

import lightning as L
import pytest

from distill.training.callbacks import ProgressLines
from distill.training.datamodule import ListsDataModule
from distill.training.module import DistillationModule, OptimizerConfig, StudentConfig
from factories import make_lists, make_tiny_bert


def test_progress_lines_and_speed_metrics(tmp_path, capsys):
    bert, lists = make_tiny_bert(tmp_path / "bert"), make_lists(tmp_path / "lists.jsonl", n_queries=16)
    module = DistillationModule(StudentConfig(name=str(bert)), teacher=None, optimizer=OptimizerConfig(lr=1e-3))
    data = ListsDataModule(str(lists), list_size=4, batch_size=4, dev_fraction=0.0)
    trainer = L.Trainer(default_root_dir=str(tmp_path), accelerator="cpu", devices=1, precision="32-true",
                        max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[ProgressLines(every_n_seconds=1e-6)])
    import psutil

    before_gb = psutil.Process().memory_info().rss / 2**30
    trainer.fit(module, datamodule=data)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(ProgressLines.PREFIX)]
    assert len(lines) == 5  # the start, then every step (the interval is tiny)
    fields = dict(part.split("=", 1) for part in lines[-1].split()[1:])
    assert fields["step"] == "4" and fields["total"] == "4"
    assert float(fields["lists_per_s"]) > 0 and float(fields["left"]) == 0
    assert float(fields["lists_per_s"]) == pytest.approx(4 * float(fields["steps_per_s"]), abs=0.01)  # printed to 2 and 3 decimals
    assert trainer.logged_metrics["perf/lists_per_s"] > 0
    # peak resident memory: at least what the process held before the fit
    assert before_gb <= float(fields["peak_rss_gb"]) + 0.01
    assert float(trainer.logged_metrics["perf/peak_rss_gb"]) > 0.05


def test_no_lines_when_disabled(tmp_path, capsys):
    bert, lists = make_tiny_bert(tmp_path / "bert"), make_lists(tmp_path / "lists.jsonl", n_queries=8)
    module = DistillationModule(StudentConfig(name=str(bert)), teacher=None)
    data = ListsDataModule(str(lists), list_size=4, batch_size=4, dev_fraction=0.0)
    L.Trainer(default_root_dir=str(tmp_path), accelerator="cpu", devices=1, precision="32-true", max_steps=2,
              logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              num_sanity_val_steps=0, callbacks=[ProgressLines(every_n_seconds=0)]).fit(module, datamodule=data)
    assert ProgressLines.PREFIX not in capsys.readouterr().out
    with pytest.raises(ValueError, match="every_n_seconds"):
        ProgressLines(every_n_seconds=-1)
